"""Does an e-mail address end in a registrable domain?  presidio's email
validator asks ``tldextract.extract(text).fqdn != ""``; this answers the same
question from the same data (the public suffix list snapshot bundled in the
tldextract wheel, ICANN section: tldextract's default excludes private
domains) without importing tldextract, which brings ``requests`` and keeps
two suffix tries: ~11 MB resident, against ~1 MB here.

The walk is tldextract's ``suffix_index``: labels from the right, each
lower-cased (punycode decoded), following the rules' paths; a wildcard rule
takes one more label unless an exception rule names it.
tests/hooks/test_predefined.py checks it against tldextract on every rule.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import re
import threading
from pathlib import Path

_SEPARATOR = "// ===BEGIN PRIVATE DOMAINS==="
_RULE = re.compile(r"^(?P<suffix>[.*!]*\w[\S]*)", re.UNICODE | re.MULTILINE)  # tldextract's
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.")

_lock = threading.Lock()
_paths: dict[str, bool] | None = None  # "co.uk" -> is a rule (else only on a rule's path)


def _snapshot() -> str:
    spec = importlib.util.find_spec("tldextract")  # locates the wheel without importing it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the tldextract package (its public suffix list snapshot) is not installed")
    return (Path(next(iter(spec.submodule_search_locations))) / ".tld_set_snapshot").read_text("utf-8")


def _load() -> dict[str, bool]:
    global _paths
    with _lock:
        if _paths is None:
            public = _snapshot().partition(_SEPARATOR)[0]
            paths: dict[str, bool] = {}
            for m in _RULE.finditer(public):
                labels = m.group("suffix").split(".")
                for i in range(len(labels) - 1, 0, -1):
                    paths.setdefault(".".join(labels[i:]), False)
                paths[m.group("suffix")] = True
            _paths = paths
        return _paths


def _decode(label: str) -> str:
    lowered = label.lower()
    if lowered.startswith("xn--"):
        import idna

        try:
            return str(idna.decode(lowered))
        except (UnicodeError, IndexError):
            pass
    return lowered


def _netloc(text: str) -> str:
    """tldextract's ``lenient_netloc``."""
    start = text.find("//")
    if start == 0:
        text = text[2:]
    elif start >= 2 and text[start - 1] == ":" and not set(text[: start - 1]) - _SCHEME_CHARS:
        text = text[start + 2 :]
    after_userinfo = text.partition("/")[0].partition("?")[0].partition("#")[0].rpartition("@")[-1]
    if after_userinfo and after_userinfo[0] == "[":
        maybe_ipv6 = after_userinfo.partition("]")
        if maybe_ipv6[1] == "]":
            return f"{maybe_ipv6[0]}]"
    return after_userinfo.partition(":")[0].strip().rstrip(".\u3002\uff0e\uff61")


def _suffix_index(labels: list[str]) -> int | None:
    paths = _load()
    path = ""
    suffix_idx = label_idx = len(labels)
    for label in reversed(labels):
        decoded = _decode(label)
        candidate = f"{decoded}.{path}" if path else decoded
        if candidate in paths:
            label_idx -= 1
            path = candidate
            if paths[candidate]:
                suffix_idx = label_idx
            continue
        if (f"*.{path}" if path else "*") in paths:
            exception = f"!{decoded}.{path}" if path else f"!{decoded}"
            return label_idx if exception in paths else label_idx - 1
        break
    return None if suffix_idx == len(labels) else suffix_idx


def has_fqdn(text: str) -> bool:
    """``tldextract.extract(text).fqdn != ""`` (private domains excluded)."""
    netloc = _netloc(text).replace("\u3002", ".").replace("\uff0e", ".").replace("\uff61", ".")
    if len(netloc) >= 4 and netloc[0] == "[" and netloc[-1] == "]":
        try:
            ipaddress.IPv6Address(netloc[1:-1])
        except ValueError:
            pass
        else:
            return False  # an IPv6 literal: no suffix
    labels = netloc.split(".")
    idx = _suffix_index(labels)
    if idx is None:
        return False  # no suffix (an IPv4 address included)
    suffix = ".".join(labels[idx:])
    domain = labels[idx - 1] if idx > 0 else ""
    return bool(suffix and domain)
