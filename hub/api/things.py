"""The fleet in the admin API: things (list, enrol, show with their shadow,
effective config, set and clear an override, revoke) and the config
template of each thing type.

A thing belongs to an org ("" = the installation's), so its NRN lies under
that org (``nrn:nexus:fleet:acme:thing/laptop-42``); templates are the
installation's.  Every route is IAM-checked and audited like the rest of
the API (``hub.api.http``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
from aiohttp import web

from hub.api.errors import ApiError
from hub.api.http import Call, json_response
from hub.api.pages import Page, limit_of, page
from hub.authz import item_org, nrn_of
from hub.commands import DomainError, Upsert
from hub.fleet.commands import ClearOverride, RevokeThing, SetOverride
from hub.fleet.decide import check_thing_id
from hub.fleet.desired import EffectiveKey, effective_config, pending_keys
from hub.fleet.drift import SyncRecord
from hub.fleet.enrol import enrol_command
from hub.fleet.registry import Registry
from hub.state import THING, THING_TEMPLATE, Resource
from hub.views import Item, owning_org, view
from streams.config_base import Strict
from streams.config_fleet import THING_TYPES, ThingSpec, ThingTemplate, key_problem
from streams.fleet_wire import Desired
from streams.snapshots import NodeReport


class EnrolledThing(msgspec.Struct, kw_only=True):
    """The answer to an enrolment: the thing's sync token appears here once
    and is stored nowhere (only its sha256)."""

    token: str
    item: Item[ThingSpec]


class Shadow(msgspec.Struct, kw_only=True):
    desired: Desired
    reported: NodeReport | None = None
    # Desired keys the report does not show running (what drift compares).
    pending_keys: list[str] = []
    converged: bool = False
    sync: SyncRecord = msgspec.field(default_factory=SyncRecord)
    # Since the node applied what it runs (None: nothing applied yet).
    config_age_s: float | None = None


class ThingDetail(msgspec.Struct, kw_only=True):
    item: Item[ThingSpec]
    status: str  # enrolled | online | offline | drift | revoked
    shadow: Shadow


class ThingSummary(msgspec.Struct, kw_only=True):
    id: str
    version: int
    type: str
    org: str
    name: str
    status: str
    desired_version: int
    reported_at: dt.datetime | None = None
    pending_keys: list[str] = []


class EffectiveValue(msgspec.Struct, kw_only=True, omit_defaults=True):
    value: Any
    source: str  # template | override
    reason: str = ""
    set_by: str = ""
    set_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None


class EffectiveConfig(msgspec.Struct, kw_only=True):
    thing: str
    type: str
    # The desired state's version and digest (with the snapshot key, for the
    # types that run snapshots).
    version: int
    digest: str
    keys: dict[str, EffectiveValue]


class OverrideBody(Strict, kw_only=True, frozen=True):
    value: Any
    reason: str
    expires_at: dt.datetime | None = None


class RevokeBody(Strict, kw_only=True, frozen=True):
    reason: str = ""


def _registry(call: Call) -> Registry:
    if call.hub.fleet is None:
        raise ApiError("unavailable", "the fleet registry is not running in this Hub")
    return call.hub.fleet


def _t(ms: int) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC) if ms else None


def _now_ms(call: Call) -> int:
    return int(call.now().timestamp() * 1000)


def _found(call: Call) -> Resource:
    rid = call.request.match_info["id"]
    try:
        check_thing_id(rid)
    except DomainError:
        raise ApiError("not_found", f"thing {rid[:130]!r} does not exist") from None
    res = call.state.get(THING, rid)
    if res is None:
        raise ApiError("not_found", f"thing {rid!r} does not exist")
    return res


def _authorize(call: Call, res: Resource, verb: str) -> None:
    call.authorize(
        nrn_of(call.state, THING, res.id, res.spec), action=f"admin:thing.{verb}", org=owning_org(res)
    )


def _shown(call: Call, res: Resource) -> Item[Any]:
    return view(res, now_ms=_now_ms(call))


def detail(call: Call, reg: Registry, res: Resource) -> ThingDetail:
    desired = reg.desired(res)
    reported = reg.report(res)
    pending = pending_keys(desired, reported)
    now = _now_ms(call)
    age = (now - reported.applied_at_ms) / 1000 if reported is not None and reported.applied_at_ms else None
    return ThingDetail(
        item=_shown(call, res),
        status=reg.status(res, now),
        shadow=Shadow(
            desired=desired,
            reported=reported,
            pending_keys=pending,
            converged=reported is not None and not pending,
            sync=reg.sync_record(res.id),
            config_age_s=age,
        ),
    )


def _effective(reg: Registry, res: Resource) -> EffectiveConfig:
    desired = reg.desired(res)

    def one(e: EffectiveKey) -> EffectiveValue:
        return EffectiveValue(
            value=e.value,
            source=e.source,
            reason=e.reason,
            set_by=e.set_by,
            set_at=_t(e.set_at_ms),
            expires_at=_t(e.expires_at_ms),
        )

    keys = {k: one(e) for k, e in effective_config(reg.state, res).items()}
    for k, v in desired.keys.items():
        keys.setdefault(k, EffectiveValue(value=v, source="hub"))
    return EffectiveConfig(
        thing=res.id, type=res.spec.type, version=desired.version, digest=desired.digest, keys=keys
    )


async def list_things(call: Call) -> web.Response:
    reg = _registry(call)
    call.self_service("filtered")  # the list is everyone's; its items are not
    want = {name: call.query(name) for name in ("type", "org", "status") if call.query(name)}
    prefix = call.query("id_prefix")
    now = _now_ms(call)

    def keep(res: Resource) -> bool:
        if prefix and not res.id.startswith(prefix):
            return False
        if "type" in want and res.spec.type != want["type"]:
            return False
        if "org" in want and owning_org(res) != want["org"]:
            return False
        if "status" in want and reg.status(res, now) != want["status"]:
            return False
        return call.allowed(nrn_of(call.state, THING, res.id, res.spec), action="admin:thing.read")

    def show(res: Resource) -> ThingSummary:
        desired = reg.desired(res)
        reported = reg.report(res)
        return ThingSummary(
            id=res.id,
            version=res.version,
            type=res.spec.type,
            org=res.spec.org,
            name=res.spec.name,
            status=reg.status(res, now),
            desired_version=desired.version,
            reported_at=_t(reported.reported_at_ms) if reported is not None else None,
            pending_keys=pending_keys(desired, reported),
        )

    result = page(
        call.state,
        THING,
        after=call.query("after"),
        limit=limit_of(call.query("limit")),
        keep=keep,
        show=show,
    )
    return json_response(result)


async def enrol_thing(call: Call) -> web.Response:
    _registry(call)
    spec = await call.body(ThingSpec)
    check_thing_id(spec.id)
    call.authorize(
        nrn_of(call.state, THING, spec.id, spec), action="admin:thing.create", org=item_org(THING, spec)
    )
    env = call.envelope()
    cmd, token = enrol_command(
        spec, actor=env["actor"], how="admin", command_id=env["id"], request_id=env["request_id"]
    )
    out = await call.execute(cmd)
    if out.replayed:
        # The same Idempotency-Key again: the token was shown once already.
        raise ApiError("already_exists", f"thing {spec.id!r} was enrolled by this request already")
    res = call.state.get(THING, spec.id)
    assert res is not None
    call.after = _shown(call, res)
    return json_response(EnrolledThing(token=token, item=call.after), status=201, etag=res.version)


async def get_thing(call: Call) -> web.Response:
    reg = _registry(call)
    res = _found(call)
    _authorize(call, res, "read")
    return json_response(detail(call, reg, res), etag=res.version)


async def thing_config(call: Call) -> web.Response:
    reg = _registry(call)
    res = _found(call)
    _authorize(call, res, "read")
    return json_response(_effective(reg, res), etag=res.version)


def _key(call: Call) -> str:
    key = call.request.match_info["key"]
    problem = key_problem(key)
    if problem:
        raise ApiError("invalid_field", f"key: {problem}", field="key")
    return key


async def set_override(call: Call) -> web.Response:
    reg = _registry(call)
    res = _found(call)
    key = _key(call)
    body = await call.body(OverrideBody)
    _authorize(call, res, "override")
    call.before = _shown(call, res)
    expires = int(body.expires_at.timestamp() * 1000) if body.expires_at is not None else 0
    await call.execute(
        SetOverride(
            **call.envelope(expected_version=call.if_match()),
            rid=res.id,
            key=key,
            value=body.value,
            reason=body.reason,
            expires_at_ms=expires,
        )
    )
    after = call.state.get(THING, res.id)
    assert after is not None
    call.after = _shown(call, after)
    return json_response(_effective(reg, after), etag=after.version)


async def clear_override(call: Call) -> web.Response:
    reg = _registry(call)
    res = _found(call)
    key = _key(call)
    _authorize(call, res, "override")
    call.before = _shown(call, res)
    await call.execute(
        ClearOverride(
            **call.envelope(expected_version=call.if_match()),
            rid=res.id,
            key=key,
            reason=call.query("reason")[:500],
        )
    )
    after = call.state.get(THING, res.id)
    assert after is not None
    call.after = _shown(call, after)
    return json_response(_effective(reg, after), etag=after.version)


async def revoke_thing(call: Call) -> web.Response:
    reg = _registry(call)
    res = _found(call)
    body = await call.body(RevokeBody)
    _authorize(call, res, "revoke")
    call.before = _shown(call, res)
    await call.execute(
        RevokeThing(**call.envelope(expected_version=call.if_match()), rid=res.id, reason=body.reason)
    )
    if res.spec.type == "agent" and call.hub.enrolment is not None:
        # An enrolled agent's attestation key stops verifying with it
        # (hub.agents; a thing enrolled by an admin has no agent record).
        assert call.principal is not None
        await call.hub.enrolment.revoke_agent(res.id, actor=call.principal.nrn, reason=body.reason[:500])
    after = call.state.get(THING, res.id)
    assert after is not None
    call.after = _shown(call, after)
    return json_response(detail(call, reg, after), etag=after.version)


# --- templates --------------------------------------------------------------------


def _type(call: Call) -> str:
    rtype = call.request.match_info["type"]
    if rtype not in THING_TYPES:
        raise ApiError("not_found", f"no thing type {rtype[:64]!r} ({', '.join(THING_TYPES)})")
    return rtype


def _template_item(call: Call, rtype: str) -> Item[Any]:
    res = call.state.get(THING_TEMPLATE, rtype)
    if res is not None:
        return _shown(call, res)
    # Never set: the empty template every type starts with.
    epoch = dt.datetime.fromtimestamp(0, tz=dt.UTC)
    return Item(
        id=rtype,
        version=0,
        created_at=epoch,
        updated_at=epoch,
        created_by="",
        updated_by="",
        spec=ThingTemplate(type=rtype),
    )


async def list_templates(call: Call) -> web.Response:
    call.self_service("filtered")
    items = [
        _template_item(call, t)
        for t in THING_TYPES
        if call.allowed(nrn_of(call.state, THING_TEMPLATE, t), action="admin:thing-template.read")
    ]
    return json_response(Page(items=items, next=None))


async def get_template(call: Call) -> web.Response:
    rtype = _type(call)
    call.authorize(nrn_of(call.state, THING_TEMPLATE, rtype), action="admin:thing-template.read")
    item = _template_item(call, rtype)
    return json_response(item, etag=item.version)


async def put_template(call: Call) -> web.Response:
    rtype = _type(call)
    spec = await call.body(ThingTemplate)
    call.authorize(nrn_of(call.state, THING_TEMPLATE, rtype), action="admin:thing-template.update")
    call.before = _template_item(call, rtype)
    await call.execute(
        Upsert(
            **call.envelope(expected_version=call.if_match()), aggregate=THING_TEMPLATE, rid=rtype, spec=spec
        )
    )
    item = _template_item(call, rtype)
    call.after = item
    return json_response(item, etag=item.version)
