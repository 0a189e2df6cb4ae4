"""The control plane at run time: the state, kept equal to the fold of the
CONFIG stream, and the one place commands are decided and appended.

At start the whole stream is folded in; then a follower applies what other
writers (another Hub replica, an import) append.  A command is decided
against the current state and appended with the expectations of
``hub.store``; the writer's own event is applied at once (its sequence is
the state's + 1 by construction), so an answer always reflects its change.
When the stream moved in between, the Hub catches up and decides again;
when the *item* moved under an edit that named its version (If-Match, or
the version a PATCH was merged against), the answer is 409 with the version
now current.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from hub.commands import Command, DomainError, conflict
from hub.decide import decide
from hub.state import HubState, apply_raw, evolve, fold
from hub.store import ConfigStore, WrongSequence
from streams.tasks import stop_tasks

log = logging.getLogger("nexus.hub")

Listener = Callable[[HubState], None]

_MAX_RETRIES = 50


@dataclass(frozen=True)
class Outcome:
    state: HubState  # the state right after the command (or the current one)
    seq: int  # the sequence the command's event is stored at (0: nothing changed)
    replayed: bool = False  # the command id was already applied: nothing new was done


class ControlPlane:
    def __init__(self, store: ConfigStore) -> None:
        self.store = store
        self.state = HubState()
        self._lock = asyncio.Lock()
        self._listeners: list[Listener] = []
        self._progress = asyncio.Condition()
        self._follower: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._stopping = asyncio.Event()

    def on_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def start(self) -> None:
        await self.store.ensure()
        last = await self.store.last_seq()
        events = [item async for item in self.store.read(1, until=last)] if last else []
        self._set(await asyncio.to_thread(fold, HubState(), events))
        log.info("hub: state at CONFIG sequence %d (%d events)", self.state.seq, len(events))
        self._follower = asyncio.create_task(self._follow(), name="hub-follow")
        self._ready.set()

    async def stop(self) -> None:
        self._stopping.set()
        if self._follower is not None:
            # The event ends the follower within a fetch timeout even if the
            # cancel is lost inside nats-py's fetch; the wait is bounded.
            with contextlib.suppress(Exception):
                await stop_tasks(self._follower, within_s=2.0)
            self._follower = None

    async def _follow(self) -> None:
        async for seq, data in self.store.read(self.state.seq + 1, stop=self._stopping):
            if seq > self.state.seq:
                self._set(apply_raw(self.state, data, seq))

    def _set(self, state: HubState) -> None:
        self.state = state
        for listener in self._listeners:
            try:
                listener(state)
            except Exception:
                log.exception("hub: a state listener failed")
        self._notify()

    def _notify(self) -> None:
        async def wake() -> None:
            async with self._progress:
                self._progress.notify_all()

        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().create_task(wake())

    async def wait_for(self, seq: int) -> HubState:
        """The state once it has folded in ``seq`` (wrap in a timeout)."""
        async with self._progress:
            await self._progress.wait_for(lambda: self.state.seq >= seq)
        return self.state

    async def catch_up(self) -> HubState:
        return await self.wait_for(await self.store.last_seq())

    async def execute(self, cmd: Command) -> Outcome:
        """Decide and append ``cmd``; raises DomainError when refused."""
        async with self._lock:
            for _ in range(_MAX_RETRIES):
                state = self.state
                done = state.commands.get(cmd.id)
                if done is not None:
                    return Outcome(state, done, replayed=True)
                event = await asyncio.to_thread(decide, state, cmd)
                if event is None:
                    return Outcome(state, 0)
                item_version = state.version_of(event.aggregate, event.aggregate_id)
                try:
                    appended = await self.store.append(
                        event,
                        msg_id=cmd.id,
                        expected_subject_seq=item_version,
                        expected_stream_seq=state.seq,
                    )
                except WrongSequence:
                    # Someone else wrote: fold their events in, then decide
                    # again (an edit that named its version gets a 409 from
                    # decide if it was that item).
                    await asyncio.wait_for(self.catch_up(), 10)
                    if cmd.expected_version is not None:
                        now = self.state.version_of(event.aggregate, event.aggregate_id)
                        if now != cmd.expected_version:
                            raise conflict(event.aggregate, event.aggregate_id, now) from None
                    continue
                if appended.duplicate:
                    after = await asyncio.wait_for(self.wait_for(appended.seq), 10)
                    return Outcome(after, appended.seq, replayed=True)
                if self.state.seq == appended.seq - 1:
                    self._set(evolve(self.state, event, appended.seq))
                after = await asyncio.wait_for(self.wait_for(appended.seq), 10)
                return Outcome(after, appended.seq)
            raise DomainError(503, "busy", "the configuration changes too fast to decide; retry")
