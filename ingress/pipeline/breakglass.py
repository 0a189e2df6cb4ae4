"""A gateway node's break-glass switch: the node's own kill switch, engaged
through its local endpoint (``ingress/gateway/breakglass.py``, the node's
admin token), for at most 8 hours, then off by itself.  Every change is an
event (``node.break_glass``: engaged, released, expired) on the node's
publisher, so the audit chain has it.

It acts on this node only.  The fleet switch is a Hub command that reaches
every node in the snapshot (``hooks.kill_switch``); nothing here can set it.

The switch keeps its own clock (injectable), which decides when it
expires; the request path asks ``current()`` once per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from streams.events import Node as NodeId
from streams.events_node import NodeBreakGlass

if TYPE_CHECKING:
    from ingress.pipeline.runtime import EventSink
    from streams.config_hooks import BreakGlass


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class BreakGlassSwitch:
    def __init__(
        self, node: NodeId, publisher: EventSink, *, clock: Callable[[], dt.datetime] = _now
    ) -> None:
        # The latch lives with the compliance engine's code, imported only
        # once a node needs it (a node without hooks never loads it).
        from ingress.hooks.emergency import BreakGlassLatch

        self.node = node
        self.clock = clock
        self._publisher = publisher
        self._latch = BreakGlassLatch(node.id)
        self._lock = threading.Lock()
        self._announced: BreakGlass | None = None  # engaged, and not yet said to have ended
        self._timer: asyncio.TimerHandle | None = None

    def current(self) -> BreakGlass | None:
        """The break-glass in force now (None: off); an expiry noticed here
        is announced once."""
        state = self._latch.current(self.clock())
        if state is None and self._announced is not None:
            with self._lock:
                ended, self._announced = self._announced, None
            if ended is not None:
                self._emit("expired", "clock", ended)
        return state

    def engage(self, reason: str, duration: dt.timedelta, actor: str) -> BreakGlass:
        """ValueError for a short reason or a duration outside (0, 8 h]."""
        state = self._latch.engage(reason, duration, self.clock())
        with self._lock:
            self._announced = state
        self._emit("engaged", actor, state)
        self._arm(duration.total_seconds())
        return state

    def release(self, actor: str) -> bool:
        state = self._latch.current(self.clock())
        self._latch.release()
        with self._lock:
            self._announced = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if state is None:
            return False
        self._emit("released", actor, state)
        return True

    def _arm(self, seconds: float) -> None:
        # With no traffic nobody would ask: a timer notices the expiry.
        if self._timer is not None:
            self._timer.cancel()
        with contextlib.suppress(RuntimeError):
            self._timer = asyncio.get_running_loop().call_later(seconds + 0.01, self.current)

    def _emit(self, action: str, actor: str, state: BreakGlass) -> None:
        self._publisher.emit(
            NodeBreakGlass(
                node=self.node,
                action=action,
                reason=state.reason if action == "engaged" else "",
                until_ms=int(state.until.timestamp() * 1000),
                actor=actor,
            )
        )

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
