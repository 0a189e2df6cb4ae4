"""The Hub's side of snapshots: whenever the state changes, compile it and
publish a new revision if the config nodes run on changed.

Changes are coalesced (an import of 200 items publishes a handful of
revisions, not 200) but never delayed by more than ``debounce_s``.  The
revision is the CONFIG sequence the state was compiled at, so it only goes
up and a replayed Hub publishes the same numbers.  A state that does not
compile to a valid config (which decide prevents, but an older stream may
hold) is not published: nodes keep the last good revision, and the error
shows in ``last_error`` (and /healthz).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import nats.errors
from nats.js.errors import Error as JetStreamError
from prometheus_client import Counter, Gauge

from hub.compile import compile_config
from hub.state import HubState
from streams.config import NexusConfig
from streams.config_base import ConfigError
from streams.config_validation import validate_config
from streams.snapshots import SnapshotHead, SnapshotStore
from streams.tasks import stop_tasks

log = logging.getLogger("nexus.hub")

PUBLISHED = Counter("nexus_hub_snapshots_published_total", "Config snapshots the Hub published")
FAILED = Counter("nexus_hub_snapshot_failures_total", "Config snapshots that could not be published")
REVISION = Gauge("nexus_hub_snapshot_revision", "Revision of the newest published snapshot")


def compile_for_nodes(state: HubState) -> NexusConfig:
    cfg, _ = compile_config(state, for_nodes=True)
    validate_config(cfg)
    return cfg


class SnapshotPublisher:
    def __init__(self, store: SnapshotStore, *, debounce_s: float = 0.05) -> None:
        self.store = store
        self._debounce = debounce_s
        self._state: HubState | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.head: SnapshotHead | None = None
        # The newest state sequence the head reflects (published, or found
        # to compile to the config already published).
        self.reflected_seq = 0
        self.last_error = ""
        self._published = asyncio.Condition()
        # Called when the head moves (the fleet re-signals the things that
        # run snapshots).
        self._head_listeners: list[Callable[[SnapshotHead], None]] = []

    def on_head(self, listener: Callable[[SnapshotHead], None]) -> None:
        self._head_listeners.append(listener)

    def changed(self, state: HubState) -> None:
        """A ControlPlane listener: note the newest state, publish soon."""
        self._state = state
        self._wake.set()

    async def start(self) -> None:
        await self.store.ensure()
        self.head = await self.store.head()
        self._task = asyncio.create_task(self._run(), name="hub-snapshots")

    async def stop(self) -> None:
        if self._task is not None:
            with contextlib.suppress(Exception):  # bounded: never hang a shutdown
                await stop_tasks(self._task, within_s=5)
            self._task = None

    async def wait_reflects(self, seq: int, *, timeout: float = 10.0) -> SnapshotHead:  # noqa: ASYNC109
        """The head once it reflects the state at CONFIG sequence ``seq``
        (its revision may be lower when the change did not touch what
        nodes run, e.g. a new user)."""
        async with asyncio.timeout(timeout), self._published:
            await self._published.wait_for(lambda: self.head is not None and self.reflected_seq >= seq)
        assert self.head is not None
        return self.head

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self._debounce)
            self._wake.clear()
            state = self._state
            if state is None or state.seq == 0:
                continue
            try:
                await self.publish(state)
            except (nats.errors.Error, JetStreamError, OSError) as exc:
                FAILED.inc()
                self.last_error = f"NATS: {type(exc).__name__}"
                log.warning(
                    "hub: publishing snapshot %d failed (%s); retrying", state.seq, type(exc).__name__
                )
                await asyncio.sleep(1.0)
                self._wake.set()

    async def publish(self, state: HubState) -> SnapshotHead | None:
        try:
            cfg = await asyncio.to_thread(compile_for_nodes, state)
        except ConfigError as exc:
            FAILED.inc()
            self.last_error = str(exc)
            log.error("hub: the state at %d does not compile to a valid config: %s", state.seq, exc)
            return None
        head = await self.store.publish(cfg, state.seq)
        self.last_error = ""
        if head is not None:
            PUBLISHED.inc()
            log.info("hub: published snapshot revision %d (%d bytes)", head.revision, head.size)
        else:
            head = await self.store.head()
        if head is not None:
            REVISION.set(head.revision)
            moved = self.head is None or self.head.revision != head.revision
            async with self._published:
                self.head = head
                self.reflected_seq = max(self.reflected_seq, state.seq)
                self._published.notify_all()
            if moved:
                for listener in self._head_listeners:
                    try:
                        listener(head)
                    except Exception:
                        log.exception("hub: a snapshot head listener failed")
        return head
