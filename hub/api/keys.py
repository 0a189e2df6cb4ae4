"""Virtual keys: issued with the plaintext shown exactly once, rotated with a
grace period in which both keys work, revoked, and approved or rejected
when they were requested by someone who may not approve them.

A key starts ``active`` when its creator may approve it
(``admin:virtual-key.approve`` on it), else ``pending`` until someone who
may approves it.  Its org, type and owner are fixed at issue.  ``expired``
is not stored: it is what an active key past its ``expires_at`` is shown
as (nodes refuse it by the same rule, without waiting for a change).
"""

from __future__ import annotations

import contextlib
import secrets

import msgspec
from aiohttp import web

from hub.api.errors import ApiError
from hub.api.http import Call, json_response
from hub.api.resources import Kind, authorize_item, checked_id, found, patched_spec, shown
from hub.authz import decide_access, nrn_of, resource_context
from hub.commands import ChangeKeyStatus, Delete, IssueKey, Replace, RotateKey
from hub.state import KEY
from hub.views import Item
from streams.config_base import ConfigError
from streams.config_hub import KeySpec
from streams.events import now_ms
from streams.keys import display_prefix, hash_key, new_key

KEYS = Kind(
    aggregate=KEY,
    path="virtual-keys",
    spec=KeySpec,
    title="virtual key",
    filters=(
        ("org", "only keys of this org"),
        ("project", "only keys of this project"),
        ("type", "personal or application"),
        ("owner", "only keys of this user"),
    ),
)

MAX_GRACE_S = 7 * 24 * 3600


class IssuedKey(msgspec.Struct, kw_only=True):
    """The answer to a create or a rotate: the key itself appears here once
    and is stored nowhere (only its HMAC)."""

    key: str
    item: Item[KeySpec]


class Rotation(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # How long the old key keeps working (0: it stops at once); at most 7 days.
    grace_seconds: int = 0


class Reason(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    reason: str = ""


def _secret(call: Call) -> bytes:
    try:
        return call.hub.hmac_secret(call.state)
    except ConfigError as exc:
        raise ApiError("unavailable", f"keys cannot be issued: {exc}") from None


def _ctx(call: Call, spec: KeySpec) -> dict[str, object]:
    return resource_context(call.state, KEY, spec)


async def create_key(call: Call) -> web.Response:
    spec = await call.body(KeySpec)
    assert call.principal is not None
    if not spec.id:
        spec = msgspec.structs.replace(spec, id=f"vk_{secrets.token_hex(8)}")
    if spec.type == "personal" and not spec.owner:
        spec = msgspec.structs.replace(spec, owner=call.principal.user_id)
    checked_id(KEY, spec.id)
    resource = nrn_of(call.state, KEY, spec.id, spec)
    call.authorize(resource, _ctx(call, spec), action="admin:virtual-key.create", org=spec.org)
    # Active at once only if the creator may also approve it.
    may_approve = decide_access(
        call.principal, "admin:virtual-key.approve", resource, call.context(_ctx(call, spec))
    ).allowed
    key = new_key()
    secret = _secret(call)
    cmd = IssueKey(
        **call.envelope(),
        spec=spec,
        hash=hash_key(key, secret),
        prefix=display_prefix(key),
        status="active" if may_approve else "pending",
    )
    await call.execute(cmd)
    res = found(call, KEYS, spec.id)
    call.after = shown(call, res)
    await _published(call)
    return json_response(IssuedKey(key=key, item=call.after), status=201, etag=res.version)


async def _published(call: Call) -> None:
    """A key answer waits (briefly) until the change is in the published
    snapshot, so a caller can use or stop using it right away."""
    if call.hub.wait_published is not None and call.config_seq:
        with contextlib.suppress(TimeoutError):
            await call.hub.wait_published(call.config_seq)


async def put_key(call: Call) -> web.Response:
    spec = await call.body(KeySpec)
    return await _edit(call, spec, expected=call.if_match())


async def patch_key(call: Call) -> web.Response:
    current = found(call, KEYS, call.request.match_info["id"])
    spec = await patched_spec(call, KeySpec, current.spec)
    expected = call.if_match()
    return await _edit(call, spec, expected=current.version if expected is None else expected)


async def _edit(call: Call, spec: KeySpec, *, expected: int | None) -> web.Response:
    rid = call.request.match_info["id"]
    current = found(call, KEYS, rid)
    if not spec.id:
        spec = msgspec.structs.replace(spec, id=rid)
    authorize_item(call, KEYS, current, "update")
    # The new scope too: a developer may not widen a key beyond what a
    # policy lets them give (conditions on the requested models).
    call.authorize(nrn_of(call.state, KEY, rid, spec), _ctx(call, spec), action="admin:virtual-key.update")
    call.before = shown(call, current)
    await call.execute(Replace(**call.envelope(expected_version=expected), aggregate=KEY, rid=rid, spec=spec))
    res = found(call, KEYS, rid)
    call.after = shown(call, res)
    await _published(call)
    return json_response(call.after, etag=res.version)


async def rotate_key(call: Call) -> web.Response:
    body = await call.body(Rotation)
    if not 0 <= body.grace_seconds <= MAX_GRACE_S:
        raise ApiError("invalid_field", f"grace_seconds: from 0 to {MAX_GRACE_S}", field="grace_seconds")
    rid = call.request.match_info["id"]
    current = found(call, KEYS, rid)
    authorize_item(call, KEYS, current, "rotate")
    call.before = shown(call, current)
    key = new_key()
    secret = _secret(call)
    grace_until = now_ms() + body.grace_seconds * 1000 if body.grace_seconds else 0
    await call.execute(
        RotateKey(
            **call.envelope(expected_version=call.if_match()),
            rid=rid,
            hash=hash_key(key, secret),
            prefix=display_prefix(key),
            grace_until_ms=grace_until,
        )
    )
    res = found(call, KEYS, rid)
    call.after = shown(call, res)
    await _published(call)
    return json_response(IssuedKey(key=key, item=call.after), etag=res.version)


async def _status(call: Call, verb: str, status: str) -> web.Response:
    body = await call.body(Reason)
    rid = call.request.match_info["id"]
    current = found(call, KEYS, rid)
    authorize_item(call, KEYS, current, verb)
    call.before = shown(call, current)
    await call.execute(
        ChangeKeyStatus(
            **call.envelope(expected_version=call.if_match()), rid=rid, status=status, reason=body.reason
        )
    )
    res = found(call, KEYS, rid)
    call.after = shown(call, res)
    await _published(call)
    return json_response(call.after, etag=res.version)


async def revoke_key(call: Call) -> web.Response:
    return await _status(call, "revoke", "revoked")


async def approve_key(call: Call) -> web.Response:
    return await _status(call, "approve", "approved")


async def reject_key(call: Call) -> web.Response:
    return await _status(call, "approve", "rejected")


async def delete_key(call: Call) -> web.Response:
    rid = call.request.match_info["id"]
    current = found(call, KEYS, rid)
    authorize_item(call, KEYS, current, "delete")
    assert current.key is not None
    if current.key.status in ("active", "pending"):
        raise ApiError(
            "invalid_transition", f"a {current.key.status} key is revoked (or rejected) before it is deleted"
        )
    call.before = shown(call, current)
    await call.execute(Delete(**call.envelope(expected_version=call.if_match()), aggregate=KEY, rid=rid))
    return web.Response(status=204, headers={"Cache-Control": "no-store"})
