"""The declarative configuration, strictly validated, and the immutable
snapshot every node serves requests from.

The file is read once (at start-up, or when the hub publishes a new
version); the request path only ever sees a ``ConfigSnapshot``.  Unknown keys
are errors everywhere in the file: a typo must never silently disable a
control.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import re
import socket
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec
import msgspec.yaml

from streams.config_cache import CacheConfig, CacheConfigError, validate_cache
from streams.config_hooks import HooksConfig, validate_hooks
from streams.config_quota import QuotaConfig, validate_quotas
from streams.config_routing import RoutingConfig, RoutingConfigError, validate_routing
from streams.config_siem import AuditConfig, SiemConfig, validate_audit, validate_siem


class ConfigError(ValueError):
    """A configuration problem, with the path of the offending field."""


class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class Price(_Strict, kw_only=True, frozen=True):
    """USD per million tokens.  ``cached_input`` / ``cache_write`` /
    ``reasoning`` default to the input / input / output price when absent."""

    input: float = 0.0
    output: float = 0.0
    cached_input: float | None = None
    cache_write: float | None = None
    reasoning: float | None = None


class Org(_Strict, kw_only=True, frozen=True):
    id: str
    name: str = ""
    timezone: str = "UTC"
    parent: str | None = None
    # Labels routing conditions can test (``metadata.<name>``); a project's
    # override its org's, a key's override both.
    metadata: Mapping[str, str | int | float | bool] = {}


class Project(_Strict, kw_only=True, frozen=True):
    id: str
    org: str
    name: str = ""
    metadata: Mapping[str, str | int | float | bool] = {}


KeyStatus = Literal["active", "pending", "expired", "rejected", "revoked"]


class VirtualKey(_Strict, kw_only=True, frozen=True):
    id: str
    # hex HMAC-SHA256 of the full key under the auth secret; the key itself
    # is never stored.  ``nexus keys new`` prints a key and its hash.
    hash: str
    org: str
    project: str
    prefix: str = ""  # first 12 characters, for operators to recognise a key
    # Public model names this key may call; "*" allows every model.
    allowed_models: tuple[str, ...] = ("*",)
    expires_at: dt.datetime | None = None
    status: KeyStatus = "active"
    user: str = ""
    description: str = ""
    metadata: Mapping[str, str | int | float | bool] = {}


class PooledCredential(_Strict, kw_only=True, frozen=True):
    """One credential of a provider's pool: ``id`` names it in events and
    metrics (never the secret, which comes from the environment)."""

    id: str
    env: str
    weight: float = 1.0


class Provider(_Strict, kw_only=True, frozen=True):
    name: str
    kind: str = "openai"  # the codec: openai, anthropic, gemini, ...
    base_url: str
    # The credential comes from the environment, never from the file.
    api_key_env: str | None = None
    # Or a weighted pool of them: requests spread by weight; one the provider
    # refuses (401/403) or rate limits (429) sits out ``credential_cooldown_s``
    # (a longer Retry-After wins) while the next one is tried.
    credentials: tuple[PooledCredential, ...] = ()
    credential_cooldown_s: float = 30.0
    headers: Mapping[str, str] = {}
    # SSRF guard: private, loopback and link-local targets are refused unless
    # the operator says so here (the built-in simulated provider needs it).
    allow_private_network: bool = False
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 300.0  # the longest silence between two reads
    # A stream whose first token has not arrived this long after the request
    # was sent is abandoned as a timeout (and failed over: nothing reached the
    # caller yet); once it has spoken only the total bounds it.  None: off.
    ttft_timeout_s: float | None = None
    # One attempt, request sent -> last byte (None: gateway.request_timeout_s).
    total_timeout_s: float | None = None
    max_connections: int = 256
    options: Mapping[str, Any] = {}


class Model(_Strict, kw_only=True, frozen=True):
    name: str
    provider: str
    provider_model: str = ""
    price: Price | None = None
    kind: Literal["chat", "embedding"] = "chat"
    aliases: tuple[str, ...] = ()
    context_window: int = 0
    max_output_tokens: int = 0


class Auth(_Strict, kw_only=True, frozen=True):
    # The HMAC secret for virtual-key hashes: read from this environment
    # variable; ``secret`` (a literal) exists only for the shipped demo.
    secret_env: str = "NEXUS_KEY_HMAC_SECRET"  # noqa: S105 - a variable name, not a secret
    secret: str | None = None
    admin_token_env: str = "NEXUS_ADMIN_TOKEN"  # noqa: S105 - a variable name


class Gateway(_Strict, kw_only=True, frozen=True):
    host: str = "127.0.0.1"
    port: int = 3050
    max_body_bytes: int = 8 * 1024 * 1024
    # In-flight admission gate: beyond this many requests in progress the
    # gateway sheds load with 429 + Retry-After instead of queueing.  Size it
    # near capacity x acceptable latency (about 1,000 req/s x 250 ms per core
    # here): a larger gate only queues, which is what it exists to prevent.
    max_inflight: int = 256
    # Event-loop lag gate: a probe timer fires every loop_probe_interval_ms;
    # while it fires later than shed_loop_lag_ms twice running (a standing
    # queue, not one pause) new requests get 429 + Retry-After at once, so
    # admitted ones keep a bounded latency at any offered rate.  Well above
    # what a loop that keeps up shows (a few ms; at 50 ms a busy shared
    # machine shed a few streams at 80 % of peak); 0 turns the gate off.
    shed_loop_lag_ms: float = 100.0
    loop_probe_interval_ms: float = 10.0
    request_timeout_s: float = 600.0
    node_id: str = ""


class ProjectionsConfig(_Strict, kw_only=True, frozen=True):
    # The DuckDB file for analysts ("" = ~/.nexus/analytics.duckdb).  The
    # Postgres DSN carries a password, so it comes from NEXUS_POSTGRES_DSN only.
    duckdb_path: str = ""
    batch_size: int = 20_000  # see projections.settings


class NexusConfig(_Strict, kw_only=True, frozen=True):
    version: int = 1
    auth: Auth = Auth()
    gateway: Gateway = Gateway()
    orgs: tuple[Org, ...] = ()
    projects: tuple[Project, ...] = ()
    virtual_keys: tuple[VirtualKey, ...] = ()
    providers: tuple[Provider, ...] = ()
    models: tuple[Model, ...] = ()
    audit: AuditConfig = AuditConfig()
    siem: SiemConfig = SiemConfig()
    hooks: HooksConfig = HooksConfig()
    quotas: QuotaConfig = QuotaConfig()
    routing: RoutingConfig = RoutingConfig()
    cache: CacheConfig = CacheConfig()
    projections: ProjectionsConfig = ProjectionsConfig()


# --- the snapshot ----------------------------------------------------------


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
        "version",
    )

    def __init__(self, config: NexusConfig, hmac_secret: bytes) -> None:
        self.config = config
        self._hmac_secret = hmac_secret
        self.version = hashlib.sha256(msgspec.json.encode(config)).hexdigest()[:16]
        self.orgs: dict[str, Org] = {o.id: o for o in config.orgs}
        self.projects: dict[str, Project] = {p.id: p for p in config.projects}
        self.providers: dict[str, Provider] = {p.name: p for p in config.providers}
        self.models: dict[str, Model] = {}
        for m in config.models:
            self.models[m.name] = m
            for alias in m.aliases:
                self.models[alias] = m
        self.keys_by_hash: dict[str, VirtualKey] = {k.hash: k for k in config.virtual_keys}
        self._frozen = True

    @property
    def hmac_secret(self) -> bytes:
        return self._hmac_secret

    def __setattr__(self, name: str, value: Any) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError("ConfigSnapshot is immutable")
        object.__setattr__(self, name, value)


# --- loading and validation -----------------------------------------------

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _check_id(value: str, where: str) -> None:
    if not _ID.match(value):
        raise ConfigError(f"{where}: {value!r} is not a valid id (letters, digits, . _ : -)")


def check_outbound_url(url: str, *, allow_private: bool, where: str, resolve: bool = False) -> None:
    """SSRF guard for every URL an operator configures: http(s) only, and no
    private, loopback, link-local or otherwise internal target unless allowed.
    With ``resolve`` the host name is resolved and every address checked."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"{where}: {url!r} must be an http or https URL")
    host = parts.hostname
    if not host:
        raise ConfigError(f"{where}: {url!r} has no host")
    if parts.username or parts.password:
        raise ConfigError(f"{where}: credentials in the URL are not allowed; use api_key_env")
    if allow_private:
        return
    addresses: list[str] = []
    try:
        ipaddress.ip_address(host)
        addresses = [host]
    except ValueError:
        if host == "localhost" or host.endswith(".localhost") or host.endswith(".internal"):
            raise ConfigError(
                f"{where}: {url!r} points at an internal host; set allow_private_network: true "
                "if that is intended"
            ) from None
        if resolve:
            try:
                addresses = [str(i[4][0]) for i in socket.getaddrinfo(host, None)]
            except OSError:
                addresses = []
    for addr in addresses:
        ip = ipaddress.ip_address(addr)
        if not ip.is_global or ip.is_multicast:
            raise ConfigError(
                f"{where}: {url!r} resolves to a non-public address ({ip}); set "
                "allow_private_network: true if that is intended"
            )


