"""Every cross-field rule of the configuration, and the file's parser.

What a node checks when it loads a config, and what the Hub checks before it
accepts a change and publishes a snapshot: pure checks, no I/O, the same on
both sides.  Each rule raises ConfigError naming the field at fault
(``providers[2].base_url: ...``).
"""

from __future__ import annotations

import re

import msgspec
import msgspec.yaml

from streams.config import NexusConfig, Provider
from streams.config_alerts import validate_alerts
from streams.config_base import ConfigError
from streams.config_cache import validate_cache
from streams.config_checks import check_id, check_outbound_url, check_time_zone
from streams.config_hooks_validation import validate_hooks
from streams.config_proxy import validate_proxy
from streams.config_quota import validate_quotas
from streams.config_routing import validate_routing
from streams.config_siem import validate_audit, validate_siem
from streams.config_vault import validate_vault

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _check_vault_refs(pr: Provider, where: str, sealed: dict[str, str]) -> None:
    """A provider's references to sealed credentials: each exists and was
    sealed for this provider (its ciphertext would not open for another)."""
    if pr.credential and pr.api_key_env:
        raise ConfigError(f"{where}.credential: api_key_env or credential, not both")
    refs = [(f"{where}.credential", pr.credential)] if pr.credential else []
    refs += [
        (f"{where}.credentials[{j}].credential", c.credential)
        for j, c in enumerate(pr.credentials)
        if c.credential
    ]
    for field, ref in refs:
        owner = sealed.get(ref)
        if owner is None:
            raise ConfigError(f"{field}: unknown vault credential {ref!r}")
        if owner != pr.name:
            raise ConfigError(f"{field}: vault credential {ref!r} was sealed for provider {owner!r}")


def _check_pool(pr: Provider, where: str) -> None:
    if not pr.credentials:
        return
    if pr.api_key_env or pr.credential:
        raise ConfigError(f"{where}: api_key_env (or credential) or credentials, not both")
    if pr.kind == "vertex":
        raise ConfigError(f"{where}.credentials: a Vertex provider mints its own tokens (api_key_env)")
    ids = [c.id for c in pr.credentials]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{where}.credentials: duplicate credential id")
    for j, c in enumerate(pr.credentials):
        check_id(c.id, f"{where}.credentials[{j}].id")
        if bool(c.env) == bool(c.credential):
            raise ConfigError(
                f"{where}.credentials[{j}]: give env or credential (a vault credential), one of them"
            )
        if not c.weight > 0:
            raise ConfigError(f"{where}.credentials[{j}].weight: must be positive")
    if pr.credential_cooldown_s <= 0:
        raise ConfigError(f"{where}.credential_cooldown_s: must be positive")


def validate_config(cfg: NexusConfig) -> None:
    """Raise ConfigError naming the first bad field of the whole config."""
    seen: set[str] = set()
    for i, o in enumerate(cfg.orgs):
        check_id(o.id, f"orgs[{i}].id")
        if o.id in seen:
            raise ConfigError(f"orgs[{i}].id: duplicate org {o.id!r}")
        seen.add(o.id)
        check_time_zone(o.timezone, f"orgs[{i}].timezone")
    orgs = {o.id for o in cfg.orgs}
    for i, o in enumerate(cfg.orgs):
        if o.parent is not None and o.parent not in orgs:
            raise ConfigError(f"orgs[{i}].parent: unknown org {o.parent!r}")
    projects: dict[str, str] = {}
    for i, p in enumerate(cfg.projects):
        check_id(p.id, f"projects[{i}].id")
        if p.org not in orgs:
            raise ConfigError(f"projects[{i}].org: unknown org {p.org!r}")
        if p.id in projects:
            raise ConfigError(f"projects[{i}].id: duplicate project {p.id!r}")
        projects[p.id] = p.org
    providers: set[str] = set()
    for i, pr in enumerate(cfg.providers):
        check_id(pr.name, f"providers[{i}].name")
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
    for i, c in enumerate(cfg.vault.credentials):
        check_id(c.id, f"vault.credentials[{i}].id")
    sealed = validate_vault(cfg.vault, providers=providers, orgs=orgs)
    for i, pr in enumerate(cfg.providers):
        _check_vault_refs(pr, f"providers[{i}]", sealed)
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
        check_id(k.id, f"virtual_keys[{i}].id")
        if k.id in key_ids:
            raise ConfigError(f"virtual_keys[{i}].id: duplicate key id {k.id!r}")
        key_ids.add(k.id)
        if not _HEX64.match(k.hash):
            raise ConfigError(f"virtual_keys[{i}].hash: must be 64 lowercase hex chars (HMAC-SHA256)")
        if k.previous_hash and not _HEX64.match(k.previous_hash):
            raise ConfigError(
                f"virtual_keys[{i}].previous_hash: must be 64 lowercase hex chars (HMAC-SHA256)"
            )
        if bool(k.previous_hash) != (k.previous_hash_expires_at is not None):
            raise ConfigError(
                f"virtual_keys[{i}].previous_hash_expires_at: set together with previous_hash (the grace end)"
            )
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
    validate_quotas(
        cfg.quotas,
        known={"org": orgs, "project": set(projects), "key": key_ids, "provider": providers, "model": names},
    )
    validate_proxy(cfg.proxy, orgs=orgs, projects=projects)
    validate_routing(
        cfg.routing,
        kinds={m.name: m.kind for m in cfg.models},
        aliases={a for m in cfg.models for a in m.aliases},
        providers=providers,
    )
    validate_cache(cfg.cache)
    validate_alerts(cfg.alerts)


def _format_msgspec_error(exc: msgspec.ValidationError) -> str:
    # msgspec says e.g. "Object contains unknown field `x` - at `$.gateway`"
    return str(exc).replace("$.", "").replace("$", "<root>")


def parse_config(text: str | bytes, *, source: str = "<config>") -> NexusConfig:
    """The file's YAML, decoded strictly and validated."""
    try:
        cfg = msgspec.yaml.decode(text, type=NexusConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_format_msgspec_error(exc)}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    try:
        validate_config(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return cfg
