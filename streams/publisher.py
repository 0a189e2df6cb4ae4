"""The publisher: events leave the request path without ever blocking it.

``emit`` encodes the event and appends it to an in-memory buffer; a
background task publishes batches with pipelined JetStream acks
(``Nats-Msg-Id`` = event id, so a retry inside the stream's duplicate window
is stored once).  When NATS is unreachable, slow, or refuses a message, the
rest of the batch and everything after it goes to the local outbox
(``streams.outbox``), which is drained in order once NATS answers again;
while the outbox holds anything, new events queue behind it, so the stream
sees events in the order they were emitted.

What a crash can lose: events emitted in the last few milliseconds (at most
the linger, 10 ms, plus one ack round trip) that were neither acknowledged
by JetStream nor written to the outbox (the in-memory batch).  A graceful stop flushes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from pathlib import Path
from typing import Any

import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from prometheus_client import Counter, Gauge

from streams.jetstream import ensure_streams
from streams.natswire import AckWriter, WireClosed, WireUnsupported
from streams.outbox import Outbox, Row
from streams.topology import Topology

log = logging.getLogger("nexus.publisher")

EVENTS_EMITTED = Counter("nexus_events_emitted_total", "Events handed to the publisher")
EVENTS_PUBLISHED = Counter("nexus_events_published_total", "Events acknowledged by JetStream")
EVENTS_SPILLED = Counter("nexus_events_outboxed_total", "Events written to the local outbox")
OUTBOX_DEPTH = Gauge("nexus_outbox_depth", "Events waiting in the local outbox")
BUFFER_DEPTH = Gauge("nexus_publish_buffer_depth", "Events waiting in memory to be published")

_encoder = msgspec.json.Encoder()


class Publisher:
    def __init__(
        self,
        nats_url: str,
        topology: Topology,
        outbox_path: Path,
        *,
        name: str = "nexus-publisher",
        batch_max: int = 512,
        linger_s: float = 0.010,
        ack_timeout_s: float = 2.0,
        retry_backoff_s: float = 0.5,
        connect_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.topology = topology
        self._url = nats_url
        self._name = name
        self._outbox = Outbox(outbox_path)
        self._batch_max = batch_max
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
        self._inflight = 0  # popped from the buffer, not yet acknowledged or outboxed
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
        self._closing = False
        # The lean publishing connection (streams.natswire); None until the
        # first batch, and again after it broke.  A TLS server makes it
        # unsupported for good and nats-py publishes instead.
        self._wire: AckWriter | None = None
        self._wire_unsupported = False

    # --- the request-path side -------------------------------------------

    def emit(self, event: msgspec.Struct) -> None:
        """Queue one event.  Never blocks, never raises on I/O."""
        cls = type(event)
        subject = self._subjects.get(cls)
        if subject is None:
            subject = self._subjects[cls] = self.topology.traffic_subject(str(cls.__struct_config__.tag))
        self._buf.append((subject, event.id, _encoder.encode(event)))  # type: ignore[attr-defined]
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

    async def start(self) -> None:
        self._connector = asyncio.create_task(self._connect_forever(), name="publisher-connect")
        self._task = asyncio.create_task(self._run(), name="publisher-flush")
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
        while self._buf or self._outboxed or self._inflight:
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
        for task in (self._task, self._connector):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._buf:
            rows = list(self._buf)
            self._buf.clear()
            await asyncio.to_thread(self._outbox.append, rows)
            self._count_outboxed(len(rows))
        if self._wire is not None:
            self._wire.close()
            self._wire = None
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
        self._outbox.close()

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
                if self._buf:
                    rows = list(self._buf)
                    self._buf.clear()
                    await asyncio.to_thread(self._outbox.append, rows)
                    self._count_outboxed(len(rows))
                if not self.connected or not await self._drain_outbox():
                    await asyncio.sleep(self._backoff)
                    if self._closing:
                        return
                continue
            if self._linger and len(self._buf) < self._batch_max and not self._closing:
                await asyncio.sleep(self._linger)
            self._count_emitted()
            batch = [self._buf.popleft() for _ in range(min(self._batch_max, len(self._buf)))]
            self._inflight = len(batch)
            try:
                sent = await self._publish(batch)
                if sent < len(batch):
                    rows = batch[sent:] + list(self._buf)
                    self._buf.clear()
                    await asyncio.to_thread(self._outbox.append, rows)
                    self._count_outboxed(len(rows))
            finally:
                self._inflight = 0
        BUFFER_DEPTH.set(0)
        self._idle.set()

    async def _publish(self, rows: list[Row]) -> int:
        """Publish with pipelined acks; return how many of ``rows``, from the
        start, JetStream acknowledged in order."""
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
            return await wire.publish(rows, self._ack_timeout)
        except WireClosed:
            self._wire = None
            return 0

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
        acked = 0
        if futures:
            # One wait for the whole batch (a wait_for per future costs a
            # timer handle each); then count the in-order acknowledged prefix.
            await asyncio.wait(futures, timeout=self._ack_timeout)
            for fut in futures:
                if not fut.done() or fut.cancelled() or fut.exception() is not None:
                    break
                acked += 1
        for fut in futures[acked:]:
            fut.cancel()
        EVENTS_PUBLISHED.inc(acked)
        return acked

    async def _drain_outbox(self) -> bool:
        """Publish the outbox in order; return False on the first failure."""
        while self._outboxed and self.connected:
            head = await asyncio.to_thread(self._outbox.head, self._batch_max)
            if not head:
                self._outboxed = 0
                break
            sent = await self._publish([(s, m, d) for _, s, m, d in head])
            if sent:
                await asyncio.to_thread(self._outbox.delete_through, head[sent - 1][0])
                self._count_outboxed(-sent)
            if sent < len(head):
                return False
        return True

    def _count_outboxed(self, delta: int) -> None:
        self._outboxed = max(0, self._outboxed + delta)
        if delta > 0:
            EVENTS_SPILLED.inc(delta)
        OUTBOX_DEPTH.set(self._outboxed)
