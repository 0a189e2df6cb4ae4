"""The fleet kill switch: a Hub command, IAM-checked and audited, that
takes the compliance engine out of every node's path (the gateway skips
its hooks; the proxy splices instead of bumping).  It is the hooks
settings' ``kill_switch`` flag, changed only here (a PUT of the hooks
settings may not flip it), and reaches nodes in the next snapshot: the
answer returns once that snapshot is published.

A node's own break-glass is set on the node (its local endpoint and admin
token) and never reaches another node; break-glass entries the Hub holds
for named nodes expire through the ``override-expiry`` job.
"""

from __future__ import annotations

import contextlib

import msgspec
from aiohttp import web

from hub.api.errors import ApiError
from hub.api.http import Call, json_response
from hub.commands import Upsert
from hub.iam.actions import resource_nrn
from streams.config_hooks import MIN_REASON_CHARS, BreakGlass, HooksConfig


class KillSwitchState(msgspec.Struct, kw_only=True):
    engaged: bool
    reason: str
    # Per-node break-glass entries the fleet config holds (each expires).
    break_glass: tuple[BreakGlass, ...]
    # The CONFIG version of the hooks settings, and the snapshot revision
    # published with it (0 when the answer did not wait for one).
    version: int
    snapshot_revision: int = 0


class Engage(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    reason: str


class Release(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    reason: str = ""


NRN = resource_nrn("kill-switch", "", "fleet")


def _hooks(call: Call) -> tuple[HooksConfig, int]:
    res = call.state.get("settings", "hooks")
    return (res.spec, res.version) if res is not None else (HooksConfig(), 0)


def _view(hooks: HooksConfig, version: int, revision: int = 0) -> KillSwitchState:
    ks = hooks.kill_switch
    return KillSwitchState(
        engaged=ks.engaged,
        reason=ks.reason,
        break_glass=ks.break_glass,
        version=version,
        snapshot_revision=revision,
    )


async def get_kill_switch(call: Call) -> web.Response:
    call.authorize(NRN)
    hooks, version = _hooks(call)
    return json_response(_view(hooks, version))


async def engage(call: Call) -> web.Response:
    body = await call.body(Engage)
    call.authorize(NRN)
    if len(body.reason.strip()) < MIN_REASON_CHARS:
        raise ApiError("invalid_field", f"reason: at least {MIN_REASON_CHARS} characters", field="reason")
    return await _set(call, True, body.reason.strip())


async def release(call: Call) -> web.Response:
    await call.body(Release)
    call.authorize(NRN)
    return await _set(call, False, "")


async def _set(call: Call, engaged: bool, reason: str) -> web.Response:
    hooks, version = _hooks(call)
    call.before = _view(hooks, version)
    ks = msgspec.structs.replace(hooks.kill_switch, engaged=engaged, reason=reason)
    spec = msgspec.structs.replace(hooks, kill_switch=ks)
    await call.execute(
        Upsert(
            **call.envelope(expected_version=call.if_match() or (version or None)),
            aggregate="settings",
            rid="hooks",
            spec=spec,
        )
    )
    revision = 0
    if call.hub.wait_published is not None and call.config_seq:
        with contextlib.suppress(TimeoutError):
            head = await call.hub.wait_published(call.config_seq)
            revision = int(getattr(head, "revision", 0))
    hooks, version = _hooks(call)
    call.after = _view(hooks, version)
    return json_response(_view(hooks, version, revision), etag=version)
