"""The proxy's kill switch: when engaged, new connections are spliced
instead of bumped (connections in flight finish as they are).

Two inputs, OR-ed: the fleet switch (today the config's
``hooks.kill_switch``; the Hub will call ``set_fleet`` when its command
reaches the node) and the node's own break-glass latch, set through the
admin endpoint with its token, reverting by itself after at most 8 hours.
Every change of the latch is an audited event (``proxy.break_glass``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Callable
from typing import Protocol

from ingress.hooks.emergency import BreakGlassLatch, KillState, kill_switch
from streams.config_hooks import HooksConfig
from streams.events import Event, Node
from streams.events_proxy import ProxyBreakGlass


class Emitter(Protocol):
    def emit(self, event: Event) -> None: ...


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ProxyKillSwitch:
    def __init__(
        self,
        hooks: HooksConfig,
        node: Node,
        emitter: Emitter,
        *,
        clock: Callable[[], dt.datetime] = _now,
    ) -> None:
        self._hooks = hooks
        self._node = node
        self._emit = emitter
        self._clock = clock
        self.latch = BreakGlassLatch(node.id)
        self._fleet: KillState | None = None
        self._expiry: asyncio.Task[None] | None = None

    def update(self, hooks: HooksConfig) -> None:
        """A new config snapshot: its fleet switch (the Hub's kill-switch
        command lands there) and break-glass list apply to new connections."""
        self._hooks = hooks

    def set_fleet(self, engaged: bool, reason: str = "") -> None:
        """The fleet switch as the Hub sets it (overrides the config's)."""
        self._fleet = KillState(engaged, "fleet", reason)

    def state(self) -> KillState:
        now = self._clock()
        if self._fleet is not None and self._fleet.engaged:
            return self._fleet
        local = self.latch.current(now)
        cfg = self._hooks
        if self._fleet is not None:  # the Hub's word replaces the file's fleet flag
            cfg = HooksConfig(kill_switch=type(cfg.kill_switch)(break_glass=cfg.kill_switch.break_glass))
        was_engaged = self._expiry is not None and local is None and not self._expiry.done()
        if was_engaged:
            self._expired()
        return kill_switch(cfg, now, node_id=self._node.id, local=local)

    def engage(self, reason: str, duration: dt.timedelta, actor: str) -> KillState:
        bg = self.latch.engage(reason, duration, self._clock())
        self._emit.emit(
            ProxyBreakGlass(
                node=self._node,
                action="engaged",
                reason=reason,
                until_ms=int(bg.until.timestamp() * 1000),
                actor=actor,
            )
        )
        self._arm(duration.total_seconds())
        return KillState(True, "break-glass", reason, bg.until)

    def release(self, actor: str) -> None:
        if self.latch.current(self._clock()) is None:
            return
        self.latch.release()
        self._disarm()
        self._emit.emit(ProxyBreakGlass(node=self._node, action="released", actor=actor))

    def _arm(self, seconds: float) -> None:
        self._disarm()
        with contextlib.suppress(RuntimeError):  # no loop: state() notices the expiry
            self._expiry = asyncio.get_running_loop().create_task(self._expire_after(seconds))

    def _disarm(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    async def _expire_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if self.latch.current(self._clock()) is None:
            self._expiry = None
            self._emit.emit(ProxyBreakGlass(node=self._node, action="expired", actor="clock"))

    def _expired(self) -> None:
        # The clock ran out before the timer fired (an injected clock).
        self._disarm()
        self._emit.emit(ProxyBreakGlass(node=self._node, action="expired", actor="clock"))

    def close(self) -> None:
        self._disarm()
