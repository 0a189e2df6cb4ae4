"""The publisher: events leave the request path without ever blocking it.

``emit`` encodes the event and appends it to an in-memory buffer; a
background task publishes batches with pipelined JetStream acks
(``Nats-Msg-Id`` = event id, so a retry inside the stream's duplicate window
is stored once).  When NATS is unreachable, or connected but not
acknowledging within ``ack_timeout_s`` (1 s: a hung server is treated as a
lost one), or refuses a message, the rest of the batch and everything after
it goes to the local outbox (``streams.outbox``, SQLite, fsync'ed), which is
drained in order once NATS answers again; while the outbox holds anything,
new events queue behind it, so the stream sees events in the order they
were emitted.

The journal (``streams.journal``, a memory-mapped file: a write is a copy
into the page cache, no system call) covers the time in between.  The
moment a batch is not acknowledged within ``journal_after_s`` (50 ms), or
NATS is away, or the outbox holds anything, every event still in memory is
written to it, and from then on each event as it is emitted (a request's
outcome at once, since the gateway writes the response right after it;
others at the end of the event loop's turn: one write per turn, not per
event).  Once NATS acknowledges promptly again and the outbox is empty,
journaling stops: it costs nothing while NATS is healthy.

What a crash can lose:

* the process (``kill -9``, the OOM killer, a segfault): while NATS
  acknowledges within 50 ms, the events of the last ~60 ms at most (the
  10 ms linger plus that deadline); while it does not (slow, hung, away),
  none that a request emitted before its turn of the loop ended, and no
  answered request.  The journal lives in the kernel's page cache; the next
  start moves what it still holds to the outbox, which publishes it.  (An
  event acknowledged just before the crash may be published again: inside
  the duplicate window JetStream stores it once, after it consumers
  recognise its event id.)
* the machine (power, kernel): also what the kernel had not written back,
  at most the last second (the journal is synced once a second); what
  reached the outbox is on disk.

While NATS is away or hung, what is emitted goes to the outbox every
0.1 s, also while the publisher waits on the server (a drain attempt, a
back-off), so the journal holds a fraction of a second of events however
long the outage.  (It held everything emitted during each wait: a 3 s hang
at ~2,300 answered requests a second overflowed 16 MiB, and a kill -9 then
lost the overflow.)  If the journal is full all the same (64 MiB of events
not yet acknowledged or outboxed: the outbox's disk slower than the
traffic), new events wait in memory only, counted in
``nexus_publish_journal_full_total``.  The file is sparse, and what is
written is unmapped from the process as it goes (``Journal._unmap``): its
pages are the kernel's page cache, not the gateway's RSS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from prometheus_client import Counter, Gauge

from streams import heartbeat
from streams.events import Node, RequestCompleted, RequestFailed, now_ms
from streams.jetstream import ensure_streams
from streams.journal import DEFAULT_SIZE, Journal
from streams.natswire import AckWriter, Refusal, WireClosed, WireUnsupported
from streams.outbox import Outbox, Row
from streams.tasks import stop_tasks
from streams.topology import Topology

log = logging.getLogger("nexus.publisher")

EVENTS_EMITTED = Counter("nexus_events_emitted_total", "Events handed to the publisher")
EVENTS_PUBLISHED = Counter("nexus_events_published_total", "Events acknowledged by JetStream")
EVENTS_SPILLED = Counter("nexus_events_outboxed_total", "Events written to the local outbox")
OUTBOX_DEPTH = Gauge("nexus_outbox_depth", "Events waiting in the local outbox")
BUFFER_DEPTH = Gauge("nexus_publish_buffer_depth", "Events waiting in memory to be published")
EVENTS_REJECTED = Counter(
    "nexus_events_rejected_total",
    "Events JetStream refused for good (over its size limit, say), set aside in the outbox's rejected table",
)
JOURNALING = Gauge(
    "nexus_publish_journaling",
    "1 while events are journaled as they are emitted (NATS slow, hung or away, or the outbox in use)",
)

_encoder = msgspec.json.Encoder()
# A batch leaves when the linger found company or ``batch_max`` events wait;
# a backlog leaves up to this many at a time.  Under overload the loop is
# saturated and each ack round trip spans several of its turns: at 512 per
# round trip the flusher published ~4,400 events/s while a gateway on one
# core emitted ~5,400, and a 30 s overload piled up ~30,000 events in memory
# (RSS 119 -> 256 MB at peak, 143 MB after; docs/performance.md, "Memory
# under overload").  Below nats-py's 4,000 pending acks (the TLS path
# publishes a batch through it).
CATCH_UP_BATCH = 2048
# A request's outcome is journaled the moment it is emitted: it comes before
# the response is written (in the same turn of the loop), so whatever a
# caller saw answered is in the journal before the caller saw it.
_JOURNAL_AT_ONCE = frozenset({RequestCompleted, RequestFailed})
# While NATS is away or hung, events emitted meanwhile go to the outbox
# this often (see Publisher._moving_meanwhile).
_MOVE_EVERY_S = 0.1
T = TypeVar("T")


class Publisher:
    def __init__(
        self,
        nats_url: str,
        topology: Topology,
        outbox_path: Path,
        *,
        name: str = "nexus-publisher",
        batch_max: int = 512,
        catch_up_max: int = CATCH_UP_BATCH,
        linger_s: float = 0.010,
        ack_timeout_s: float = 1.0,
        journal_after_s: float = 0.050,
        retry_backoff_s: float = 0.5,
        journal_bytes: int = DEFAULT_SIZE,
        sync_interval_s: float = 1.0,
        node: Node | None = None,
        heartbeat_s: float = heartbeat.INTERVAL_S,
        connect_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.topology = topology
        self._url = nats_url
        self._name = name
        self._outbox = Outbox(outbox_path)
        # The journal next to the outbox; what a killed process left in it
        # goes to the outbox first (in order: it is newer than the outbox).
        self._journal = Journal(outbox_path.with_suffix(".journal"), journal_bytes)
        if self._journal.stale:
            log.warning(
                "the journal holds %d events a stopped process never published; moving them to the outbox",
                len(self._journal.stale),
            )
            self._outbox.append(self._journal.stale)
        self._journal.reset()
        self._sync_interval = sync_interval_s
        self._journal_after = journal_after_s
        # The node this process serves as: its heartbeat says it is alive
        # and since when (streams.heartbeat; the reconciler reads them).
        self._node = node
        self._heartbeat_s = heartbeat_s
        self._started_ms = now_ms()
        self._beater: asyncio.Task[None] | None = None
        # Journaling: on until NATS first acknowledges promptly.  Journaled
        # events are always the oldest unresolved ones (switching on
        # journals everything still in memory first): this many of them.
        self._journaling = True
        self._journaled = 0
        JOURNALING.set(1)
        self._batch_max = batch_max
        self._catch_up = max(catch_up_max, batch_max)
        # A batch waits linger_s for company (unless it is full): each one
        # costs a socket write and an ack read whatever its size, and a
        # request emits several events.  Waiting also moves the write off
        # the request's path: its events go out after its answer did (the
        # write can hand the CPU to a NATS server on the same machine).
        self._linger = linger_s
        self._ack_timeout = ack_timeout_s
        self._backoff = retry_backoff_s
        self._connect_kwargs = connect_kwargs or {}
        self._buf: deque[Row] = deque()
        self._emitted = 0  # emitted since EVENTS_EMITTED was last brought up to date
        self._subjects: dict[type, str] = {}  # event class -> its subject
        self._unjournaled: list[Row] = []  # emitted this turn, not yet in the journal
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inflight = 0  # popped from the buffer, not yet acknowledged or outboxed
        self._moving = 0  # taken from the buffer, being written to the outbox
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._outboxed = self._outbox.count()
        OUTBOX_DEPTH.set(self._outboxed)
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._streams_ready = False
        self._task: asyncio.Task[None] | None = None
        self._connector: asyncio.Task[None] | None = None
        self._syncer: asyncio.Task[None] | None = None
        self._closing = False
        # The lean publishing connection (streams.natswire); None until the
        # first batch, and again after it broke.  A TLS server makes it
        # unsupported for good and nats-py publishes instead.
        self._wire: AckWriter | None = None
        self._wire_unsupported = False
        # Why the last publish stopped short, when JetStream said why.
        self._refusal: Refusal | None = None

    # --- the request-path side -------------------------------------------

    def emit(self, event: msgspec.Struct) -> None:
        """Queue one event.  Never blocks, never raises on I/O."""
        cls = type(event)
        subject = self._subjects.get(cls)
        if subject is None:
            subject = self._subjects[cls] = self.topology.subject_for(event)
        row = (subject, event.id, _encoder.encode(event))  # type: ignore[attr-defined]
        self._buf.append(row)
        if self._journaling:
            pending = self._unjournaled
            pending.append(row)
            if cls in _JOURNAL_AT_ONCE:
                self._journal_now()
            elif len(pending) == 1:
                # The first of this turn: journal it (and what follows) at
                # the turn's end.
                if self._loop is None:
                    self._loop = asyncio.get_running_loop()
                self._loop.call_soon(self._journal_now)
        # Counted here, added to the Prometheus counter per batch: its inc
        # takes a lock, and a request emits about nine events.
        self._emitted += 1
        self._idle.clear()
        self._wake.set()

    # --- lifecycle --------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected and self._streams_ready

    @property
    def outbox_depth(self) -> int:
        return self._outboxed

    @property
    def backlog(self) -> int:
        """Events waiting in memory to be published (the gateway's
        admission sheds past a bound: ingress/pipeline/admission.py)."""
        return len(self._buf)

    async def start(self) -> None:
        self._connector = asyncio.create_task(self._connect_forever(), name="publisher-connect")
        self._task = asyncio.create_task(self._run(), name="publisher-flush")
        self._syncer = asyncio.create_task(self._sync_forever(), name="publisher-journal-sync")
        if self._outboxed:
            log.warning("outbox holds %d events from an earlier run; draining", self._outboxed)
            self._idle.clear()
            self._wake.set()

    async def flush(self, timeout: float = 10.0) -> bool:  # noqa: ASYNC109 - a deadline is the API
        """Wait until every emitted event is acknowledged by JetStream.
        Returns False if that did not happen within ``timeout``."""
        try:
            await asyncio.wait_for(self._wait_idle(), timeout)
            return True
        except TimeoutError:
            return False

    async def _wait_idle(self) -> None:
        while self._buf or self._outboxed or self._inflight or self._moving:
            self._idle.clear()
            self._wake.set()
            await self._idle.wait()

    async def close(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Publish what can be published, keep the rest in the outbox, stop."""
        if self.connected:
            await self.flush(timeout)
        self._closing = True
        self._count_emitted()
        self._wake.set()
        for task in (self._task, self._connector, self._syncer, self._beater):
            if task is not None:
                await stop_tasks(task)
        await self._move_buffer()
        if self._wire is not None:
            self._wire.close()
            self._wire = None
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
        self._outbox.close()
        self._journal.close()

    def _journal_now(self) -> None:
        rows = self._unjournaled
        if rows:
            self._unjournaled = []
            self._journal.write(rows)
            self._journaled += len(rows)

    def _start_journaling(self, taken: list[Row]) -> None:
        """NATS is not acknowledging promptly: every unresolved event still
        only in memory (``taken`` from the buffer, then the buffer) into the
        journal, and every event from now on."""
        if self._journaling:
            return
        self._journaling = True
        JOURNALING.set(1)
        rows = taken + list(self._buf)
        # The oldest of them may be journaled still, from the last time.
        fresh = rows[self._journaled :]
        if fresh:
            self._journal.write(fresh)
            self._journaled = len(rows)
        log.warning("NATS does not acknowledge within %.0f ms: journaling events", self._journal_after * 1000)

    def _stop_journaling(self) -> None:
        """A batch acknowledged promptly and an empty outbox: NATS is
        healthy.  What is journaled stays so until it is resolved."""
        if self._journaling and not self._outboxed:
            self._journal_now()
            self._journaling = False
            JOURNALING.set(0)
            log.info("NATS acknowledges promptly again: journaling stopped")

    def _resolved(self, n: int) -> None:
        """The ``n`` oldest unresolved events are acknowledged or outboxed."""
        done = min(n, self._journaled)
        if done:
            self._journaled -= done
            self._journal.release(done)

    async def _sync_forever(self) -> None:
        """Write the journal back once a second: what a machine crash can
        lose (a process crash loses nothing)."""
        while True:
            await asyncio.sleep(self._sync_interval)
            await asyncio.to_thread(self._journal.sync)

    async def _to_outbox(self, rows: list[Row]) -> None:
        """The oldest ``len(rows)`` unresolved events (taken out of the
        buffer), into the outbox."""
        self._start_journaling(rows)  # the outbox is in use: NATS is away or slow
        self._journal_now()
        # Neither in the buffer nor counted in the outbox while the thread
        # writes them: ``flush`` must not take that for idle.
        self._moving += len(rows)
        try:
            await asyncio.to_thread(self._outbox.append, rows)
            self._resolved(len(rows))
            self._count_outboxed(len(rows))
        finally:
            self._moving -= len(rows)

    # --- connection -------------------------------------------------------

    async def _connect_forever(self) -> None:
        """Connect (retrying while NATS is away at start-up), then make sure
        the streams exist after every (re)connect."""
        while self._nc is None:
            try:
                self._nc = await nats.connect(
                    self._url,
                    name=self._name,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=2,
                    reconnected_cb=self._on_reconnect,
                    disconnected_cb=self._on_disconnect,
                    **self._connect_kwargs,
                )
            except Exception as exc:
                log.warning("NATS not reachable (%s); events go to the outbox", type(exc).__name__)
                await asyncio.sleep(self._backoff)
        self._js = self._nc.jetstream(timeout=self._ack_timeout)
        await self._ensure_streams()
        if self._node is not None:
            self._beater = asyncio.create_task(self._beat_forever(), name="publisher-heartbeat")

    async def _beat_forever(self) -> None:
        assert self._node is not None and self._js is not None
        node = self._node
        kv = None
        while True:
            try:
                if kv is None:
                    kv = await heartbeat.bucket(self._js, self.topology)
                beat = heartbeat.Heartbeat(
                    kind=node.kind,
                    id=node.id,
                    started_at_ms=self._started_ms,
                    beat_at_ms=now_ms(),
                    interval_s=self._heartbeat_s,
                )
                async with asyncio.timeout(self._heartbeat_s):
                    await kv.put(heartbeat.key(node), heartbeat.encode(beat))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS away or slow: the next beat tries again
                log.debug("heartbeat not written: %s", type(exc).__name__)
            await asyncio.sleep(self._heartbeat_s)

    async def _ensure_streams(self) -> None:
        while not self._streams_ready and self._js is not None:
            try:
                await ensure_streams(self._js, self.topology)
                self._streams_ready = True
                self._wake.set()
            except Exception as exc:
                log.warning("cannot ensure streams yet (%s)", type(exc).__name__)
                await asyncio.sleep(self._backoff)

    async def _on_reconnect(self) -> None:
        self._wake.set()

    async def _on_disconnect(self) -> None:
        if self._closing:
            return
        log.warning("NATS disconnected; events go to the outbox until it returns")

    # --- the flusher ------------------------------------------------------

    async def _run(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._flush_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("publisher loop error; retrying")
                await asyncio.sleep(self._backoff)
                self._wake.set()

    def _count_emitted(self) -> None:
        if self._emitted:
            EVENTS_EMITTED.inc(self._emitted)
            self._emitted = 0

    async def _flush_once(self) -> None:
        self._count_emitted()
        while self._buf or self._outboxed:
            BUFFER_DEPTH.set(len(self._buf))
            if self._outboxed or not self.connected:
                # Keep order: nothing overtakes what is already in the outbox.
                await self._move_buffer()
                drained = self.connected and await self._moving_meanwhile(self._drain_outbox())
                if not drained:
                    await self._moving_meanwhile(asyncio.sleep(self._backoff))
                    if self._closing:
                        return
                continue
            if self._linger and len(self._buf) < self._batch_max and not self._closing:
                await asyncio.sleep(self._linger)
            self._count_emitted()
            self._journal_now()  # (so the journaled events stay the oldest unresolved)
            batch = [self._buf.popleft() for _ in range(min(self._catch_up, len(self._buf)))]
            self._inflight = len(batch)
            try:
                sent, prompt = await self._publish_watched(batch)
                self._resolved(sent)
                if prompt:
                    self._stop_journaling()
                if sent < len(batch):
                    rows = batch[sent:] + list(self._buf)
                    self._buf.clear()
                    await self._to_outbox(rows)
            finally:
                self._inflight = 0
        BUFFER_DEPTH.set(0)
        self._idle.set()

    async def _publish_watched(self, batch: list[Row]) -> tuple[int, bool]:
        """Publish a batch: (how many were acknowledged, whether all of them
        were within ``journal_after_s``).  Past that deadline journaling
        starts (the batch and everything behind it)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        if self._journaling:
            sent = await self._publish(batch)
        else:
            task = asyncio.ensure_future(self._publish(batch))
            done, _ = await asyncio.wait({task}, timeout=self._journal_after)
            if not done:
                self._start_journaling(batch)
            sent = await task
        return sent, sent == len(batch) and loop.time() - started <= self._journal_after

    async def _publish(self, rows: list[Row]) -> int:
        """Publish with pipelined acks; return how many of ``rows``, from the
        start, JetStream acknowledged in order."""
        self._refusal = None
        if not self._wire_unsupported:
            acked = await self._publish_wire(rows)
            if acked is not None:
                EVENTS_PUBLISHED.inc(acked)
                return acked
        return await self._publish_nats_py(rows)

    async def _publish_wire(self, rows: list[Row]) -> int | None:
        """The batch on the lean connection (opened on first use and after
        it broke); None when this server needs nats-py (TLS)."""
        wire = self._wire
        if wire is None or wire.closed:
            try:
                wire = self._wire = await AckWriter.open(
                    self._url, name=self._name, timeout=self._ack_timeout
                )
            except WireUnsupported as exc:
                log.info("publishing through nats-py: %s", exc)
                self._wire_unsupported = True
                return None
            except (OSError, TimeoutError) as exc:
                log.warning("cannot open the publishing connection (%s)", type(exc).__name__)
                self._wire = None
                return 0
        try:
            acked = await wire.publish(rows, self._ack_timeout)
        except WireClosed:
            self._wire = None
            return 0
        self._refusal = wire.refused
        if acked == 0 and rows:
            # Not a single ack within the timeout: a hung server is a lost
            # one.  Drop the connection; the next attempt opens a new one
            # (which a hung server cannot complete either).
            log.warning(
                "no acknowledgement from NATS within %.1f s; events go to the outbox", self._ack_timeout
            )
            wire.close()
            self._wire = None
        return acked

    async def _publish_nats_py(self, rows: list[Row]) -> int:
        js = self._js
        if js is None:
            return 0
        futures: list[asyncio.Future[Any]] = []
        try:
            for subject, msg_id, data in rows:
                # wait_stall=None: with a timeout nats-py wraps the semaphore in
                # wait_for, which yields to the loop after every message, and its
                # flusher then makes one socket write per message.  A batch never
                # exceeds the client's pending-ack limit, and unacknowledged
                # futures are cancelled below, so the semaphore cannot starve.
                fut = await js.publish_async(subject, data, headers={"Nats-Msg-Id": msg_id}, wait_stall=None)
                futures.append(fut)
        except Exception as exc:
            log.warning("publish failed (%s)", type(exc).__name__)
            if isinstance(exc, nats.errors.MaxPayloadError):
                self._refusal = Refusal(f"over the server's max_payload: {exc}", permanent=True)
        acked = 0
        if futures:
            # One wait for the whole batch (a wait_for per future costs a
            # timer handle each); then count the in-order acknowledged prefix.
            await asyncio.wait(futures, timeout=self._ack_timeout)
            for fut in futures:
                if not fut.done() or fut.cancelled() or fut.exception() is not None:
                    if fut.done() and not fut.cancelled() and fut.exception() is not None:
                        err = fut.exception()
                        # 503 (no responders): no stream for it yet; other API
                        # errors are about the message itself.
                        self._refusal = Refusal(
                            f"{type(err).__name__}: {err}",
                            permanent=not isinstance(err, nats.errors.NoRespondersError),
                        )
                    break
                acked += 1
        for fut in futures[acked:]:
            fut.cancel()
        EVENTS_PUBLISHED.inc(acked)
        return acked

    async def _move_buffer(self) -> None:
        if self._buf:
            rows = list(self._buf)
            self._buf.clear()
            await self._to_outbox(rows)

    async def _moving_meanwhile(self, aw: Awaitable[T]) -> T:
        """Await ``aw`` (a drain of the outbox, a back-off) while moving
        what is emitted meanwhile to the outbox every ``_MOVE_EVERY_S``.
        NATS is away or hung here, and a drain stuck on a hung server takes
        a second an attempt, plus the back-off: events left in memory for
        that long at a high rate filled the journal (a 3 s hang at ~2,300
        requests a second overflowed 16 MiB), and what overflows it lives in
        memory only.  Moved as they come, the journal holds a tenth of a
        second of them.  Order holds: the outbox is read from its head and
        these go to its tail."""
        task = asyncio.ensure_future(aw)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=_MOVE_EVERY_S)
                await self._move_buffer()
                if done:
                    return task.result()
        finally:
            if not task.done():
                task.cancel()

    async def _drain_outbox(self) -> bool:
        """Publish the outbox in order; return False on the first failure."""
        loop = asyncio.get_running_loop()
        prompt = False
        while self._outboxed and self.connected:
            head = await asyncio.to_thread(self._outbox.head, self._batch_max)
            if not head:
                self._outboxed = 0
                break
            started = loop.time()
            sent = await self._publish([(s, m, d) for _, s, m, d in head])
            prompt = sent == len(head) and loop.time() - started <= self._journal_after
            if sent:
                await asyncio.to_thread(self._outbox.delete_through, head[sent - 1][0])
                self._count_outboxed(-sent)
            if sent < len(head):
                refusal = self._refusal
                if refusal is None or not refusal.permanent:
                    return False
                # It can never be published: set it aside, or it would hold
                # back every event behind it for good.
                seq, subject, msg_id, _ = head[sent]
                await asyncio.to_thread(self._outbox.set_aside, seq, refusal.reason)
                self._count_outboxed(-1)
                EVENTS_REJECTED.inc()
                log.error("event %s on %s refused for good (%s); set aside", msg_id, subject, refusal.reason)
        if prompt:  # drained, the last of it acknowledged promptly
            self._stop_journaling()
        return True

    def _count_outboxed(self, delta: int) -> None:
        self._outboxed = max(0, self._outboxed + delta)
        if delta > 0:
            EVENTS_SPILLED.inc(delta)
        OUTBOX_DEPTH.set(self._outboxed)
