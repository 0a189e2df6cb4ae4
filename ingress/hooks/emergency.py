"""Kill switch and emergency passthrough as pure functions of (config, now).

Emergency passthrough (gateway): rules at global, provider and adapter
scope are OR-merged; each expires by itself (at most 8 h after it was set,
enforced at load).  The kill switch: fleet-wide in config, or per node by a
break-glass latch that reverts by itself.  Either way the flags to stamp on
every event the request produces come from here.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass

from streams.config_hooks import MAX_OVERRIDE, MIN_REASON_CHARS, BreakGlass, HooksConfig


@dataclass(frozen=True, slots=True)
class Bypass:
    hooks: bool = False
    cache: bool = False
    normalize: bool = False
    kill_switch: bool = False
    reason: str = ""
    # The earliest expiry among the rules in force: when this answer changes.
    expires_at: dt.datetime | None = None
    # Hooks that run as in monitor mode for this caller only: a user's
    # recorded justification (the proxy's block page) excuses them for a
    # while.  Not an emergency flag: every verdict is still recorded.
    excused: frozenset[str] = frozenset()

    @property
    def flags(self) -> list[str]:
        out = []
        if self.hooks:
            out.append("bypass_hooks")
        if self.cache:
            out.append("bypass_cache")
        if self.normalize:
            out.append("bypass_normalize")
        if self.kill_switch:
            out.append("kill_switch")
        return out

    @property
    def any(self) -> bool:
        return bool(self.hooks or self.cache or self.normalize or self.kill_switch)


NO_BYPASS = Bypass()


def passthrough(cfg: HooksConfig, now: dt.datetime, *, provider: str = "", adapter: str = "") -> Bypass:
    hooks = cache = normalize = False
    reasons: list[str] = []
    expiry: dt.datetime | None = None
    for rule in cfg.passthrough:
        if not (rule.set_at <= now < rule.expires_at):
            continue
        if rule.scope == "provider" and rule.target != provider:
            continue
        if rule.scope == "adapter" and rule.target != adapter:
            continue
        hooks |= rule.bypass_hooks
        cache |= rule.bypass_cache
        normalize |= rule.bypass_normalize
        reasons.append(f"{rule.scope}{':' + rule.target if rule.target else ''}: {rule.reason}")
        expiry = rule.expires_at if expiry is None else min(expiry, rule.expires_at)
    return Bypass(hooks, cache, normalize, False, "; ".join(reasons), expiry)


@dataclass(frozen=True, slots=True)
class KillState:
    engaged: bool
    source: str = ""  # fleet | break-glass
    reason: str = ""
    until: dt.datetime | None = None


def kill_switch(
    cfg: HooksConfig, now: dt.datetime, *, node_id: str, local: BreakGlass | None = None
) -> KillState:
    ks = cfg.kill_switch
    if ks.engaged:
        return KillState(True, "fleet", ks.reason)
    for bg in (*ks.break_glass, *((local,) if local else ())):
        if bg.node in (node_id, "*") and bg.engaged_at <= now < bg.until:
            return KillState(True, "break-glass", bg.reason, bg.until)
    return KillState(False)


def effective(
    cfg: HooksConfig,
    now: dt.datetime,
    *,
    node_id: str,
    provider: str = "",
    adapter: str = "",
    local: BreakGlass | None = None,
) -> Bypass:
    """What this request bypasses: passthrough rules, and the kill switch
    (which takes the compliance engine out of the path entirely)."""
    bp = passthrough(cfg, now, provider=provider, adapter=adapter)
    ks = kill_switch(cfg, now, node_id=node_id, local=local)
    if not ks.engaged:
        return bp
    reason = f"kill switch ({ks.source}): {ks.reason}" + (f"; {bp.reason}" if bp.reason else "")
    expiry = bp.expires_at if ks.until is None else min(filter(None, (bp.expires_at, ks.until)))
    return Bypass(True, bp.cache, bp.normalize, True, reason, expiry)


class BreakGlassLatch:
    """A node's own kill switch (set by its runtime API): engaged for a
    bounded time, then off by itself, no operator action needed."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._lock = threading.Lock()
        self._state: BreakGlass | None = None

    def engage(self, reason: str, duration: dt.timedelta, now: dt.datetime) -> BreakGlass:
        if len(reason.strip()) < MIN_REASON_CHARS:
            raise ValueError(f"give a reason of at least {MIN_REASON_CHARS} characters")
        if not dt.timedelta(0) < duration <= MAX_OVERRIDE:
            raise ValueError("break-glass lasts more than 0 and at most 8 hours")
        if now.tzinfo is None:
            raise ValueError("now must be time-zone aware")
        state = BreakGlass(node=self.node_id, engaged_at=now, until=now + duration, reason=reason)
        with self._lock:
            self._state = state
        return state

    def release(self) -> None:
        with self._lock:
            self._state = None

    def current(self, now: dt.datetime) -> BreakGlass | None:
        with self._lock:
            state = self._state
            if state is not None and now >= state.until:
                self._state = state = None
        return state
