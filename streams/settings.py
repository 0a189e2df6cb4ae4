"""The process settings every Nexus command reads, in one typed layer:
defaults < settings file < environment < command-line flags.

The declarative config (``streams.config``: the YAML file, or what the Hub
publishes) says what Nexus does; these settings say where this process
finds its services and files (NATS, Valkey, Postgres, the data directory)
and how it runs.  Each setting is the ``NEXUS_<NAME>`` environment variable
of its field (``nats_url`` is ``NEXUS_NATS_URL``); the settings file
(``NEXUS_SETTINGS``) is YAML with the field names as keys.  Every variable
is read here and nowhere else; ``docs/configuration.md`` lists them, and a
test keeps that table and the code equal.

Secrets (the credentials a URL or DSN carries) never appear in what this
module returns for display: ``repr``, :func:`describe` and the errors mask
them.  The config file names further secret variables of its own (the key
HMAC secret, admin tokens, provider and sink credentials), read where they
are used; the table lists the default names.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec
import msgspec.yaml

from streams.config_base import ConfigError, Strict

PREFIX = "NEXUS_"
FILE_VARIABLE = "NEXUS_SETTINGS"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FRONT_ENDS = ("aiohttp", "http1")
UPSTREAM_CLIENTS = ("aiohttp", "lean")
_STREAM_PREFIX = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_VALKEY_PREFIX = re.compile(r"^[A-Za-z0-9_:.-]{0,64}$")


class Settings(Strict, frozen=True, kw_only=True):
    # The config file of a command that takes one (the processors).
    config: str = ""
    # Where `nexus up` keeps its data (NATS, Postgres, DuckDB, the outbox).
    home: str = "~/.nexus"
    # Where a gateway or proxy keeps its event outbox ("" = home).
    data_dir: str = ""
    # "" = nats://127.0.0.1:4222; `nexus up` starts an embedded NATS instead.
    nats_url: str = ""
    stream_prefix: str = "NEXUS"
    # "" = none: the gateway runs without quotas' and caches' store
    # (`nexus up` starts an embedded one; the quota processor assumes
    # redis://127.0.0.1:6379/0).
    valkey_url: str = ""
    valkey_prefix: str = "nexus:"
    # "" = none (`nexus up` starts an embedded Postgres).
    postgres_dsn: str = ""
    # "" = the config's projections.duckdb_path, else ~/.nexus/analytics.duckdb.
    duckdb_path: str = ""
    # 0 = one gateway process per core available.
    gateway_workers: int = 0
    # The HTTP layer of the gateway's /v1 API: "http1" (the lean asyncio +
    # llhttp layer, ingress/http1/protocol.py; issue 17), or "aiohttp".
    gateway_http: str = "http1"
    # The client of the gateway's provider calls: "lean" (asyncio + llhttp,
    # ingress/upstream/lean.py; issue 17), or "aiohttp".
    upstream_http: str = "lean"
    log_level: str = "INFO"
    # The Hub (`nexus hub run`): where its admin API listens, and the first
    # admin it creates when it has no user.
    hub_host: str = "127.0.0.1"
    hub_port: int = 3060
    admin_email: str = "admin@nexus.local"
    # The Hub the admin clients (`nexus admin`, `nexus hub import/export`)
    # talk to, and their bearer token ("" = the `nexus admin login` session).
    hub_url: str = ""
    hub_token: str = ""

    @property
    def nats(self) -> str:
        """The NATS server to use (the default when none is set)."""
        return self.nats_url or DEFAULT_NATS_URL

    @property
    def home_path(self) -> Path:
        return Path(self.home).expanduser()

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser() if self.data_dir else self.home_path

    def effective(self, field: str) -> Any:
        """A field's value with the defaults it derives applied."""
        if field == "nats_url":
            return self.nats
        if field == "data_dir":
            return str(self.data_path)
        if field == "home":
            return str(self.home_path)
        return getattr(self, field)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={display(name, getattr(self, name))!r}" for name in FIELDS)
        return f"Settings({fields})"


FIELDS: tuple[str, ...] = Settings.__struct_fields__
# Values that can carry a credential (user:password@ in a URL, password= in
# a DSN): shown masked.  Tokens are credentials whole: never shown.
SECRET_FIELDS = frozenset({"nats_url", "valkey_url", "postgres_dsn", "hub_url"})
TOKEN_FIELDS = frozenset({"hub_token"})


def variable(field: str) -> str:
    return PREFIX + field.upper()


_CREDENTIAL_PARAM = re.compile(r"(?i)\b(password|passwd|pass|token|secret|key)=([^&\s]*)")


def mask(value: str) -> str:
    """A URL or DSN with its credentials replaced by ``***``: the user
    information of a URL (a user name can be a token) and any
    ``password=`` / ``token=`` parameter."""
    out = value
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = None
    if parts is not None and parts.scheme and "@" in parts.netloc:
        host = parts.netloc.rpartition("@")[2]
        out = urlunsplit(parts._replace(netloc=f"***@{host}"))
    return _CREDENTIAL_PARAM.sub(lambda m: f"{m.group(1)}=***", out)


