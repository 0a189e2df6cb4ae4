"""Expiry jobs: what carries an end date becomes what it is once that date
has passed, through a command (so the change is an event, in every
snapshot, and audited with the job as actor).

- ``expire_keys``: an active virtual key past its ``expires_at`` becomes
  ``expired`` (nodes already refuse it by the same rule; the stored status
  makes lists, the read model and the snapshot say so too).
- ``expire_overrides``: emergency passthrough rules past ``expires_at`` and
  break-glass entries past ``until`` leave the hooks settings, one command
  per entry (each its own event and audit record).
"""

from __future__ import annotations

import datetime as dt
import hashlib

import msgspec

from hub.authz import nrn_of
from hub.commands import ChangeKeyStatus, DomainError, Upsert
from hub.jobs.registry import JobContext
from hub.state import KEY
from streams.config_hooks import BreakGlass, HooksConfig, PassthroughRule


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(timespec="seconds")


async def expire_keys(ctx: JobContext) -> str:
    now = ctx.now_ms()
    due = [
        res
        for res in ctx.state.all(KEY)
        if res.key is not None
        and res.key.status == "active"
        and res.spec.expires_at is not None
        and res.spec.expires_at.timestamp() * 1000 <= now
    ]
    ctx.stats["active_checked"] = sum(1 for r in ctx.state.all(KEY) if r.key and r.key.status == "active")
    ctx.idle = not due
    expired: list[str] = []
    for res in due:
        cmd = ChangeKeyStatus(
            **ctx.envelope("expire", res.id, res.version),
            rid=res.id,
            status="expired",
            reason=f"expires_at {res.spec.expires_at.isoformat(timespec='seconds')} passed",
        )
        try:
            out = await ctx.execute(cmd, nrn_of(ctx.state, KEY, res.id))
        except DomainError as exc:
            # Changed meanwhile (revoked, extended): the next run looks again.
            ctx.count("skipped")
            ctx.progress(last_error_status=exc.status)
            continue
        if out.seq:
            expired.append(res.id)
            ctx.count("expired")
    return f"{len(expired)} keys expired" + (f": {', '.join(expired[:20])}" if expired else "")


def _entry_id(entry: PassthroughRule | BreakGlass) -> str:
    return hashlib.sha256(msgspec.json.encode(entry)).hexdigest()[:16]


async def expire_overrides(ctx: JobContext) -> str:
    """Passthrough rules and break-glass entries whose time ran out."""
    removed: list[str] = []
    while True:
        res = ctx.state.get("settings", "hooks")
        hooks: HooksConfig = res.spec if res is not None else HooksConfig()
        now = dt.datetime.fromtimestamp(ctx.now_ms() / 1000, tz=dt.UTC)
        gone_rule = next((r for r in hooks.passthrough if r.expires_at <= now), None)
        gone_bg = next((b for b in hooks.kill_switch.break_glass if b.until <= now), None)
        if gone_rule is not None:
            what = f"passthrough {gone_rule.scope}{':' + gone_rule.target if gone_rule.target else ''}"
            spec = msgspec.structs.replace(
                hooks, passthrough=tuple(r for r in hooks.passthrough if r != gone_rule)
            )
            key = ("passthrough", _entry_id(gone_rule), res.version if res else 0)
            counter = "passthrough_expired"
        elif gone_bg is not None:
            what = f"break-glass {gone_bg.node}"
            ks = msgspec.structs.replace(
                hooks.kill_switch, break_glass=tuple(b for b in hooks.kill_switch.break_glass if b != gone_bg)
            )
            spec = msgspec.structs.replace(hooks, kill_switch=ks)
            key = ("break-glass", _entry_id(gone_bg), res.version if res else 0)
            counter = "break_glass_expired"
        else:
            break
        cmd = Upsert(
            **ctx.envelope(*key),
            expected_version=res.version if res is not None else None,
            aggregate="settings",
            rid="hooks",
            spec=spec,
        )
        out = await ctx.execute(cmd, nrn_of(ctx.state, "settings", "hooks"))
        if not out.seq or out.replayed:
            break  # nothing changed (or done before, with this very id): never loop
        removed.append(what)
        ctx.count(counter)
    ctx.idle = not removed  # an attempt that changed nothing is audited, so recorded
    return f"{len(removed)} expired entries removed" + (f": {', '.join(removed)}" if removed else "")
