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

Reading: see ``projections.pullwire`` (nats-py's ``fetch`` cost as much per
message as decoding and folding it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from projections import metrics
from projections.pullwire import PULL_CHUNK, Delivery, Puller, open_puller
from projections.schema import MigrationError
from projections.store import FoldedItems, Item, Store, StoreBusy
from streams.codec import UnknownEvent, decode
from streams.topology import Topology

log = logging.getLogger("nexus.projections")

ProgressFn = Callable[[str, int, int], None]  # (store name, last applied sequence, target)

# After this long without a message, ask the server whether our consumer
# still exists: an ephemeral consumer does not survive a NATS restart, and a
# pull against a vanished one just never answers.
_PROBE_AFTER_IDLE_S = 2.0
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
        self._skipped = {
            reason: [metrics.EVENTS_SKIPPED.labels(s.name, reason) for s in self.stores]
            for reason in ("undecodable", "unknown_type")
        }

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
        try:
            puller = await open_puller(self._nc, stream, name, window=max(2 * self._batch_size, PULL_CHUNK))
        except BaseException:
            await _quietly(self._js.delete_consumer(stream, name))
            raise
        # Reading, decoding and folding the next batch overlaps writing this
        # one: the databases work in their own process / thread meanwhile.
        batches: asyncio.Queue[_Batch | BaseException] = asyncio.Queue(maxsize=2)
        fetcher = asyncio.create_task(self._fetch_loop(puller, name, position, batches))
        try:
            while True:
                batch = await batches.get()
                if isinstance(batch, BaseException):
                    raise batch
                await self._write(batch)
                if progress is not None and until is not None:
                    for store in self.stores:
                        progress(store.name, self.applied[store.name], until)
                if until is not None and self.position >= until:
                    return
        finally:
            fetcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fetcher
            await _quietly(puller.stop())
            await _quietly(self._js.delete_consumer(stream, name))

    async def _fetch_loop(
        self, puller: Puller, name: str, position: int, out: asyncio.Queue[_Batch | BaseException]
    ) -> None:
        try:
            await self._fill(puller, name, position, out)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await out.put(exc)

    async def _fill(
        self, puller: Puller, name: str, position: int, out: asyncio.Queue[_Batch | BaseException]
    ) -> None:
        last = position
        idle_since = time.monotonic()
        stalled = 0
        pending: _Batch | None = None
        while True:
            msgs = await puller.take(self._fetch_timeout_s)
            if msgs:
                idle_since = time.monotonic()
                stalled = 0
                decoded = self._decode(msgs, last)
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
            if not msgs:
                if out.empty():
                    for store in self.stores:
                        metrics.LAG.labels(store.name).set(0)
                if time.monotonic() - idle_since > _PROBE_AFTER_IDLE_S:
                    info = await self._js.consumer_info(self.stream, name)  # NotFoundError -> re-create
                    # Messages wait for us, yet nothing arrived since the last
                    # probe either: the reader's connection or its pull
                    # requests are gone without a word (a half-open socket).
                    stalled = stalled + 1 if info.num_pending else 0
                    if stalled >= 2:
                        raise ConnectionError(f"pull reader stalled with {info.num_pending} messages pending")
                    idle_since = time.monotonic()

    def _decode(self, msgs: list[Delivery], after: int) -> _Batch | None:
        items: list[Item] = []
        last = after
        skipped = self._skipped
        pending = 0
        for reply, data in msgs:
            seq, pending = _seq_and_pending(reply)
            if seq <= last:
                continue
            last = seq
            try:
                event = decode(data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                # A poison message must not wedge the projection; it is still
                # in the stream for whoever fixes the producer.
                log.error("%s: undecodable message at sequence %d skipped", self._label, seq)
                for counter in skipped["undecodable"]:
                    counter.inc()
                continue
            if isinstance(event, UnknownEvent):
                for counter in skipped["unknown_type"]:
                    counter.inc()
                continue
            items.append((seq, event))
        if last <= after:
            return None
        return _Batch(items, last, len(msgs), pending)

    async def _write(self, batch: _Batch) -> None:
        items = batch.items
        if len(self.stores) == 1:
            await self._write_one(self.stores[0], items, batch)
        else:
            results = await asyncio.gather(
                *(self._write_one(store, items, batch) for store in self.stores), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        for store in self.stores:
            await self._advance(store.name, batch.last_seq)

    async def _write_one(self, store: Store, items: Sequence[Item], batch: _Batch) -> None:
        started = time.perf_counter()
        try:
            await store.apply(self.stream, items, batch.last_seq)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise StoreFailed(store, exc) from exc
        metrics.BATCH_SECONDS.labels(store.name).observe(time.perf_counter() - started)
        metrics.EVENTS_APPLIED.labels(store.name).inc(batch.messages)
        metrics.LAG.labels(store.name).set(batch.pending)


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


def _seq_and_pending(reply: bytes) -> tuple[int, int]:
    """Stream sequence and pending count from the ack subject, without
    building nats-py's Metadata (which parses a timestamp per message).
    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>``,
    or the 11/12-token form with domain and account hash after ``ACK``."""
    tokens = reply.split(b".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[8])
    if len(tokens) >= 11 and tokens[0] == b"$JS":
        return int(tokens[7]), int(tokens[10])
    raise ValueError(f"not a JetStream reply subject: {reply!r}")


async def _quietly(aw: Awaitable[object]) -> None:
    with contextlib.suppress(TimeoutError, NotFoundError, nats.errors.Error, OSError):
        await aw
