"""The audit processor: streams -> hash-chained Postgres audit log.

Why nats-py pull consumers and not a FastStream subscriber: the chain needs
one writer appending in stream order, a whole fetched batch committed in one
transaction with its checkpoint, and that batch *held* (heartbeating
``in_progress``) while Postgres is away rather than redelivered out of order.
FastStream's subscriber acks per message and runs handlers concurrently;
a plain pull loop says exactly what happens.

Ordering rule: the Postgres checkpoint is the truth.  At start the durable
consumer is (re)created at checkpoint + 1, and a single in-process loop
fetches, commits and acks, so the chain follows stream order.  A Postgres
advisory lock makes extra instances standbys instead of second writers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

import asyncpg
import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from prometheus_client import CollectorRegistry

from processors.audit import retention, store
from processors.audit.metrics import metrics_for
from streams.config_siem import AuditConfig
from streams.topology import Topology

log = logging.getLogger("nexus.audit")

_WRITER_LOCK = "nexus.audit.writer"
_ACK_WAIT_S = 60.0


class AuditProcessor:
    def __init__(
        self,
        js: JetStreamContext,
        dsn: str,
        topology: Topology,
        *,
        config: AuditConfig | None = None,
        streams: Sequence[str] | None = None,
        consumer: str = "nexus_audit",
        registry: CollectorRegistry | None = None,
        retention_interval_s: float = 3600.0,
    ) -> None:
        self._js = js
        self._dsn = dsn
        self._pool_: asyncpg.Pool[Any] | None = None
        self._topology = topology
        self._config = config or AuditConfig()
        # Every stream of the topology by default: verdict and admin streams
        # added later are audited without touching this processor.
        self._streams = list(streams) if streams is not None else [s.name for s in topology.streams()]
        self._consumer = consumer
        self._metrics = metrics_for(registry)
        self._retention_interval_s = retention_interval_s
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._lock_conn: asyncpg.Connection[Any] | None = None
        self._positions: dict[str, int] = {}
        self._active = asyncio.Event()
        self._progress = asyncio.Condition()
        self._epoch: int | None = None

    @property
    def active(self) -> bool:
        """True once this instance holds the writer lock and is consuming."""
        return self._active.is_set()

    def position(self, stream: str) -> int:
        """The last stream sequence committed by this instance."""
        return self._positions.get(stream, 0)

    @property
    def _pool(self) -> asyncpg.Pool[Any]:
        assert self._pool_ is not None, "start() first"
        return self._pool_

    async def start(self) -> None:
        self._pool_ = await asyncpg.create_pool(self._dsn, min_size=1, max_size=4)
        await store.ensure_schema(self._pool)
        self._tasks.append(asyncio.create_task(self._run(), name="audit"))

    async def stop(self) -> None:
        self._stopping.set()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            # nats-py's fetch turns a cancellation into TimeoutError.
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await t
        self._tasks.clear()
        if self._lock_conn is not None:
            await self._lock_conn.close()
            self._lock_conn = None
        if self._pool_ is not None:
            await self._pool_.close()
            self._pool_ = None

    async def wait_for(self, stream: str, seq: int) -> None:
        """Return once ``stream`` is recorded up to ``seq`` (wrap it in
        ``asyncio.timeout``)."""
        async with self._progress:
            await self._progress.wait_for(lambda: self.position(stream) >= seq)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            await self._acquire_writer_lock()
            try:
                self._epoch = await store.claim_writer(self._pool)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("audit: cannot claim the chain yet: %s", type(exc).__name__)
                await asyncio.sleep(1.0)
                continue
            self._active.set()
            workers = [asyncio.create_task(self._consume(s), name=f"audit:{s}") for s in self._streams]
            workers.append(asyncio.create_task(self._retention_loop(), name="audit:retention"))
            try:
                await asyncio.gather(*workers)
            except store.Fenced as exc:
                # Another instance writes the chain now: stand by (and take
                # over again if it goes away).
                log.error("audit: %s; this instance stops writing", exc)
                self._active.clear()
                if self._lock_conn is not None:
                    await self._lock_conn.close()
                    self._lock_conn = None
                await asyncio.sleep(1.0)
            finally:
                for w in workers:
                    w.cancel()

    async def _acquire_writer_lock(self) -> None:
        while not self._stopping.is_set():
            try:
                if self._lock_conn is None:
                    self._lock_conn = await asyncpg.connect(self._dsn)
                got = await self._lock_conn.fetchval(
                    "SELECT pg_try_advisory_lock(hashtext($1))", _WRITER_LOCK
                )
                if got:
                    return
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("audit: cannot take the writer lock yet: %s", type(exc).__name__)
                self._lock_conn = None
            await asyncio.sleep(2.0)

    async def _subscribe(self, stream: str) -> JetStreamContext.PullSubscription:
        async with self._pool.acquire() as conn:
            done = await store.checkpoint(conn, self._consumer, stream)
        self._positions[stream] = done
        with contextlib.suppress(NotFoundError):
            await self._js.delete_consumer(stream, self._consumer)
        cfg = ConsumerConfig(
            durable_name=self._consumer,
            # One writer, strictly in order: acking the newest message of a
            # committed batch acknowledges the whole batch.
            ack_policy=AckPolicy.ALL,
            ack_wait=_ACK_WAIT_S,
            max_ack_pending=self._config.batch_size * 4,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if done else DeliverPolicy.ALL,
            opt_start_seq=done + 1 if done else None,
        )
        info = await self._js.stream_info(stream)
        subject = info.config.subjects[0] if info.config.subjects and len(info.config.subjects) == 1 else ">"
        return await self._js.pull_subscribe(subject, durable=self._consumer, stream=stream, config=cfg)

    async def _consume(self, stream: str) -> None:
        psub = await self._resubscribe(stream)
        while psub is not None and not self._stopping.is_set():
            try:
                await self._pump(psub, stream)
                return
            except _Gap as gap:
                # Messages delivered but never received (a connection lost
                # with them in flight).  Committing past them would skip
                # them for good (the checkpoint) and ack them (AckPolicy
                # ALL): start the consumer again from the checkpoint.
                self._metrics.failures.labels(stream).inc()
                log.warning("audit: %s; reading %s again from its checkpoint", gap, stream)
                with contextlib.suppress(nats.errors.Error, ValueError):
                    await psub.unsubscribe()
                psub = await self._resubscribe(stream)

    async def _resubscribe(self, stream: str) -> JetStreamContext.PullSubscription | None:
        backoff = 0.2
        while not self._stopping.is_set():
            try:
                return await self._subscribe(stream)
            except (nats.errors.Error, OSError, asyncpg.PostgresError) as exc:
                log.warning("audit: cannot subscribe to %s yet: %s", stream, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
        return None

    async def _pump(self, psub: JetStreamContext.PullSubscription, stream: str) -> None:
        # The next batch is fetched while this one commits.  One fetcher and
        # a FIFO keep stream order; a redelivered copy of a batch still in
        # the queue is skipped by the checkpoint.
        batches: asyncio.Queue[list[Msg]] = asyncio.Queue(maxsize=2)
        done = asyncio.Event()
        fetcher = asyncio.create_task(self._fetch_into(psub, stream, batches, done))
        try:
            while not self._stopping.is_set():
                await self._commit(stream, await batches.get())
        finally:
            # The event ends the fetcher even if a cancel is lost inside
            # nats-py's fetch (wait_for can swallow one in 3.11); the wait
            # is bounded so a stuck fetch never holds up the restart.
            done.set()
            fetcher.cancel()
            await asyncio.wait({fetcher}, timeout=2.0)

    async def _fetch_into(
        self,
        psub: JetStreamContext.PullSubscription,
        stream: str,
        out: asyncio.Queue[list[Msg]],
        done: asyncio.Event,
    ) -> None:
        lag_every = 0.0
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set() and not done.is_set():
            if loop.time() >= lag_every:
                await self._update_lag(psub, stream)
                lag_every = loop.time() + 1.0
            try:
                msgs = await self._fetch_batch(psub)
            # nats-py raises plain asyncio.TimeoutError from some fetch paths.
            except TimeoutError:
                continue
            except (nats.errors.Error, OSError) as exc:
                log.warning("audit: fetch from %s failed: %s", stream, type(exc).__name__)
                await asyncio.sleep(0.5)
                continue
            if msgs:  # a fetch can end early and empty (a server-side 408/409)
                await out.put(msgs)

    async def _fetch_batch(self, psub: JetStreamContext.PullSubscription) -> list[Msg]:
        """Up to batch_size messages: wait for the first, then top up with
        what arrives within a few milliseconds, so a backlog is written in
        large transactions rather than in the small batches a single
        no-wait pull returns."""
        size = self._config.batch_size
        msgs = await psub.fetch(size, timeout=1.0)
        while msgs and len(msgs) < size:
            try:
                more = await psub.fetch(size - len(msgs), timeout=0.02)
            except (TimeoutError, nats.errors.Error):
                break
            if not more:
                break
            msgs += more
        return msgs

    async def _commit(self, stream: str, msgs: list[Msg]) -> None:
        seqs = [_stream_seq(m) for m in msgs]
        items = sorted(zip(seqs, (m.data for m in msgs), strict=True), key=lambda x: x[0])
        await self._check_contiguous(stream, [seq for seq, _ in items])
        backoff = 0.2
        loop = asyncio.get_running_loop()
        heartbeat_at = loop.time() + _ACK_WAIT_S / 3
        while True:
            try:
                appended = await store.append(
                    self._pool,
                    consumer=self._consumer,
                    stream=stream,
                    messages=items,
                    store_bodies=self._config.store_bodies,
                    epoch=self._epoch,
                )
                break
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # Hold the batch (never skip ahead): the chain must follow
                # stream order, so nothing newer is fetched until it lands.
                self._metrics.failures.labels(stream).inc()
                log.warning("audit: append to Postgres failed (%s); retrying", type(exc).__name__)
                if loop.time() >= heartbeat_at:
                    for m in msgs:
                        with contextlib.suppress(nats.errors.Error):
                            await m.in_progress()
                    heartbeat_at = loop.time() + _ACK_WAIT_S / 3
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        self._metrics.recorded.labels(stream).inc(appended)
        if appended < len(items):
            self._metrics.redelivered.labels(stream).inc(len(items) - appended)
        async with self._progress:
            self._positions[stream] = max(self._positions.get(stream, 0), items[-1][0])
            self._progress.notify_all()
        # A lost ack only causes a redelivery, which the checkpoint skips.
        newest = msgs[max(range(len(msgs)), key=seqs.__getitem__)]
        with contextlib.suppress(nats.errors.Error):
            await newest.ack()

    async def _check_contiguous(self, stream: str, seqs: list[int]) -> None:
        """The consumer reads every subject of the stream, so the batch must
        continue the checkpoint without a hole; a hole is only allowed where
        the stream itself has no message any more (deleted, or aged out)."""
        expected = self._positions.get(stream, 0) + 1
        for seq in seqs:
            if seq < expected:
                continue  # a redelivery of what is committed: skipped by the store
            for missing in range(expected, seq):
                if await self._exists(stream, missing):
                    raise _Gap(f"stream sequence {missing} was never received (got {seq})")
            expected = seq + 1

    async def _exists(self, stream: str, seq: int) -> bool:
        try:
            await self._js.get_msg(stream, seq)
        except NotFoundError:
            return False
        return True

    async def _update_lag(self, psub: JetStreamContext.PullSubscription, stream: str) -> None:
        with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
            info = await psub.consumer_info()
            self._metrics.lag.labels(stream).set((info.num_pending or 0) + (info.num_ack_pending or 0))

    async def _retention_loop(self) -> None:
        while not self._stopping.is_set():
            await self.purge()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._retention_interval_s)

    async def purge(self) -> tuple[int, int]:
        """Apply the retention policy once: (bodies purged, spilled objects purged)."""
        bodies = spilled = 0
        try:
            bodies = await retention.purge_bodies(
                self._pool, older_than_days=self._config.body_retention_days
            )
            spilled = await retention.purge_spill(
                self._js,
                self._topology.spill_bucket,
                older_than=dt.timedelta(days=self._config.spill_retention_days),
            )
        except (OSError, asyncpg.PostgresError, nats.errors.Error) as exc:
            log.warning("audit: retention pass failed: %s", type(exc).__name__)
        return bodies, spilled


class _Gap(Exception):
    """A batch that does not continue the checkpoint."""


def _stream_seq(msg: Msg) -> int:
    """The stream sequence from the ack subject, without nats-py's Metadata
    (which also parses a timestamp and builds two objects per message):
    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>``,
    or the 11/12-token form with domain and account hash after ``ACK``."""
    tokens = (msg.reply or "").split(".")
    if len(tokens) == 9:
        return int(tokens[5])
    if len(tokens) >= 11 and tokens[0] == "$JS":
        return int(tokens[7])
    return msg.metadata.sequence.stream
