"""The resources that are plain specs (orgs, projects, providers, models,
prices, routing rules, hooks, quotas, SIEM sinks; users, groups and
policies add the grant ceiling in hub/api/identity): list, get, create,
replace (PUT), merge-patch (PATCH), delete, the same way for each.

Every item's NRN comes from ``hub.authz.nrn_of``; an edit that moves an
item (a project to another org) needs the right on both places.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

from hub.api.errors import ApiError
from hub.api.http import Call, json_response
from hub.api.pages import limit_of, page
from hub.authz import iam_type, item_org, nrn_of, resource_context
from hub.commands import Create, Delete, Replace, Upsert
from hub.decide import spec_id
from hub.state import Resource
from hub.validate import Problem, check_id
from hub.views import owning_org, view

# A hook a kind may add to writes: (call, current spec or None, new spec or
# None) -> raise ApiError to refuse (the grant ceiling of users, groups,
# policies).
WriteCheck = Callable[[Call, Any, Any], Awaitable[None]]


@dataclass(frozen=True)
class Kind:
    aggregate: str  # the CONFIG aggregate ("routing-rule")
    path: str  # the API's plural ("routing-rules")
    spec: Any  # the spec type
    title: str  # for messages and OpenAPI ("routing rule")
    filters: tuple[tuple[str, str], ...] = ()  # (query name, description)
    check: WriteCheck | None = None

    def action(self, verb: str) -> str:
        return f"admin:{iam_type(self.aggregate)}.{verb}"


def _filter_value(res: Resource, name: str) -> str:
    spec = res.spec
    if name == "org":
        return owning_org(res)
    if name == "kind":
        return str(getattr(spec, "kind", "") or type(spec).__struct_config__.tag or "")
    value = getattr(spec, name, None)
    return "" if value is None else str(value)


def _keep(call: Call, kind: Kind, filters: dict[str, str], action: str) -> Callable[[Resource], bool]:
    prefix = call.query("id_prefix")

    def keep(res: Resource) -> bool:
        if prefix and not res.id.startswith(prefix):
            return False
        for name, value in filters.items():
            if _filter_value(res, name) != value:
                return False
        return call.allowed(
            nrn_of(call.state, kind.aggregate, res.id, res.spec),
            resource_context(call.state, kind.aggregate, res.spec),
            action=action,
        )

    return keep


async def list_items(call: Call, kind: Kind) -> web.Response:
    """Only what the caller may read is listed (each item is asked about)."""
    filters = {name: call.query(name) for name, _ in kind.filters if call.query(name)}
    call.self_service("filtered")  # the list itself is everyone's; its items are not
    call.resource = (
        nrn_of(call.state, "org", filters["org"])
        if filters.get("org") in call.state.items.get("org", {})
        else ""
    )
    now = call.now()
    result = page(
        call.state,
        kind.aggregate,
        after=call.query("after"),
        limit=limit_of(call.query("limit")),
        keep=_keep(call, kind, filters, kind.action("read")),
        show=lambda r: view(r, now_ms=int(now.timestamp() * 1000)),
    )
    return json_response(result)


def found(call: Call, kind: Kind, rid: str) -> Resource:
    res = call.state.get(kind.aggregate, rid)
    if res is None:
        raise ApiError("not_found", f"{kind.title} {rid!r} does not exist")
    return res


def authorize_item(call: Call, kind: Kind, res: Resource, verb: str) -> None:
    call.authorize(
        nrn_of(call.state, kind.aggregate, res.id, res.spec),
        resource_context(call.state, kind.aggregate, res.spec),
        action=kind.action(verb),
        org=owning_org(res),
    )


def shown(call: Call, res: Resource) -> Any:
    return view(res, now_ms=int(call.now().timestamp() * 1000))


async def get_item(call: Call, kind: Kind) -> web.Response:
    res = found(call, kind, call.request.match_info["id"])
    authorize_item(call, kind, res, "read")
    return json_response(shown(call, res), etag=res.version)


async def _decoded(call: Call, kind: Kind) -> Any:
    spec = await call.body(kind.spec)
    checked_id(kind.aggregate, spec_id(kind.aggregate, spec))
    return spec


def checked_id(aggregate: str, rid: str) -> str:
    """Ids are checked before anything is built from them (an NRN)."""
    try:
        check_id(aggregate, rid)
    except Problem as p:
        raise ApiError("invalid_field", f"{p.field}: {p.message}", field=p.field) from None
    return rid


async def create_item(call: Call, kind: Kind) -> web.Response:
    spec = await _decoded(call, kind)
    rid = spec_id(kind.aggregate, spec)
    call.authorize(
        nrn_of(call.state, kind.aggregate, rid, spec),
        resource_context(call.state, kind.aggregate, spec),
        action=kind.action("create"),
        org=item_org(kind.aggregate, spec),
    )
    if kind.check is not None:
        await kind.check(call, None, spec)
    await call.execute(Create(**call.envelope(), aggregate=kind.aggregate, spec=spec))
    res = found(call, kind, rid)
    call.after = shown(call, res)
    return json_response(call.after, status=201, etag=res.version)


async def replace_item(call: Call, kind: Kind, spec: Any, *, expected: int | None) -> web.Response:
    rid = call.request.match_info["id"]
    current = found(call, kind, rid)
    authorize_item(call, kind, current, "update")
    new_nrn = nrn_of(call.state, kind.aggregate, rid, spec)
    if new_nrn != nrn_of(call.state, kind.aggregate, rid, current.spec):
        # Moving an item needs the right where it goes, too.
        call.authorize(
            new_nrn,
            resource_context(call.state, kind.aggregate, spec),
            action=kind.action("update"),
            org=item_org(kind.aggregate, spec),
        )
    if kind.check is not None:
        await kind.check(call, current.spec, spec)
    call.before = shown(call, current)
    await call.execute(
        Replace(**call.envelope(expected_version=expected), aggregate=kind.aggregate, rid=rid, spec=spec)
    )
    res = found(call, kind, rid)
    call.after = shown(call, res)
    return json_response(call.after, etag=res.version)


async def put_item(call: Call, kind: Kind) -> web.Response:
    spec = await _decoded(call, kind)
    return await replace_item(call, kind, spec, expected=call.if_match())


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: objects merge, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


async def patched_spec(call: Call, kind_spec: Any, current: Any) -> Any:
    raw = await call.raw_body()
    try:
        patch = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise ApiError("invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(patch, dict):
        raise ApiError("invalid_field", "a merge patch is a JSON object")
    merged = merge_patch(msgspec.to_builtins(current), patch)
    try:
        return msgspec.json.decode(msgspec.json.encode(merged), type=kind_spec)
    except msgspec.ValidationError as exc:
        from hub.api.errors import from_validation

        raise from_validation(exc) from None


async def patch_item(call: Call, kind: Kind) -> web.Response:
    rid = call.request.match_info["id"]
    current = found(call, kind, rid)
    spec = await patched_spec(call, kind.spec, current.spec)
    # The merge was made on this version: a change in between is a 409,
    # never a silent revert of someone else's edit.
    expected = call.if_match()
    return await replace_item(call, kind, spec, expected=current.version if expected is None else expected)


async def delete_item(call: Call, kind: Kind) -> web.Response:
    rid = call.request.match_info["id"]
    current = found(call, kind, rid)
    authorize_item(call, kind, current, "delete")
    if kind.check is not None:
        await kind.check(call, current.spec, None)
    call.before = shown(call, current)
    await call.execute(
        Delete(**call.envelope(expected_version=call.if_match()), aggregate=kind.aggregate, rid=rid)
    )
    return web.Response(status=204, headers={"Cache-Control": "no-store"})


# --- settings sections -----------------------------------------------------------


async def get_settings(call: Call, section: str, spec: Any) -> web.Response:
    res = call.state.get("settings", section)
    call.authorize(
        nrn_of(call.state, "settings", section), action=f"admin:{iam_type('settings', section)}.read"
    )
    value = res.spec if res is not None else spec()
    return json_response(value, etag=res.version if res is not None else 0)


async def put_settings(call: Call, section: str, spec: Any) -> web.Response:
    value = await call.body(spec)
    call.authorize(
        nrn_of(call.state, "settings", section), action=f"admin:{iam_type('settings', section)}.update"
    )
    res = call.state.get("settings", section)
    call.before = res.spec if res is not None else spec()
    if section == "hooks" and _fleet_switch(value) != _fleet_switch(call.before):
        raise ApiError(
            "invalid_field",
            "kill_switch: the fleet kill switch changes only through POST /api/admin/kill-switch/engage "
            "or /release (its own IAM action and audit record)",
            field="kill_switch",
        )
    expected = call.if_match()
    await call.execute(
        Upsert(**call.envelope(expected_version=expected), aggregate="settings", rid=section, spec=value)
    )
    res = call.state.get("settings", section)
    call.after = value
    return json_response(value, etag=res.version if res is not None else 0)


def _fleet_switch(hooks: Any) -> tuple[bool, str]:
    ks = hooks.kill_switch
    return bool(ks.engaged), str(ks.reason)
