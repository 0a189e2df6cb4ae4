"""The fleet keys of a node inside the NATS trust boundary (a gateway, a
processor): the node watches its desired state in the sync bucket
(``streams.fleet_wire.Pushed`` under ``desired_key``), applies the keys it
knows through its own ``apply`` and hands the outcomes to whoever reports
for it (``streams.snapshots.SnapshotFollower``, which writes them into the
node's report).  The key ``config`` is not applied here: it is the snapshot
the follower already runs.

A key it does not know is ``unsupported`` (the Hub shows it pending, and
the thing in drift after three re-pushes: an honest "this node does not
run that").  A key that failed is tried again at every heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import nats.errors
from nats.js.kv import KeyValue

from streams.config_fleet import CONFIG_KEY
from streams.fleet_wire import KeyOutcome, Pushed, desired_key, pushed_decoder

log = logging.getLogger("nexus.fleet.node")

KeysApply = Callable[[dict[str, Any]], Awaitable[dict[str, KeyOutcome]]]
Outcomes = Callable[[int, dict[str, KeyOutcome]], Awaitable[None]]


async def unsupported(keys: dict[str, Any]) -> dict[str, KeyOutcome]:
    """The ``apply`` of a node that runs no fleet key."""
    return {k: KeyOutcome(status="unsupported", error="this node does not apply it") for k in keys}


class KeyFollower:
    def __init__(self, kv: KeyValue, report_key: str, *, apply: KeysApply, outcomes: Outcomes) -> None:
        self._kv = kv
        self._key = desired_key(report_key)
        self._apply = apply
        self._outcomes = outcomes
        self._handled: tuple[int, int] = (-1, -1)
        self._last: Pushed | None = None
        self._failed = False
        self._lock = asyncio.Lock()

    async def run(self, closing: Callable[[], bool]) -> None:
        while not closing():
            watcher = None
            try:
                watcher = await self._kv.watch(self._key)
                while not closing():
                    try:
                        entry = await watcher.updates(timeout=5.0)  # type: ignore[no-untyped-call]
                    except nats.errors.TimeoutError:
                        continue
                    if entry is None or not entry.value:
                        continue
                    try:
                        pushed = pushed_decoder.decode(entry.value)
                    except (msgspec.ValidationError, msgspec.DecodeError):
                        log.warning("fleet: the desired state under %s is not readable", self._key)
                        continue
                    await self.handle(pushed)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("fleet: following %s failed (%s); retrying", self._key, type(exc).__name__)
                await asyncio.sleep(1.0)
            finally:
                if watcher is not None:
                    with contextlib.suppress(Exception):
                        await watcher.stop()  # type: ignore[no-untyped-call]

    async def handle(self, pushed: Pushed, *, again: bool = False) -> None:
        async with self._lock:
            at = (pushed.desired.version, pushed.push)
            if at == self._handled and not again:
                return
            keys = {k: v for k, v in pushed.desired.keys.items() if k != CONFIG_KEY}
            try:
                outcomes = await self._apply(keys)
            except Exception as exc:  # the node's own code: its failure is an outcome, not a crash
                log.exception("fleet: applying the desired keys failed")
                outcomes = {k: KeyOutcome(status="failed", error=f"{type(exc).__name__}") for k in keys}
            self._handled, self._last = at, pushed
            self._failed = any(o.status == "failed" for o in outcomes.values())
            await self._outcomes(pushed.desired.version, outcomes)

    async def retry_failed(self) -> None:
        """At a heartbeat: try again the keys that failed last time."""
        if self._failed and self._last is not None:
            await self.handle(self._last, again=True)
