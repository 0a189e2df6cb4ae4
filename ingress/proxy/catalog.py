"""The AI-domain catalogue (``ai_hosts.yaml``): which hosts belong to which
AI service, for shadow-AI discovery.  Every CONNECT is looked up here,
bumped or not."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources

import msgspec
import msgspec.yaml


class _File(msgspec.Struct, forbid_unknown_fields=True):
    services: dict[str, str]


def shipped() -> dict[str, str]:
    raw = resources.files("ingress.proxy").joinpath("ai_hosts.yaml").read_bytes()
    return msgspec.yaml.decode(raw, type=_File).services


class AiCatalogue:
    """Exact hosts, ``.domain`` entries matching the domain and every
    subdomain (the longest suffix wins), and ``*-name.domain`` entries
    matching a first label ending in ``-name`` directly under the domain
    (Vertex AI's regional hosts: ``us-central1-aiplatform.googleapis.com``)."""

    def __init__(self, extra: Mapping[str, str] | None = None) -> None:
        entries = {**shipped(), **(extra or {})}
        self._exact: dict[str, str] = {}
        self._suffix: dict[str, str] = {}
        self._dashed: dict[tuple[str, str], str] = {}  # (-name, domain) -> service
        for host, service in entries.items():
            h = host.lower().rstrip(".")
            if h.startswith("."):
                self._suffix[h[1:]] = service
            elif h.startswith("*-") and "." in h:
                label, _, domain = h[1:].partition(".")
                self._dashed[(label, domain)] = service
            else:
                self._exact[h] = service

    def __len__(self) -> int:
        return len(self._exact) + len(self._suffix) + len(self._dashed)

    def service(self, host: str) -> str:
        """The service ``host`` belongs to, or "" when it is not an AI host."""
        h = host.lower().rstrip(".")
        found = self._exact.get(h)
        if found is not None:
            return found
        labels = h.split(".")
        if self._dashed and "-" in labels[0]:
            dashed = self._dashed.get(("-" + labels[0].rpartition("-")[2], ".".join(labels[1:])))
            if dashed is not None:
                return dashed
        for i in range(len(labels)):
            found = self._suffix.get(".".join(labels[i:]))
            if found is not None:
                return found
        return ""
