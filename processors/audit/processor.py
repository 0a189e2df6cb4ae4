"""The audit processor: streams -> hash-chained Postgres audit log.

Why the shared pull consumer (``streams.consumer``) and not a FastStream
subscriber: the chain needs one writer appending in stream order, a whole
fetched batch committed in one transaction with its checkpoint, and that
batch *held* (heartbeating ``in_progress``) while Postgres is away rather
than redelivered out of order.  FastStream's subscriber acks per message and
runs handlers concurrently; a plain pull loop says exactly what happens.

Nothing that arrives stops the chain: a payload that is not JSON is recorded
as an ``undecodable`` record (its digest), facts the indexed columns cannot
hold are stored with U+FFFD or a digest in the column (the chained content
keeps them exact), and a message Postgres still refuses is found by
splitting the batch and recorded as an ``unstorable`` record, its original
kept on the dead-letter subject.

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
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError
from prometheus_client import CollectorRegistry

from processors.audit import store
from processors.audit.metrics import metrics_for
from streams import deadletter, poison, retention
from streams.config_siem import AuditConfig
from streams.consumer import Consumer, ConsumerGone, ConsumerSpec, Msg, isolate
from streams.tasks import stop_tasks
from streams.topology import Topology

log = logging.getLogger("nexus.audit")

IDENTITY = "audit"  # in dead letters and re-drives
_WRITER_LOCK = "nexus.audit.writer"
_ACK_WAIT_S = 60.0


class AuditProcessor:
    def __init__(
        self,
        nc: NATS,
        dsn: str,
        topology: Topology,
        *,
        config: AuditConfig | None = None,
        streams: Sequence[str] | None = None,
        consumer: str = "nexus_audit",
        registry: CollectorRegistry | None = None,
        retention_interval_s: float = 3600.0,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream()
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
        await stop_tasks(*self._tasks)
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

    async def _subscribe(self, stream: str) -> Consumer:
        async with self._pool.acquire() as conn:
            done = await store.checkpoint(conn, self._consumer, stream)
        self._positions[stream] = done
        consumer = Consumer(
            self._nc,
            ConsumerSpec(
                stream=stream,
                name=self._consumer,
                identity=IDENTITY,
                # One writer, strictly in order: acking the newest message of a
                # committed batch acknowledges the whole batch.
                ack="all",
                ack_wait_s=_ACK_WAIT_S,
                max_ack_pending=self._config.batch_size * 4,
                window=self._config.batch_size * 2,
                description="audit: the hash-chained trail",
            ),
            self._topology,
        )
        # The Postgres checkpoint is the truth: the consumer starts after it.
        await consumer.open(done + 1 if done else "all", reset=True)
        return consumer

    async def _consume(self, stream: str) -> None:
        consumer = await self._resubscribe(stream)
        while consumer is not None and not self._stopping.is_set():
            try:
                await self._pump(consumer, stream)
                return
            except _Gap as gap:
                # Messages delivered but never received (a connection lost
                # with them in flight).  Committing past them would skip
                # them for good (the checkpoint) and ack them (AckPolicy
                # ALL): start the consumer again from the checkpoint.
                self._metrics.failures.labels(stream).inc()
                log.warning("audit: %s; reading %s again from its checkpoint", gap, stream)
            except (ConsumerGone, ConnectionError, nats.errors.Error) as exc:
                self._metrics.failures.labels(stream).inc()
                log.warning("audit: %s; reading %s again from its checkpoint", exc, stream)
            await consumer.close()
            consumer = await self._resubscribe(stream)

    async def _resubscribe(self, stream: str) -> Consumer | None:
        backoff = 0.2
        while not self._stopping.is_set():
            try:
                return await self._subscribe(stream)
            except (nats.errors.Error, OSError, TimeoutError, asyncpg.PostgresError) as exc:
                log.warning("audit: cannot subscribe to %s yet: %s", stream, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
        return None

    async def _pump(self, consumer: Consumer, stream: str) -> None:
        # The next batch is fetched while this one commits.  One fetcher and
        # a FIFO keep stream order; a redelivered copy of a batch still in
        # the queue is skipped by the checkpoint.
        batches: asyncio.Queue[list[Msg] | BaseException] = asyncio.Queue(maxsize=2)
        fetcher = asyncio.create_task(self._fetch_into(consumer, stream, batches))
        try:
            while not self._stopping.is_set():
                batch = await batches.get()
                if isinstance(batch, BaseException):
                    raise batch
                await self._commit(consumer, stream, batch)
        finally:
            await stop_tasks(fetcher)

    async def _fetch_into(
        self, consumer: Consumer, stream: str, out: asyncio.Queue[list[Msg] | BaseException]
    ) -> None:
        lag_every = 0.0
        loop = asyncio.get_running_loop()
        try:
            while not self._stopping.is_set():
                if loop.time() >= lag_every:
                    await self._update_lag(consumer, stream)
                    lag_every = loop.time() + 1.0
                msgs = await self._fetch_batch(consumer)
                if msgs:
                    await out.put(msgs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the reader broke: the pump re-subscribes
            await out.put(exc)

    async def _fetch_batch(self, consumer: Consumer) -> list[Msg]:
        """Up to about batch_size messages: wait for the first, then top up
        with what arrives within a few milliseconds, so a backlog is written
        in large transactions rather than in the small batches a single
        read returns."""
        size = self._config.batch_size
        msgs = await consumer.take(1.0)
        while msgs and len(msgs) < size:
            more = await consumer.take(0.02)
            if not more:
                break
            msgs += more
        return msgs

    async def _commit(self, consumer: Consumer, stream: str, msgs: list[Msg]) -> None:
        msgs = sorted(msgs, key=lambda m: m.seq)
        await self._check_contiguous(stream, [m.seq for m in msgs])
        # Re-drives meant for another consumer are passed, and covered by
        # the checkpoint.
        items = [(m.seq, m.data) for m in msgs if consumer.mine(m)]
        through = msgs[-1].seq
        backoff = 0.2
        loop = asyncio.get_running_loop()
        heartbeat_at = loop.time() + _ACK_WAIT_S / 3
        while True:
            try:
                appended = await self._append(items, stream, through)
                break
            except store.Fenced:
                raise
            except Exception as exc:
                if _refused(exc) and items:
                    appended = await self._isolate(consumer, stream, items, msgs, through)
                    break
                if not isinstance(exc, (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)):
                    raise
                # Hold the batch (never skip ahead): the chain must follow
                # stream order, so nothing newer is fetched until it lands.
                self._metrics.failures.labels(stream).inc()
                log.warning("audit: append to Postgres failed (%s); retrying", type(exc).__name__)
                if loop.time() >= heartbeat_at:
                    await consumer.progress(msgs)
                    heartbeat_at = loop.time() + _ACK_WAIT_S / 3
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        self._metrics.recorded.labels(stream).inc(appended)
        if appended < len(items):
            self._metrics.redelivered.labels(stream).inc(len(items) - appended)
        async with self._progress:
            self._positions[stream] = max(self._positions.get(stream, 0), through)
            self._progress.notify_all()
        # A lost ack only causes a redelivery, which the checkpoint skips.
        await consumer.ack_through(msgs[-1])

    async def _append(
        self, items: Sequence[tuple[int, bytes]], stream: str, through: int, unstorable: str = ""
    ) -> int:
        return await store.append(
            self._pool,
            consumer=self._consumer,
            stream=stream,
            messages=items,
            store_bodies=self._config.store_bodies,
            epoch=self._epoch,
            through=through,
            unstorable=unstorable,
        )

    async def _isolate(
        self,
        consumer: Consumer,
        stream: str,
        items: list[tuple[int, bytes]],
        msgs: list[Msg],
        through: int,
    ) -> int:
        """Postgres refused the batch for a value in it: append it in halves
        until the refused message is alone, record that one as an
        ``unstorable`` digest (the chain stays gap-free) and keep its
        original on the dead-letter subject."""
        by_seq = {m.seq: m for m in msgs}
        appended = 0

        async def apply(part: Sequence[tuple[int, bytes]]) -> None:
            nonlocal appended
            appended += await self._append(part, stream, part[-1][0])

        async def poisoned(item: tuple[int, bytes], exc: BaseException) -> None:
            nonlocal appended
            reason = f"postgres refused it: {type(exc).__name__}: {exc}"
            await consumer.dead_letter(
                by_seq[item[0]], poison.REJECTED, reason, disposition=deadletter.SANITISED
            )
            appended += await self._append([item], stream, item[0], unstorable=reason[:300])

        await isolate(items, apply, _refused, poisoned)
        await self._append([], stream, through)
        return appended

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

    async def _update_lag(self, consumer: Consumer, stream: str) -> None:
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            info = await consumer.info()
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


def _refused(exc: BaseException) -> bool:
    """Postgres (or asyncpg's encoder) refused a value, not the connection:
    class 22 (data exception) or 54 (program limit exceeded)."""
    return isinstance(
        exc, (asyncpg.DataError, asyncpg.ProgramLimitExceededError, UnicodeError, OverflowError)
    )
