"""The projections' stream reader: one ephemeral pull consumer for all the
stores of a projector, starting after the lowest of their checkpoints.

Each message is read and decoded once, each batch folded once, and the batch
goes to every store at the same time (Postgres works in its own process,
DuckDB on its own thread).  A store whose checkpoint is ahead of the others
skips what it already has (``Store.apply``), so the stores stay independent
in what they contain; what they share is the reader, so an outage of one
store pauses the others until it is back.

The stores, not NATS, own the position, so the consumer is disposable: after
a NATS restart, a lost connection or a database error the lane drops it,
re-reads the checkpoints and creates a new one from the lowest.

Poison never blocks the lane (``streams.consumer``, ``streams.poison``): a
message that is not a known event of a supported version goes to the
dead-letter subject and the checkpoint moves past it; a NUL, a lone
surrogate or invalid UTF-8 is replaced by U+FFFD and the event applied (its
original kept on the dead-letter subject as ``sanitised``); and when a
store refuses a batch for what it contains (a number out of range, a value
too big for an index), the batch is split until the refused event is alone,
which goes to the dead-letter subject while the rest is applied.

Reading: ``streams.consumer`` (nats-py's ``fetch`` cost as much per message
as decoding and folding it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from projections import metrics
from projections.schema import MigrationError
from projections.store import FoldedItems, Item, Store, StoreBusy
from streams import deadletter, poison
from streams.consumer import PULL_CHUNK, Consumer, ConsumerSpec, Msg, StoreProblem, isolate
from streams.tasks import stop_tasks
from streams.topology import Topology

# Who the lanes are in dead letters and re-drives.
IDENTITY = "projections"

log = logging.getLogger("nexus.projections")

ProgressFn = Callable[[str, int, int], None]  # (store name, last applied sequence, target)

_MAX_BACKOFF_S = 5.0
_REPLAY_ATTEMPTS = 5


class StoreFailed(Exception):
    """A store raised: which one, so the lane reconnects only that one."""

    def __init__(self, store: Store, exc: BaseException) -> None:
        super().__init__(f"{store.name}: {type(exc).__name__}: {exc}")
        self.store = store


class Lane:
    def __init__(
        self,
        stores: Sequence[Store],
        nc: NATS,
        topology: Topology,
        *,
        batch_size: int,
        fetch_timeout_s: float,
    ) -> None:
        if not stores:
            raise ValueError("a lane needs at least one store")
        self.stores = list(stores)
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream()
        self._topology = topology
        self._batch_size = batch_size
        self._fetch_timeout_s = fetch_timeout_s
        self.applied: dict[str, int] = {s.name: 0 for s in self.stores}
        self.last_error = ""
        self._changed = asyncio.Condition()
        self._label = "-".join(s.name for s in self.stores)
        self._skipped: dict[str, list[Any]] = {}

    @property
    def stream(self) -> str:
        return self._topology.traffic_stream

    @property
    def position(self) -> int:
        """The lowest sequence every store has applied."""
        return min(self.applied.values())

    async def _advance(self, name: str, seq: int) -> None:
        self.applied[name] = seq
        metrics.CHECKPOINT.labels(name).set(seq)
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, seq: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.position >= seq)

    async def run(self, *, until: int | None = None, progress: ProgressFn | None = None) -> None:
        """Apply the stream to the stores.  Live (``until`` None) this runs
        until cancelled and rides out NATS and database outages; with
        ``until`` it returns once every store has applied that sequence
        (replay)."""
        backoff = 0.2
        failures = 0
        while True:
            started = time.monotonic()
            try:
                for store in self.stores:
                    try:
                        await store.open()
                        await self._advance(store.name, await store.position(self.stream))
                    except (StoreBusy, MigrationError):
                        raise
                    except Exception as exc:
                        raise StoreFailed(store, exc) from exc
                position = self.position
                if until is not None and position >= until:
                    return
                await self._consume(position, until, progress)
                return
            except asyncio.CancelledError:
                raise
            except (StoreBusy, MigrationError):
                if until is not None:
                    raise
                # Somebody else holds a store (or its schema is newer than
                # us): keep trying, loudly, instead of exiting.
                log.exception("%s: cannot write; retrying", self._label)
                for store in self.stores:
                    await store.close()
                await asyncio.sleep(_MAX_BACKOFF_S)
            except Exception as exc:
                self.last_error = str(exc) if isinstance(exc, StoreFailed) else f"{type(exc).__name__}: {exc}"
                for store in self.stores:
                    metrics.RESTARTS.labels(store.name).inc()
                if isinstance(exc, StoreFailed):
                    await exc.store.close()  # reconnects on the next round
                if time.monotonic() - started > 30:  # it ran fine for a while: a fresh outage
                    backoff, failures = 0.2, 0
                failures += 1
                if until is not None and failures > _REPLAY_ATTEMPTS:
                    raise  # a one-off rebuild reports a persistent problem instead of looping
                log.warning("%s: %s; resuming from the checkpoint", self._label, self.last_error)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)

    async def _consume(self, position: int, until: int | None, progress: ProgressFn | None) -> None:
        consumer = Consumer(
            self._nc,
            ConsumerSpec(
                stream=self.stream,
                name=f"proj-{self._label}",
                identity=IDENTITY,
                subjects=(self._topology.traffic_wildcard,),
                durable=False,
                ack="none",
                window=max(2 * self._batch_size, PULL_CHUNK),
            ),
            self._topology,
        )
        await consumer.open(position + 1)
        # Reading, decoding and folding the next batch overlaps writing this
        # one: the databases work in their own process / thread meanwhile.
        batches: asyncio.Queue[_Batch | BaseException] = asyncio.Queue(maxsize=2)
        fetcher = asyncio.create_task(self._fetch_loop(consumer, position, batches))
        try:
            while True:
                batch = await batches.get()
                if isinstance(batch, BaseException):
                    raise batch
                await self._write(batch, consumer)
                if progress is not None and until is not None:
                    for store in self.stores:
                        progress(store.name, self.applied[store.name], until)
                if until is not None and self.position >= until:
                    return
        finally:
            await stop_tasks(fetcher)
            await consumer.close()

    async def _fetch_loop(
        self, consumer: Consumer, position: int, out: asyncio.Queue[_Batch | BaseException]
    ) -> None:
        try:
            await self._fill(consumer, position, out)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await out.put(exc)

    async def _fill(
        self, consumer: Consumer, position: int, out: asyncio.Queue[_Batch | BaseException]
    ) -> None:
        last = position
        pending: _Batch | None = None
        while True:
            msgs = await consumer.take(self._fetch_timeout_s)
            if msgs:
                decoded = await self._decode(consumer, msgs, last)
                if decoded is not None:
                    last = decoded.last_seq
                    pending = decoded if pending is None else pending.extend(decoded)
            # Hand over once the stream has nothing more for us right now,
            # or the batch is big enough: a big write batch amortises the
            # transaction (DuckDB pays milliseconds per statement), and an
            # idle stream must not hold a row back.
            ready = not msgs or (pending is not None and pending.pending == 0)
            if pending is not None and (ready or pending.messages >= self._batch_size):
                pending.fold()
                await out.put(pending)
                pending = None
            if not msgs and out.empty():
                for store in self.stores:
                    metrics.LAG.labels(store.name).set(0)

    async def _decode(self, consumer: Consumer, msgs: list[Msg], after: int) -> _Batch | None:
        items: list[Item] = []
        last = after
        decode_event = poison.decode_event
        for msg in msgs:
            seq = msg.seq
            if seq <= last:
                continue
            last = seq
            if msg.redrive_for and not consumer.mine(msg):
                continue
            try:
                event, changes = decode_event(msg.data, sanitise=True)
            except poison.Poison as exc:
                # Still in the stream for whoever fixes the producer; kept
                # on the dead-letter subject for re-drive after a fix.
                await consumer.dead_letter(msg, exc.code, exc.reason)
                for counter in self._skipped_counters(exc.code):
                    counter.inc()
                continue
            if changes:
                await consumer.dead_letter(
                    msg, _code_of(changes), "; ".join(changes), disposition=deadletter.SANITISED
                )
            items.append((seq, event))
        if last <= after:
            return None
        return _Batch(items, last, len(msgs), msgs[-1].pending)

    def _skipped_counters(self, code: str) -> list[Any]:
        counters = self._skipped.get(code)
        if counters is None:
            counters = self._skipped[code] = [
                metrics.EVENTS_SKIPPED.labels(s.name, code) for s in self.stores
            ]
        return counters

    async def _write(self, batch: _Batch, consumer: Consumer) -> None:
        items = batch.items
        if len(self.stores) == 1:
            await self._write_one(self.stores[0], items, batch, consumer)
        else:
            results = await asyncio.gather(
                *(self._write_one(store, items, batch, consumer) for store in self.stores),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        for store in self.stores:
            await self._advance(store.name, batch.last_seq)

    async def _write_one(
        self, store: Store, items: Sequence[Item], batch: _Batch, consumer: Consumer
    ) -> None:
        started = time.perf_counter()
        stream = self.stream
        try:
            try:
                await store.apply(stream, items, batch.last_seq)
            except Exception as exc:
                refuses = getattr(store, "refuses", None)
                if refuses is None or not refuses(exc) or not items:
                    raise
                await self._isolate(store, items, batch, consumer)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise StoreFailed(store, exc) from exc
        metrics.BATCH_SECONDS.labels(store.name).observe(time.perf_counter() - started)
        metrics.EVENTS_APPLIED.labels(store.name).inc(batch.messages)
        metrics.LAG.labels(store.name).set(batch.pending)

    async def _isolate(self, store: Store, items: Sequence[Item], batch: _Batch, consumer: Consumer) -> None:
        """The store refused the batch for what it holds: find the event(s)
        it refuses, dead-letter them, apply everything else."""
        stream = self.stream

        async def apply(part: Sequence[Item]) -> None:
            await store.apply(stream, part, part[-1][0])

        async def poisoned(item: Item, exc: BaseException) -> None:
            seq = item[0]
            raw = await self._js.get_msg(stream, seq)
            subject = raw.subject.encode() if raw.subject else b""
            msg = Msg.of(subject, _ack_subject(stream, seq), raw.data or b"")
            code = poison.OUT_OF_RANGE if isinstance(exc, OverflowError) else poison.REJECTED
            if "index row size" in str(exc) or "exceeds" in str(exc):
                code = poison.OVERSIZED
            reason = f"{store.name} refused it: {type(exc).__name__}: {exc}"
            await consumer.dead_letter(msg, code, reason)
            for counter in self._skipped_counters(code):
                counter.inc()

        refuses = store.refuses
        try:
            await isolate(items, apply, refuses, poisoned)
        except StoreProblem:
            raise
        # The checkpoint covers the whole batch, refused events included.
        await store.apply(stream, [], batch.last_seq)


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

    def fold(self) -> None:
        """Fold the batch once, here, for every store it goes to."""
        self.items = FoldedItems(self.items)


def _ack_subject(stream: str, seq: int) -> bytes:
    """A stand-in ack subject for a message fetched by sequence (``Msg``
    reads its place from one)."""
    return b"$JS.ACK.%s.get.1.%d.%d.0.0" % (stream.encode(), seq, seq)


def _code_of(changes: Sequence[str]) -> str:
    text = " ".join(changes)
    if "NUL" in text:
        return poison.NUL
    if "surrogate" in text:
        return poison.INVALID_SURROGATE
    return poison.INVALID_UTF8
