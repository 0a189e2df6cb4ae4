"""The immutable snapshot every node serves requests from, and how one is
made: from a file, or from a config the Hub published.

The config is read once (at start-up, or when the Hub publishes a new
version); the request path only ever sees a ``ConfigSnapshot``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from streams.config import Model, NexusConfig, Org, Project, Provider, VirtualKey
from streams.config_base import ConfigError
from streams.config_validation import parse_config, validate_config


class ConfigSnapshot:
    """One immutable, versioned view of the configuration with the indexes
    the request path needs.  Built once; never mutated."""

    __slots__ = (
        "_frozen",
        "_hmac_secret",
        "config",
        "keys_by_hash",
        "models",
        "orgs",
        "projects",
        "providers",
        "revision",
        "version",
    )

    def __init__(self, config: NexusConfig, hmac_secret: bytes, *, revision: int = 0) -> None:
        self.config = config
        self._hmac_secret = hmac_secret
        self.version = hashlib.sha256(msgspec.json.encode(config)).hexdigest()[:16]
        # The Hub's monotonic revision of this snapshot (0: read from a file).
        self.revision = revision
        self.orgs: dict[str, Org] = {o.id: o for o in config.orgs}
        self.projects: dict[str, Project] = {p.id: p for p in config.projects}
        self.providers: dict[str, Provider] = {p.name: p for p in config.providers}
        self.models: dict[str, Model] = {}
        for m in config.models:
            self.models[m.name] = m
            for alias in m.aliases:
                self.models[alias] = m
        self.keys_by_hash: dict[str, VirtualKey] = {k.hash: k for k in config.virtual_keys}
        for k in config.virtual_keys:
            # A rotated key's old hash finds the key too; the auth check
            # refuses it once its grace period is over.
            if k.previous_hash and k.previous_hash not in self.keys_by_hash:
                self.keys_by_hash[k.previous_hash] = k
        self._frozen = True

    @property
    def hmac_secret(self) -> bytes:
        return self._hmac_secret

    def __setattr__(self, name: str, value: Any) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError("ConfigSnapshot is immutable")
        object.__setattr__(self, name, value)


def resolve_secret(cfg: NexusConfig, env: Mapping[str, str] | None = None) -> bytes:
    env = os.environ if env is None else env
    value = env.get(cfg.auth.secret_env) or cfg.auth.secret
    if not value:
        raise ConfigError(
            f"auth: no HMAC secret; set the {cfg.auth.secret_env} environment variable "
            "(nexus keys secret prints a fresh one)"
        )
    if len(value) < 16:
        raise ConfigError("auth: the HMAC secret must be at least 16 characters")
    return value.encode()


def load_snapshot(path: str | Path, env: Mapping[str, str] | None = None) -> ConfigSnapshot:
    p = Path(path)
    try:
        text = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    cfg = parse_config(text, source=str(p))
    return ConfigSnapshot(cfg, resolve_secret(cfg, env))


def snapshot_from_config(cfg: NexusConfig, secret: bytes, *, revision: int = 0) -> ConfigSnapshot:
    validate_config(cfg)
    return ConfigSnapshot(cfg, secret, revision=revision)
