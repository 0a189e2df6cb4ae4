"""One store's reader: an ephemeral pull consumer that starts at the store's
checkpoint + 1, fetches batches and hands them to the store.

The store, not NATS, owns the position, so the consumer is disposable: after
a NATS restart, a lost connection or a database error the lane drops it,
re-reads the checkpoint and creates a new one from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec
import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from projections import metrics
from projections.schema import MigrationError
from projections.store import Item, Store, StoreBusy
from streams.codec import UnknownEvent, decode
from streams.topology import Topology

log = logging.getLogger("nexus.projections")

ProgressFn = Callable[[str, int, int], None]  # (store name, last applied sequence, target)

# After this long without a message, ask the server whether our consumer
# still exists: an ephemeral consumer does not survive a NATS restart, and a
# fetch against a vanished one just times out.
_PROBE_AFTER_IDLE_S = 2.0
_MAX_BACKOFF_S = 5.0
_REPLAY_ATTEMPTS = 5
# Long enough to read a whole chunk on a busy machine, short enough that
# the first message after a burst still lands well within a second.
_CATCH_UP_FETCH_S = 0.5
_FETCH_CHUNK = 2000


class Lane:
    def __init__(
        self,
        store: Store,
        js: JetStreamContext,
        topology: Topology,
        *,
        batch_size: int,
        fetch_timeout_s: float,
    ) -> None:
        self.store = store
        self._js = js
        self._topology = topology
        self._batch_size = batch_size
        self._fetch_timeout_s = fetch_timeout_s
        self.applied = 0
        self.last_error = ""
        self._changed = asyncio.Condition()
        self._label = store.name
        self._skipped = {
            reason: metrics.EVENTS_SKIPPED.labels(self._label, reason)
            for reason in ("undecodable", "unknown_type")
        }

    @property
    def stream(self) -> str:
        return self._topology.traffic_stream

    async def _advance(self, seq: int) -> None:
        self.applied = seq
        metrics.CHECKPOINT.labels(self._label).set(seq)
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, seq: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.applied >= seq)

    async def run(self, *, until: int | None = None, progress: ProgressFn | None = None) -> None:
        """Apply the stream to the store.  Live (``until`` None) this runs
        until cancelled and rides out NATS and database outages; with
        ``until`` it returns once that sequence is applied (replay)."""
        backoff = 0.2
        failures = 0
        while True:
            started = time.monotonic()
            try:
                await self.store.open()
                position = await self.store.position(self.stream)
                await self._advance(position)
                if until is not None and position >= until:
                    return
                await self._consume(position, until, progress)
                return
            except asyncio.CancelledError:
                raise
            except (StoreBusy, MigrationError):
                if until is not None:
                    raise
                # Somebody else holds the store (or its schema is newer than
                # us): keep trying, loudly, instead of exiting.
                log.exception("%s: cannot write; retrying", self._label)
                await self.store.close()
                await asyncio.sleep(_MAX_BACKOFF_S)
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                metrics.RESTARTS.labels(self._label).inc()
                await self.store.close()
                if time.monotonic() - started > 30:  # it ran fine for a while: a fresh outage
                    backoff, failures = 0.2, 0
                failures += 1
                if until is not None and failures > _REPLAY_ATTEMPTS:
                    raise  # a one-off rebuild reports a persistent problem instead of looping
                log.warning("%s: %s; resuming from the checkpoint", self._label, self.last_error)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)

    async def _consume(self, position: int, until: int | None, progress: ProgressFn | None) -> None:
        stream = self.stream
        name = f"proj-{self._label}-{uuid.uuid4().hex[:12]}"
        config = ConsumerConfig(
            name=name,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=position + 1,
            ack_policy=AckPolicy.NONE,
            filter_subject=self._topology.traffic_wildcard,
            inactive_threshold=30.0,
            mem_storage=True,
        )
        await self._js.add_consumer(stream, config=config)
        sub = await self._js.pull_subscribe_bind(consumer=name, stream=stream)
        # Fetching and decoding the next batch overlaps writing this one:
        # the database works in its own process (or DuckDB's thread) while
        # this loop parses messages.
        batches: asyncio.Queue[_Batch | BaseException] = asyncio.Queue(maxsize=2)
        fetcher = asyncio.create_task(self._fetch_loop(sub, name, position, batches))
        try:
            while True:
                batch = await batches.get()
                if isinstance(batch, BaseException):
                    raise batch
                await self._write(batch)
                if progress is not None and until is not None:
                    progress(self._label, self.applied, until)
                if until is not None and self.applied >= until:
                    return
        finally:
            fetcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fetcher
            await _quietly(sub.unsubscribe())
            await _quietly(self._js.delete_consumer(stream, name))

    async def _fetch_loop(
        self,
        sub: JetStreamContext.PullSubscription,
        name: str,
        position: int,
        out: asyncio.Queue[_Batch | BaseException],
    ) -> None:
        try:
            await self._fill(sub, name, position, out)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await out.put(exc)

    async def _fill(
        self,
        sub: JetStreamContext.PullSubscription,
        name: str,
        position: int,
        out: asyncio.Queue[_Batch | BaseException],
    ) -> None:
        last = position
        idle_since = time.monotonic()
        timeout = self._fetch_timeout_s
        # Fetch in chunks of at most _FETCH_CHUNK messages (~1.5 MB) and gather chunks
        # into one write batch: a small pull request bounds what the server
        # holds for us while this process is busy, a big write batch
        # amortises the transaction.
        chunk = min(self._batch_size, _FETCH_CHUNK)
        pending: _Batch | None = None
        while True:
            try:
                msgs = await sub.fetch(chunk, timeout=timeout)
            except TimeoutError:  # nats-py raises both its own and the builtin one
                msgs = []
            full = len(msgs) >= chunk
            # Catching up (a full chunk came back): the next fetch may take as
            # long as reading a whole chunk takes -- a fetch that times out
            # half-read leaves its messages in flight while the next one asks
            # for more, which on a busy machine piles up until the server
            # cuts the connection as a slow consumer.  Idle or trickling: the
            # short timeout bounds how long a row waits.
            timeout = _CATCH_UP_FETCH_S if full else self._fetch_timeout_s
            if msgs:
                idle_since = time.monotonic()
                decoded = self._decode(msgs, last)
                if decoded is not None:
                    last = decoded.last_seq
                    pending = decoded if pending is None else pending.extend(decoded)
            # Hand over when the chunk was the last one available or the
            # batch is big enough (handing every chunk to an idle writer makes
            # small transactions, and DuckDB pays tens of ms per statement).
            if pending is not None and (not full or pending.messages >= self._batch_size):
                await out.put(pending)
                pending = None
            if not msgs:
                if out.empty():
                    metrics.LAG.labels(self._label).set(0)
                if time.monotonic() - idle_since > _PROBE_AFTER_IDLE_S:
                    await self._js.consumer_info(self.stream, name)  # NotFoundError -> re-create
                    idle_since = time.monotonic()

    def _decode(self, msgs: list[Msg], after: int) -> _Batch | None:
        items: list[Item] = []
        last = after
        skipped = self._skipped
        pending = 0
        for msg in msgs:
            seq, pending = _seq_and_pending(msg)
            if seq <= last:
                continue
            last = seq
            try:
                event = decode(msg.data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                # A poison message must not wedge the projection; it is still
                # in the stream for whoever fixes the producer.
                log.error("%s: undecodable message at sequence %d skipped", self._label, seq)
                skipped["undecodable"].inc()
                continue
            if isinstance(event, UnknownEvent):
                skipped["unknown_type"].inc()
                continue
            items.append((seq, event))
        if last <= after:
            return None
        return _Batch(items, last, len(msgs), pending)

    async def _write(self, batch: _Batch) -> None:
        started = time.perf_counter()
        await self.store.apply(self.stream, batch.items, batch.last_seq)
        metrics.BATCH_SECONDS.labels(self._label).observe(time.perf_counter() - started)
        metrics.EVENTS_APPLIED.labels(self._label).inc(batch.messages)
        metrics.LAG.labels(self._label).set(batch.pending)
        await self._advance(batch.last_seq)


@dataclass(slots=True)
class _Batch:
    items: list[Item]
    last_seq: int
    messages: int
    pending: int  # messages left in the stream after this batch

    def extend(self, more: _Batch) -> _Batch:
        self.items.extend(more.items)
        self.last_seq = more.last_seq
        self.messages += more.messages
        self.pending = more.pending
        return self


def _seq_and_pending(msg: Msg) -> tuple[int, int]:
    """Stream sequence and pending count from the ack subject, without
    building nats-py's Metadata (which parses a timestamp per message).
    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>``,
    or the 11/12-token form with domain and account hash after ``ACK``."""
    tokens = (msg.reply or "").split(".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[8])
    if len(tokens) >= 11 and tokens[0] == "$JS":
        return int(tokens[7]), int(tokens[10])
    md = msg.metadata  # let nats-py raise its own error on anything else
    return md.sequence.stream, md.num_pending


async def _quietly(aw: Awaitable[object]) -> None:
    with contextlib.suppress(TimeoutError, NotFoundError, nats.errors.Error, OSError):
        await aw
