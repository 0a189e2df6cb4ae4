"""Config as code: a ``NexusConfig`` file -> the commands that bring the
Hub's state to it (``nexus hub import``), and the state -> the file
(``nexus hub export``, in ``hub.compile``).

The plan is a diff: an item equal to the file's is left alone, so importing
the same file twice changes nothing the second time, and a dry run prints
exactly what would change.  Items the file does not mention stay unless
``prune`` is asked for (then they are deleted, dependants first).

Keys in a file carry only their hash: an imported key is issued with it
(no plaintext ever existed here); a changed hash is a rotation, with the
file's grace period when the file names the old hash.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from hub.commands import ChangeKeyStatus, Command, Delete, DomainError, IssueKey, Replace, RotateKey, Upsert
from hub.state import KEY, HubState
from streams.config import NexusConfig, Org, VirtualKey
from streams.config_hub import BudgetQuota, KeyExtras, KeySpec, PriceSpec, RateLimitQuota
from streams.events import now_ms, uuid7
from streams.events_config import SETTINGS_LISTS, SETTINGS_SECTIONS

# The order items are created in: everything an item refers to comes first.
ORDER: tuple[str, ...] = (
    "org",
    "project",
    "provider",
    "model",
    "price",
    "user",
    "group",
    "policy",
    "settings",
    KEY,
    "routing-rule",
    "hook",
    "quota",
    "siem-sink",
)


@dataclass(frozen=True)
class Change:
    op: str  # create | update | delete | rotate | status
    aggregate: str
    rid: str
    detail: str
    make: Callable[[dict[str, Any]], Command]  # the command's envelope fields -> command

    def describe(self) -> str:
        sign = {"create": "+", "delete": "-"}.get(self.op, "~")
        return f"{sign} {self.aggregate} {self.rid}{': ' + self.detail if self.detail else ''}"


def _orgs_parent_first(orgs: tuple[Org, ...]) -> list[Org]:
    by_id = {o.id: o for o in orgs}
    out: list[Org] = []
    seen: set[str] = set()

    def visit(o: Org, depth: int = 0) -> None:
        if o.id in seen or depth > len(orgs):
            return
        if o.parent and o.parent in by_id:
            visit(by_id[o.parent], depth + 1)
        seen.add(o.id)
        out.append(o)

    for o in orgs:
        visit(o)
    return out


def desired_items(cfg: NexusConfig) -> Iterator[tuple[str, str, Any]]:
    """(aggregate, id, spec) of everything the file holds, in ORDER."""
    for o in _orgs_parent_first(cfg.orgs):
        yield "org", o.id, o
    for p in cfg.projects:
        yield "project", p.id, p
    for pr in cfg.providers:
        yield "provider", pr.name, pr
    for m in cfg.models:
        yield "model", m.name, msgspec.structs.replace(m, price=None)
    for m in cfg.models:
        if m.price is not None:
            pr_ = m.price
            yield (
                "price",
                m.name,
                PriceSpec(
                    model=m.name,
                    input=pr_.input,
                    output=pr_.output,
                    cached_input=pr_.cached_input,
                    cache_write=pr_.cache_write,
                    reasoning=pr_.reasoning,
                ),
            )
    for u in cfg.hub.users:
        yield "user", u.id, u
    for g in cfg.hub.groups:
        yield "group", g.id, g
    for pol in cfg.hub.policies:
        yield "policy", pol.id, pol
    for name in SETTINGS_SECTIONS:
        section = getattr(cfg, name)
        empty = {f: () for f in SETTINGS_LISTS.get(name, ())}
        yield "settings", name, msgspec.structs.replace(section, **empty) if empty else section
    extras = {e.id: e for e in cfg.hub.keys}
    for k in cfg.virtual_keys:
        yield KEY, k.id, (k, extras.get(k.id))
    for r in cfg.routing.rules:
        yield "routing-rule", r.name, r
    for h in cfg.hooks.pipeline:
        yield "hook", h.id, h
    for b in cfg.quotas.budgets:
        yield "quota", b.id, BudgetQuota(**{f: getattr(b, f) for f in b.__struct_fields__})
    for rl in cfg.quotas.rate_limits:
        yield "quota", rl.id, RateLimitQuota(**{f: getattr(rl, f) for f in rl.__struct_fields__})
    for s in cfg.siem.sinks:
        yield "siem-sink", s.name, s


def holds_config(state: HubState) -> bool:
    """Whether the state holds anything a config file says (an org, a
    provider, a setting, a key...): what ``nexus up`` asks before importing
    its file.  Not "is the CONFIG stream empty": the Hub writes events of
    its own as it starts (it enrols itself as a thing of the fleet), and a
    check of the sequence raced with that write and skipped the import."""
    return any(state.count(agg) for agg in ORDER)


def key_spec(k: VirtualKey, extras: KeyExtras | None) -> KeySpec:
    return KeySpec(
        id=k.id,
        org=k.org,
        project=k.project,
        type=extras.type if extras else "application",
        owner=k.user,
        description=k.description,
        allowed_models=k.allowed_models,
        expires_at=k.expires_at,
        budgets=extras.budgets if extras else (),
        rate_limit=extras.rate_limit if extras else None,
        metadata=k.metadata,
    )


def _ms(t: Any) -> int:
    return int(t.timestamp() * 1000) if t is not None else 0


def plan(state: HubState, cfg: NexusConfig, *, prune: bool = False) -> list[Change]:
    """The changes that make ``state`` hold what ``cfg`` says."""
    changes: list[Change] = []
    wanted: set[tuple[str, str]] = set()
    for agg, rid, spec in desired_items(cfg):
        if agg == "quota" and rid.startswith("vk."):
            continue  # a key's own limit compiled into a node's config: kept on the key
        wanted.add((agg, rid))
        current = state.get(agg, rid)
        if agg == KEY:
            changes += _key_changes(state, spec[0], spec[1])
            continue
        if agg == "settings":
            effective = current.spec if current is not None else SETTINGS_SECTIONS[rid]()
            if effective == spec:
                continue
        elif current is not None and current.spec == spec:
            continue
        op = "create" if current is None else "update"
        changes.append(Change(op, agg, rid, "", _upsert(agg, rid, spec)))
    if prune:
        for agg in reversed(ORDER):
            if agg == "settings":
                continue
            items = list(state.all(agg))
            if agg == "org":
                ids = [o.id for o in reversed(_orgs_parent_first(tuple(r.spec for r in items)))]
            else:
                ids = [r.id for r in items]
            for rid in ids:
                if (agg, rid) not in wanted:
                    changes.append(Change("delete", agg, rid, "", _delete(agg, rid)))
    return changes


def _upsert(agg: str, rid: str, spec: Any) -> Callable[[dict[str, Any]], Command]:
    return lambda env: Upsert(**env, aggregate=agg, rid=rid, spec=spec)


def _delete(agg: str, rid: str) -> Callable[[dict[str, Any]], Command]:
    return lambda env: Delete(**env, aggregate=agg, rid=rid)


def _key_changes(state: HubState, k: VirtualKey, extras: KeyExtras | None) -> list[Change]:
    spec = key_spec(k, extras)
    current = state.get(KEY, k.id)
    if current is None or current.key is None:
        return [
            Change(
                "create",
                KEY,
                k.id,
                f"status {k.status}",
                lambda env: IssueKey(**env, spec=spec, hash=k.hash, prefix=k.prefix, status=k.status),
            )
        ]
    out: list[Change] = []
    if current.spec != spec:
        out.append(
            Change("update", KEY, k.id, "", lambda env: Replace(**env, aggregate=KEY, rid=k.id, spec=spec))
        )
    if current.key.hash != k.hash:
        grace = _ms(k.previous_hash_expires_at) if k.previous_hash == current.key.hash else 0
        out.append(
            Change(
                "rotate",
                KEY,
                k.id,
                "new hash",
                lambda env: RotateKey(**env, rid=k.id, hash=k.hash, prefix=k.prefix, grace_until_ms=grace),
            )
        )
    status = {"active": "approved"}.get(k.status, k.status)
    if current.key.status != k.status and status in ("approved", "rejected", "revoked"):
        out.append(
            Change(
                "status",
                KEY,
                k.id,
                f"{current.key.status} -> {k.status}",
                lambda env: ChangeKeyStatus(**env, rid=k.id, status=status, reason="import"),
            )
        )
    return out


class Executor(Protocol):
    async def execute(self, cmd: Command) -> Any: ...


async def apply_plan(
    control: Executor, changes: list[Change], *, actor: str, request_id: str = "", at_ms: int | None = None
) -> int:
    """Execute the plan in order; returns how many changes were stored.
    Stops at the first refusal (a DomainError naming the item)."""
    stored = 0
    for change in changes:
        env = {
            "id": uuid7(),
            "actor": actor,
            "request_id": request_id,
            "at_ms": at_ms if at_ms is not None else now_ms(),
        }
        try:
            outcome = await control.execute(change.make(env))
        except DomainError as exc:
            raise DomainError(
                exc.status,
                exc.code,
                f"{change.aggregate} {change.rid}: {exc.message}",
                field=exc.field,
                current_version=exc.current_version,
            ) from None
        stored += 1 if getattr(outcome, "seq", 0) else 0
    return stored
