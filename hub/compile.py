"""From the Hub's state to a ``NexusConfig``: the snapshot every node runs
on (``for_nodes=True``: no ``hub:`` section), or the file ``nexus hub
export`` writes (with it).

Pure and deterministic: the same state compiles to the same bytes (items
in the order they were first created, which is the stream's order), so a
replayed Hub publishes the digest the live one did.  ``Located`` remembers
which aggregate each compiled list entry came from, so a validation error
about ``virtual_keys[3].project`` can be reported against the key that
caused it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import msgspec

from hub.state import CREDENTIAL, KEY, VAULT_KEY, HubState, Resource
from streams.config import Model, NexusConfig, Price, VirtualKey
from streams.config_hub import (
    KEY_QUOTA_PREFIX,
    BudgetQuota,
    GroupSpec,
    HubSection,
    KeyExtras,
    KeySpec,
    PolicySpec,
    PriceSpec,
    UserSpec,
)
from streams.config_quota import Budget, Match, RateLimit
from streams.config_siem import SiemConfig
from streams.config_vault import KeyVersion, VaultCredential, VaultSection
from streams.events_config import SETTINGS_LISTS, SETTINGS_SECTIONS

_QUOTA_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass
class Located:
    """Config path prefix (``virtual_keys[3]``) -> (aggregate, id)."""

    paths: dict[str, tuple[str, str]] = field(default_factory=dict)

    def add(self, path: str, aggregate: str, rid: str) -> None:
        self.paths[path] = (aggregate, rid)

    def find(self, message: str) -> tuple[str, str, str] | None:
        """(aggregate, id, field path inside it) for a ConfigError message
        that starts with a located path, else None."""
        head = message.split(":", 1)[0].strip()
        best = ""
        for path in self.paths:
            if (head == path or head.startswith(path + ".")) and len(path) > len(best):
                best = path
        if not best:
            return None
        agg, rid = self.paths[best]
        return agg, rid, head[len(best) + 1 :]


def key_quota_ids(key_id: str) -> tuple[str, str]:
    """The id stem of a key's own quotas (``vk.<key id>``; a key id that is
    not a valid quota id is represented by its digest)."""
    stem = f"{KEY_QUOTA_PREFIX}{key_id}"
    if not _QUOTA_ID.match(stem + ".b00"):
        stem = f"{KEY_QUOTA_PREFIX}{hashlib.sha256(key_id.encode()).hexdigest()[:20]}"
    return f"{stem}.b", f"{stem}.rate"


def _ms_to_dt(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def _virtual_key(res: Resource) -> VirtualKey:
    spec: KeySpec = res.spec
    m = res.key
    assert m is not None
    return VirtualKey(
        id=res.id,
        hash=m.hash,
        org=spec.org,
        project=spec.project,
        prefix=m.prefix,
        allowed_models=spec.allowed_models,
        expires_at=spec.expires_at,
        status=m.status,  # type: ignore[arg-type]
        user=spec.owner,
        description=spec.description,
        metadata=spec.metadata,
        previous_hash=m.previous_hash,
        previous_hash_expires_at=_ms_to_dt(m.previous_hash_expires_at_ms) if m.previous_hash else None,
    )


def _owner_gone(state: HubState, owner: str) -> bool:
    user = state.get("user", owner)
    return user is None or bool(user.spec.disabled)


def _key_quotas(res: Resource) -> tuple[list[Budget], list[RateLimit]]:
    spec: KeySpec = res.spec
    if not spec.budgets and spec.rate_limit is None:
        return [], []  # most keys: nothing to derive (and no id to build)
    budget_stem, rate_id = key_quota_ids(res.id)
    budgets = [
        Budget(
            id=f"{budget_stem}{i:02d}",
            unit=b.unit,
            limit=b.limit,
            window=b.window,
            match=Match(key=res.id),
            action=b.action,
            alert_at=b.alert_at,
        )
        for i, b in enumerate(spec.budgets)
    ]
    rates: list[RateLimit] = []
    if spec.rate_limit is not None and (spec.rate_limit.rpm or spec.rate_limit.tpm):
        rates.append(
            RateLimit(
                id=rate_id,
                match=Match(key=res.id),
                per=("key",),
                rpm=spec.rate_limit.rpm,
                tpm=spec.rate_limit.tpm,
            )
        )
    return budgets, rates


def _plain_quota(spec: Any) -> Budget | RateLimit:
    """The config type of an API quota (without its ``kind`` tag)."""
    target = Budget if isinstance(spec, BudgetQuota) else RateLimit
    fields = {f: getattr(spec, f) for f in target.__struct_fields__}
    return target(**fields)


def compile_config(state: HubState, *, for_nodes: bool = True) -> tuple[NexusConfig, Located]:
    loc = Located()
    sections: dict[str, Any] = {}
    for name in SETTINGS_SECTIONS:
        res = state.get("settings", name)
        if res is not None:
            sections[name] = res.spec
    prices: dict[str, PriceSpec] = {r.id: r.spec for r in state.all("price")}

    orgs = []
    for i, r in enumerate(state.all("org")):
        orgs.append(r.spec)
        loc.add(f"orgs[{i}]", "org", r.id)
    projects = []
    for i, r in enumerate(state.all("project")):
        projects.append(r.spec)
        loc.add(f"projects[{i}]", "project", r.id)
    providers = []
    for i, r in enumerate(state.all("provider")):
        providers.append(r.spec)
        loc.add(f"providers[{i}]", "provider", r.id)
    models: list[Model] = []
    for i, r in enumerate(state.all("model")):
        m: Model = r.spec
        p = prices.get(m.name)
        if p is not None:
            m = msgspec.structs.replace(
                m,
                price=Price(
                    input=p.input,
                    output=p.output,
                    cached_input=p.cached_input,
                    cache_write=p.cache_write,
                    reasoning=p.reasoning,
                ),
            )
        models.append(m)
        loc.add(f"models[{i}]", "model", r.id)

    keys: list[VirtualKey] = []
    extras: list[KeyExtras] = []
    key_budgets: list[tuple[Budget, str]] = []
    key_rates: list[tuple[RateLimit, str]] = []
    for i, r in enumerate(state.all(KEY)):
        vk = _virtual_key(r)
        if for_nodes and r.spec.type == "personal" and _owner_gone(state, r.spec.owner):
            # A deprovisioned (disabled) user's personal keys stop working
            # with the next snapshot; re-enabling the user brings them back.
            vk = msgspec.structs.replace(vk, status="revoked")
        keys.append(vk)
        loc.add(f"virtual_keys[{i}]", KEY, r.id)
        own_budgets, own_rates = _key_quotas(r)
        key_budgets += [(x, r.id) for x in own_budgets]
        key_rates += [(x, r.id) for x in own_rates]
        spec: KeySpec = r.spec
        assert r.key is not None
        extras.append(KeyExtras(id=r.id, type=spec.type, budgets=spec.budgets, rate_limit=spec.rate_limit))

    pipeline = []
    for i, r in enumerate(state.all("hook")):
        pipeline.append(r.spec)
        loc.add(f"hooks.pipeline[{i}]", "hook", r.id)
    rules = []
    for i, r in enumerate(state.all("routing-rule")):
        rules.append(r.spec)
        loc.add(f"routing.rules[{i}]", "routing-rule", r.id)
    budgets: list[Budget] = []
    rates: list[RateLimit] = []
    for r in state.all("quota"):
        q = _plain_quota(r.spec)
        if isinstance(q, Budget):
            loc.add(f"quotas.budgets[{len(budgets)}]", "quota", r.id)
            budgets.append(q)
        else:
            loc.add(f"quotas.rate_limits[{len(rates)}]", "quota", r.id)
            rates.append(q)
    # A key's own limits follow the shared ones; in configs for nodes only
    # (the export keeps them on the key, where they are edited).
    if for_nodes:
        for b, kid in key_budgets:
            loc.add(f"quotas.budgets[{len(budgets)}]", KEY, kid)
            budgets.append(b)
        for rl, kid in key_rates:
            loc.add(f"quotas.rate_limits[{len(rates)}]", KEY, kid)
            rates.append(rl)
    sinks = []
    for i, r in enumerate(state.all("siem-sink")):
        sinks.append(r.spec)
        loc.add(f"siem.sinks[{i}]", "siem-sink", r.id)

    vault_keys: list[KeyVersion] = []
    for i, r in enumerate(sorted(state.all(VAULT_KEY), key=lambda r: int(r.id))):
        vault_keys.append(r.spec)
        loc.add(f"vault.keys[{i}]", VAULT_KEY, r.id)
    sealed: list[VaultCredential] = []
    for r in state.all(CREDENTIAL):
        if r.secret is None:
            continue
        loc.add(f"vault.credentials[{len(sealed)}]", CREDENTIAL, r.id)
        sealed.append(
            VaultCredential(
                id=r.id,
                provider=r.spec.provider,
                org=r.spec.org,
                sealed=r.secret.sealed,
                fingerprint=r.secret.fingerprint,
            )
        )

    def with_lists(name: str, **lists: Any) -> Any:
        base = sections.get(name) or SETTINGS_SECTIONS[name]()
        assert set(lists) == set(SETTINGS_LISTS[name])
        return msgspec.structs.replace(base, **lists)

    hub = HubSection()
    if not for_nodes:
        hub = HubSection(
            users=tuple(_spec(r, UserSpec) for r in state.all("user")),
            groups=tuple(_spec(r, GroupSpec) for r in state.all("group")),
            policies=tuple(_spec(r, PolicySpec) for r in state.all("policy")),
            keys=tuple(extras),
        )
    cfg = NexusConfig(
        **{
            name: sections[name]
            for name in SETTINGS_SECTIONS
            if name not in SETTINGS_LISTS and name in sections
        },
        orgs=tuple(orgs),
        projects=tuple(projects),
        virtual_keys=tuple(keys),
        providers=tuple(providers),
        models=tuple(models),
        siem=SiemConfig(sinks=tuple(sinks)),
        hooks=with_lists("hooks", pipeline=tuple(pipeline)),
        quotas=with_lists("quotas", budgets=tuple(budgets), rate_limits=tuple(rates)),
        routing=with_lists("routing", rules=tuple(rules)),
        vault=VaultSection(keys=tuple(vault_keys), credentials=tuple(sealed)),
        hub=hub,
    )
    return cfg, loc


def _spec(res: Resource, t: type[Any]) -> Any:
    assert isinstance(res.spec, t)
    return res.spec
