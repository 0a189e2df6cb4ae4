"""The declarative configuration: the schema of the file, and of what the
Hub publishes to the nodes (the contract between them).

Its sections are the ``config_*`` modules next to this one; the whole file
is validated by ``streams.config_validation`` and served from an immutable
``streams.config_snapshot.ConfigSnapshot``.  Unknown keys are errors
everywhere in the file: a typo must never silently disable a control.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Literal

from streams.config_alerts import AlertsConfig
from streams.config_base import Strict
from streams.config_cache import CacheConfig
from streams.config_hooks import HooksConfig
from streams.config_hub import HubSection
from streams.config_proxy import ProxyConfig
from streams.config_quota import QuotaConfig
from streams.config_routing import RoutingConfig
from streams.config_siem import AuditConfig, SiemConfig
from streams.config_vault import VaultSection


class Price(Strict, kw_only=True, frozen=True):
    """USD per million tokens.  ``cached_input`` / ``cache_write`` /
    ``reasoning`` default to the input / input / output price when absent."""

    input: float = 0.0
    output: float = 0.0
    cached_input: float | None = None
    cache_write: float | None = None
    reasoning: float | None = None


class Org(Strict, kw_only=True, frozen=True):
    id: str
    name: str = ""
    timezone: str = "UTC"
    parent: str | None = None
    # Labels routing conditions can test (``metadata.<name>``); a project's
    # override its org's, a key's override both.
    metadata: Mapping[str, str | int | float | bool] = {}


class Project(Strict, kw_only=True, frozen=True):
    id: str
    org: str
    name: str = ""
    metadata: Mapping[str, str | int | float | bool] = {}


KeyStatus = Literal["active", "pending", "expired", "rejected", "revoked"]


class VirtualKey(Strict, kw_only=True, frozen=True):
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
    # A rotated key: the old key's hash keeps working until this moment (the
    # grace period in which callers move to the new key), then never again.
    previous_hash: str = ""
    previous_hash_expires_at: dt.datetime | None = None


class PooledCredential(Strict, kw_only=True, frozen=True):
    """One credential of a provider's pool: ``id`` names it in events and
    metrics (never the secret, which comes from the environment variable
    ``env`` or from the vault credential ``credential``: one of the two)."""

    id: str
    env: str = ""
    credential: str = ""
    weight: float = 1.0


class Provider(Strict, kw_only=True, frozen=True):
    name: str
    kind: str = "openai"  # the codec: openai, anthropic, gemini, ...
    base_url: str
    # The credential comes from the environment, never from the file...
    api_key_env: str | None = None
    # ...or from the vault: the id of a sealed credential (``vault:``) that
    # nodes open in memory when they load the snapshot.
    credential: str = ""
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


class Model(Strict, kw_only=True, frozen=True):
    name: str
    provider: str
    provider_model: str = ""
    price: Price | None = None
    kind: Literal["chat", "embedding"] = "chat"
    aliases: tuple[str, ...] = ()
    context_window: int = 0
    max_output_tokens: int = 0


class Auth(Strict, kw_only=True, frozen=True):
    # The HMAC secret for virtual-key hashes: read from this environment
    # variable; ``secret`` (a literal) exists only for the shipped demo.
    secret_env: str = "NEXUS_KEY_HMAC_SECRET"  # noqa: S105 - a variable name, not a secret
    secret: str | None = None
    admin_token_env: str = "NEXUS_ADMIN_TOKEN"  # noqa: S105 - a variable name


class Gateway(Strict, kw_only=True, frozen=True):
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
    # A connection's request line and headers must all arrive within this
    # many seconds of its first byte (slowloris); 0 turns the limit off.
    header_timeout_s: float = 10.0
    node_id: str = ""


class ProjectionsConfig(Strict, kw_only=True, frozen=True):
    # The DuckDB file for analysts ("" = ~/.nexus/analytics.duckdb).  The
    # Postgres DSN carries a password, so it comes from NEXUS_POSTGRES_DSN only.
    duckdb_path: str = ""
    batch_size: int = 20_000  # see projections.settings


class NexusConfig(Strict, kw_only=True, frozen=True):
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
    proxy: ProxyConfig = ProxyConfig()
    # Rules on events and the channels they notify (processors.alerts).
    alerts: AlertsConfig = AlertsConfig()
    # Sealed provider credentials and the key versions that wrap their data
    # keys (filled by the Hub; a file-only node uses environment variables).
    vault: VaultSection = VaultSection()
    # What the Hub alone holds (users, groups, policies, key lifecycle):
    # written by `nexus hub export`, read by `nexus hub import`, ignored by
    # nodes (a snapshot from the Hub has it empty).
    hub: HubSection = HubSection()