def _check_pool(pr: Provider, where: str) -> None:
    if not pr.credentials:
        return
    if pr.api_key_env:
        raise ConfigError(f"{where}: api_key_env or credentials, not both")
    if pr.kind == "vertex":
        raise ConfigError(f"{where}.credentials: a Vertex provider mints its own tokens (api_key_env)")
    ids = [c.id for c in pr.credentials]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{where}.credentials: duplicate credential id")
    for j, c in enumerate(pr.credentials):
        _check_id(c.id, f"{where}.credentials[{j}].id")
        if not c.weight > 0:
            raise ConfigError(f"{where}.credentials[{j}].weight: must be positive")
    if pr.credential_cooldown_s <= 0:
        raise ConfigError(f"{where}.credential_cooldown_s: must be positive")


def _validate(cfg: NexusConfig) -> None:
    seen: set[str] = set()
    for i, o in enumerate(cfg.orgs):
        _check_id(o.id, f"orgs[{i}].id")
        if o.id in seen:
            raise ConfigError(f"orgs[{i}].id: duplicate org {o.id!r}")
        seen.add(o.id)
        try:
            zoneinfo.ZoneInfo(o.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"orgs[{i}].timezone: unknown time zone {o.timezone!r}") from None
    orgs = {o.id for o in cfg.orgs}
    for i, o in enumerate(cfg.orgs):
        if o.parent is not None and o.parent not in orgs:
            raise ConfigError(f"orgs[{i}].parent: unknown org {o.parent!r}")
    projects: dict[str, str] = {}
    for i, p in enumerate(cfg.projects):
        _check_id(p.id, f"projects[{i}].id")
        if p.org not in orgs:
            raise ConfigError(f"projects[{i}].org: unknown org {p.org!r}")
        if p.id in projects:
            raise ConfigError(f"projects[{i}].id: duplicate project {p.id!r}")
        projects[p.id] = p.org
    providers: set[str] = set()
    for i, pr in enumerate(cfg.providers):
        _check_id(pr.name, f"providers[{i}].name")
        if pr.name in providers:
            raise ConfigError(f"providers[{i}].name: duplicate provider {pr.name!r}")
        providers.add(pr.name)
        check_outbound_url(
            pr.base_url, allow_private=pr.allow_private_network, where=f"providers[{i}].base_url"
        )
        optional = (pr.ttft_timeout_s, pr.total_timeout_s)
        if (
            pr.connect_timeout_s <= 0
            or pr.read_timeout_s <= 0
            or any(t is not None and t <= 0 for t in optional)
        ):
            raise ConfigError(f"providers[{i}]: timeouts must be positive")
        _check_pool(pr, f"providers[{i}]")
    names: set[str] = set()
    for i, m in enumerate(cfg.models):
        if m.provider not in providers:
            raise ConfigError(f"models[{i}].provider: unknown provider {m.provider!r}")
        for n in (m.name, *m.aliases):
            if n in names:
                raise ConfigError(f"models[{i}].name: duplicate model name {n!r}")
            names.add(n)
        if m.price is not None:
            for field in ("input", "output", "cached_input", "cache_write", "reasoning"):
                value = getattr(m.price, field)
                if value is not None and value < 0:
                    raise ConfigError(f"models[{i}].price.{field}: must not be negative")
    key_ids: set[str] = set()
    for i, k in enumerate(cfg.virtual_keys):
        _check_id(k.id, f"virtual_keys[{i}].id")
        if k.id in key_ids:
            raise ConfigError(f"virtual_keys[{i}].id: duplicate key id {k.id!r}")
        key_ids.add(k.id)
        if not _HEX64.match(k.hash):
            raise ConfigError(f"virtual_keys[{i}].hash: must be 64 lowercase hex chars (HMAC-SHA256)")
        if k.org not in orgs:
            raise ConfigError(f"virtual_keys[{i}].org: unknown org {k.org!r}")
        if k.project not in projects:
            raise ConfigError(f"virtual_keys[{i}].project: unknown project {k.project!r}")
        if projects[k.project] != k.org:
            raise ConfigError(f"virtual_keys[{i}].project: {k.project!r} does not belong to org {k.org!r}")
        for name in k.allowed_models:
            if name != "*" and name not in names:
                raise ConfigError(f"virtual_keys[{i}].allowed_models: unknown model {name!r}")
    if not 0 < cfg.gateway.port < 65536:
        raise ConfigError("gateway.port: must be 1-65535")
    validate_audit(cfg.audit)
    validate_siem(cfg.siem, known_orgs=orgs)
    validate_hooks(cfg.hooks, orgs=orgs, projects=projects, keys=key_ids)
    validate_quotas(cfg)
    try:
        validate_routing(cfg)
    except RoutingConfigError as exc:
        raise ConfigError(str(exc)) from None
    try:
        validate_cache(cfg)
    except CacheConfigError as exc:
        raise ConfigError(str(exc)) from None


def _format_msgspec_error(exc: msgspec.ValidationError) -> str:
    # msgspec says e.g. "Object contains unknown field `x` - at `$.gateway`"
    return str(exc).replace("$.", "").replace("$", "<root>")


def parse_config(text: str | bytes, *, source: str = "<config>") -> NexusConfig:
    try:
        cfg = msgspec.yaml.decode(text, type=NexusConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_format_msgspec_error(exc)}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    try:
        _validate(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return cfg


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


def snapshot_from_config(cfg: NexusConfig, secret: bytes) -> ConfigSnapshot:
    _validate(cfg)
    return ConfigSnapshot(cfg, secret)
