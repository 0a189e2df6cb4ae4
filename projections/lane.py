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

Reading: nats-py's ``fetch`` costs a task, a ``wait_for`` and a ``uuid4`` per
message (about as much as decoding it).  ``_Puller`` publishes the pull
requests itself and collects messages from a subscription callback, keeping
at most ``window`` messages requested or unread (the backpressure a slow
store needs: nothing piles up in the client or the server).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from projections import metrics
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
# Messages per pull request (~1 MB), and how long a request waits for them.
_PULL_CHUNK = 2500
_PULL_EXPIRES_S = 10.0


class StoreFailed(Exception):
    """A store raised: which one, so the lane reconnects only that one."""

    def __init__(self, store: Store, exc: BaseException) -> None:
        super().__init__(f"{store.name}: {type(exc).__name__}: {exc}")
        self.store = store


class ConsumerGone(Exception):
    """The server ended our pull consumer (deleted, leadership change, ...)."""


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
        puller = _Puller(self._nc, stream, name, window=max(2 * self._batch_size, _PULL_CHUNK))
        await puller.start()
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
        self, puller: _Puller, name: str, position: int, out: asyncio.Queue[_Batch | BaseException]
    ) -> None:
        try:
            await self._fill(puller, name, position, out)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await out.put(exc)

    async def _fill(
        self, puller: _Puller, name: str, position: int, out: asyncio.Queue[_Batch | BaseException]
    ) -> None:
        last = position
        idle_since = time.monotonic()
        pending: _Batch | None = None
        while True:
            msgs = await puller.take(self._fetch_timeout_s)
            if msgs:
                idle_since = time.monotonic()
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


class _Puller:
    """A pull consumer read by hand: pull requests of ``_PULL_CHUNK``
    messages are published to the consumer's next-message subject with our
    inbox as the reply, messages land in ``_buf`` from the subscription's
    callback, and requests are topped up so that at most ``window`` messages
    are requested or unread."""

    def __init__(self, nc: NATS, stream: str, consumer: str, *, window: int) -> None:
        self._nc = nc
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = nc.new_inbox()
        self._window = window
        self._chunk = min(_PULL_CHUNK, window)
        self._request = json.dumps({"batch": self._chunk, "expires": int(_PULL_EXPIRES_S * 1e9)}).encode()
        self._buf: list[Msg] = []
        self._ready = asyncio.Event()
        self._credit = 0  # messages requested and neither delivered nor expired
        self._requests_end = 0.0  # when the last request sent expires
        self._error: Exception | None = None
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_msg)

    async def stop(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.unsubscribe()

    async def _on_msg(self, msg: Msg) -> None:
        if msg.reply:  # a stream message: its reply subject is its $JS.ACK metadata
            self._buf.append(msg)
            self._credit -= 1
            self._ready.set()
            return
        headers = msg.headers or {}
        status = headers.get("Status", "")
        if status == "100":  # an idle heartbeat
            return
        ended = headers.get("Nats-Pending-Messages")
        # A request ended before it was filled (408 expired, 404 nothing
        # there, 409 the server ended it): its remainder is no longer owed.
        self._credit = max(0, self._credit - (int(ended) if ended else self._chunk))
        if status == "409" or (status and status not in ("404", "408")):
            self._error = ConsumerGone(f"pull consumer: {status} {headers.get('Description', '')}".strip())
        self._ready.set()

    async def _top_up(self) -> None:
        now = time.monotonic()
        if self._credit and now > self._requests_end + 1.0:
            self._credit = 0  # every request has expired; their endings were lost (a reconnect)
        while self._credit + len(self._buf) + self._chunk <= self._window:
            await self._nc.publish(self._next, self._request, reply=self._inbox)
            self._credit += self._chunk
            self._requests_end = now + _PULL_EXPIRES_S

    async def take(self, wait_s: float) -> list[Msg]:
        """What has arrived, waiting up to ``wait_s`` when nothing has."""
        await self._top_up()
        if not self._buf and self._error is None:
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._ready.wait()
        if self._error is not None:
            raise self._error
        msgs, self._buf = self._buf, []
        return msgs


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