def display(field: str, value: Any) -> Any:
    if field in TOKEN_FIELDS:
        return "***" if value else ""
    return mask(value) if field in SECRET_FIELDS and isinstance(value, str) else value


def _from_file(path: str) -> dict[str, Any]:
    p = Path(path).expanduser()
    try:
        text = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{FILE_VARIABLE}: cannot read {str(p)!r}: {exc.strerror}") from None
    try:
        raw = msgspec.yaml.decode(text)
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: a mapping of settings (nats_url: ..., stream_prefix: ...)")
    for key in raw:
        if key not in FIELDS:
            raise ConfigError(f"{p}: unknown setting {key!r} (known: {', '.join(FIELDS)})")
    return dict(raw)


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    # An empty variable counts as unset, as a shell's `export X=` usually means.
    return {f: env[variable(f)] for f in FIELDS if env.get(variable(f))}


def _from_flags(flags: Mapping[str, Any]) -> dict[str, Any]:
    for key in flags:
        if key not in FIELDS:
            raise ValueError(f"not a setting: {key!r}")  # a programming error, not the user's
    return {k: v for k, v in flags.items() if v is not None}


def layers(
    flags: Mapping[str, Any] | None = None, *, env: Mapping[str, str] | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """Each layer's values, lowest first: (source, {field: value})."""
    env = os.environ if env is None else env
    out: list[tuple[str, dict[str, Any]]] = []
    path = env.get(FILE_VARIABLE)
    if path:
        out.append((f"file {path}", _from_file(path)))
    out.append(("environment", _from_env(env)))
    out.append(("flag", _from_flags(flags or {})))
    return out


def _convert(field: str, value: Any, source: str) -> Any:
    kind = Settings.__annotations__[field]
    try:
        return msgspec.convert(value, type=int if kind == "int" else str, strict=False)
    except msgspec.ValidationError as exc:
        where = variable(field) if source == "environment" else field
        raise ConfigError(f"{where} ({source}): {str(exc).split(' - at ')[0]}") from None


def _check(s: Settings) -> None:
    if not _STREAM_PREFIX.match(s.stream_prefix):
        raise ConfigError("NEXUS_STREAM_PREFIX: letters, digits, '_' and '-' only (at most 32)")
    if not _VALKEY_PREFIX.match(s.valkey_prefix):
        raise ConfigError("NEXUS_VALKEY_PREFIX: letters, digits and _ : . - only (at most 64)")
    if s.gateway_workers < 0:
        raise ConfigError("NEXUS_GATEWAY_WORKERS: 0 (one per core) or more")
    if s.gateway_http not in FRONT_ENDS:
        raise ConfigError(f"NEXUS_GATEWAY_HTTP: one of {', '.join(FRONT_ENDS)}")
    if s.upstream_http not in UPSTREAM_CLIENTS:
        raise ConfigError(f"NEXUS_UPSTREAM_HTTP: one of {', '.join(UPSTREAM_CLIENTS)}")
    if s.log_level.upper() not in LOG_LEVELS:
        raise ConfigError(f"NEXUS_LOG_LEVEL: one of {', '.join(LOG_LEVELS)}")


def load_settings(
    flags: Mapping[str, Any] | None = None, *, env: Mapping[str, str] | None = None
) -> Settings:
    """The settings of this process: defaults, then the file ``NEXUS_SETTINGS``
    names, then the environment, then ``flags`` (field -> value; None means
    the flag was not given).  Raises ConfigError naming the variable."""
    merged: dict[str, Any] = {}
    for source, values in layers(flags, env=env):
        for field, value in values.items():
            merged[field] = _convert(field, value, source)
    merged["log_level"] = str(merged.get("log_level", "INFO")).upper()
    settings = Settings(**merged)
    _check(settings)
    return settings


def describe(
    flags: Mapping[str, Any] | None = None, *, env: Mapping[str, str] | None = None
) -> list[tuple[str, str, str]]:
    """(variable, value, where it came from) per setting, secrets masked:
    what `nexus settings` prints."""
    settings = load_settings(flags, env=env)
    sources = dict.fromkeys(FIELDS, "default")
    for source, values in layers(flags, env=env):
        for field in values:
            sources[field] = source
    return [(variable(f), str(display(f, getattr(settings, f))), sources[f]) for f in FIELDS]


def from_flags(args: argparse.Namespace, **attrs: str) -> Settings:
    """The settings with a command's flags as the top layer: ``attrs`` maps
    an attribute of ``args`` (a flag whose default is None) to its setting,
    and each attribute is then set to the value in effect (``effective``:
    for ``nats_url`` the server to use, default applied), so the command
    reads its flags as before.  Raises ConfigError naming the variable."""
    settings = load_settings({field: getattr(args, attr, None) for attr, field in attrs.items()})
    for attr, field in attrs.items():
        setattr(args, attr, settings.effective(field))
    return settings
