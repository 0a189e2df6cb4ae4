"""The SIEM forwarder: one durable JetStream pull consumer per sink (and
stream), reading the streams directly, never a database.

Why nats-py pull consumers rather than FastStream subscribers: a sink
outage must hold the fetched batch in place (heartbeating ``in_progress`` so
JetStream does not hand it out again) and stop fetching until the sink is
back, so the backlog stays in the stream and drains in order afterwards;
the dead-letter decision needs the attempt count per record and the lag
gauge needs the consumer's pending count.  A pull loop per sink states all
of that in a few lines; FastStream's push-style handlers would hide it.

Delivery is at least once: a record is acked only after its sink took it
(or it was dead-lettered), so a crash resends, never drops.  Every record
carries its event id, so receivers deduplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, DiscardPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError
from prometheus_client import CollectorRegistry

from processors.siem.metrics import SiemMetrics, metrics_for
from processors.siem.records import Undecodable, matches, to_record
from processors.siem.sinks import SendResult, SinkClient, SinkUnavailable, client_for
from streams.config_siem import SiemConfig, Sink
from streams.topology import Topology

log = logging.getLogger("nexus.siem")

ACK_WAIT_S = 30.0
_DLQ_MAX_AGE_S = 14 * 24 * 3600


def dlq_stream(topology: Topology) -> str:
    return f"{topology.prefix}_SIEM_DLQ"


def dlq_subject(topology: Topology, sink: str) -> str:
    return f"{topology.subject_root}.siem.dlq.{sink}"


def consumer_name(sink: str) -> str:
    return f"siem_{sink}"


async def ensure_dlq_stream(js: JetStreamContext, topology: Topology) -> None:
    name = dlq_stream(topology)
    cfg = StreamConfig(
        name=name,
        description="SIEM records a sink rejected max_attempts times, with the reason in headers",
        subjects=[f"{topology.subject_root}.siem.dlq.>"],
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=float(_DLQ_MAX_AGE_S),
        duplicate_window=120.0,
    )
    try:
        await js.stream_info(name)
    except NotFoundError:
        await js.add_stream(cfg)


class _Item:
    __slots__ = ("attempts", "msg", "record", "seq")

    def __init__(self, msg: Msg, seq: int, record: dict[str, Any]) -> None:
        self.msg = msg
        self.seq = seq
        self.record = record
        self.attempts = 0


class SinkWorker:
    """Forwards one stream to one sink."""

    def __init__(
        self,
        js: JetStreamContext,
        topology: Topology,
        stream: str,
        sink: Sink,
        client: SinkClient,
        metrics: SiemMetrics,
    ) -> None:
        self._js = js
        self._topology = topology
        self._stream = stream
        self._sink = sink
        self._client = client
        self._m = metrics
        self._stopping = asyncio.Event()
        self._held: list[Msg] = []
        self._last_warning = 0.0
        self._psub: JetStreamContext.PullSubscription | None = None

    @property
    def name(self) -> str:
        return self._sink.name

    async def subscribe(self) -> JetStreamContext.PullSubscription:
        durable = consumer_name(self._sink.name)
        try:
            await self._js.consumer_info(self._stream, durable)
        except NotFoundError:
            await self._js.add_consumer(
                self._stream,
                ConsumerConfig(
                    durable_name=durable,
                    description=f"SIEM sink {self._sink.name}",
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=ACK_WAIT_S,
                    max_ack_pending=self._sink.batch_size * 2,
                    deliver_policy=DeliverPolicy.ALL if self._sink.deliver == "all" else DeliverPolicy.NEW,
                ),
            )
        return await self._js.pull_subscribe_bind(durable, self._stream)

    async def run(self) -> None:
        psub = self._psub  # bound by start(), or bound here
        backoff = 0.2
        while psub is None and not self._stopping.is_set():
            try:
                psub = await self.subscribe()
            except (nats.errors.Error, OSError) as exc:
                log.warning("siem %s: cannot bind its consumer yet: %s", self.name, type(exc).__name__)
                await self._sleep(backoff)
                backoff = min(backoff * 2, 10.0)
        self._psub = psub
        while psub is not None and not self._stopping.is_set():
            try:
                msgs = await psub.fetch(self._sink.batch_size, timeout=1.0)
            # nats-py raises plain asyncio.TimeoutError from some fetch paths.
            except TimeoutError:
                await self._update_lag()
                continue
            except (nats.errors.Error, OSError) as exc:
                log.warning("siem %s: fetch failed: %s", self.name, type(exc).__name__)
                await self._sleep(0.5)
                continue
            if not msgs:  # a fetch can end early and empty (a server-side 408/409)
                await self._update_lag()
                continue
            await self._handle(msgs)
            # Pending after the last message of the batch: the lag now.
            self._m.lag.labels(self.name).set(msgs[-1].metadata.num_pending)

    def bound(self, psub: JetStreamContext.PullSubscription) -> None:
        self._psub = psub

    def stop(self) -> None:
        self._stopping.set()

    async def unsubscribe(self) -> None:
        # The durable consumer stays (it holds the sink's position); only
        # this process's subscription to it goes.
        if self._psub is not None:
            with contextlib.suppress(nats.errors.Error, ValueError):
                await self._psub.unsubscribe()
            self._psub = None

    async def release(self) -> None:
        """Give held messages back at once (a stop), so the next run, not
        the ack wait, decides when they are resent."""
        for m in self._held:
            with contextlib.suppress(nats.errors.Error):
                await m.nak()
        self._held = []

    async def _handle(self, msgs: list[Msg]) -> None:
        items: list[_Item] = []
        for m in msgs:
            meta = m.metadata
            if meta.num_delivered > 1:
                self._m.redelivered.labels(self.name).inc()
            try:
                record = to_record(
                    m.data,
                    stream=self._stream,
                    seq=meta.sequence.stream,
                    include_bodies=self._sink.include_bodies,
                )
            except Undecodable as exc:
                await self._dead_letter(m, meta.sequence.stream, f"undecodable: {exc}", 1)
                continue
            if not matches(self._sink.filter, record):
                self._m.filtered.labels(self.name).inc()
                await self._ack(m)
                continue
            items.append(_Item(m, meta.sequence.stream, record))
        self._held = [i.msg for i in items]
        await self._deliver(items)
        if not self._stopping.is_set():
            self._held = []

    async def _deliver(self, todo: list[_Item]) -> None:
        sink = self._sink
        backoff = sink.backoff_initial_s
        one_by_one = False
        while todo and not self._stopping.is_set():
            try:
                if one_by_one:
                    result = await self._send_singly(todo)
                else:
                    result = await self._client.send([i.record for i in todo])
            except SinkUnavailable as exc:
                self._m.failures.labels(self.name, "outage").inc()
                self._warn(
                    f"sink unavailable ({exc}); holding {len(todo)} records, retrying in {backoff:.1f}s"
                )
                self._m.retries.labels(self.name).inc()
                await self._hold(todo, backoff)
                backoff = min(backoff * 2, sink.backoff_max_s)
                continue
            delivered = [i for n, i in enumerate(todo) if n not in result.rejected and n not in result.retry]
            for i in delivered:
                await self._ack(i.msg)
            self._m.forwarded.labels(self.name).inc(len(delivered))
            if result.rejected and len(result.rejected) == len(todo) > 1 and not one_by_one:
                # The sink refused the batch as a whole: find the record it
                # objects to by sending them one at a time.
                one_by_one = True
                continue
            remaining: list[_Item] = []
            for n, i in enumerate(todo):
                if n in result.rejected:
                    i.attempts += 1
                    self._m.failures.labels(self.name, "rejected").inc()
                    if i.attempts >= sink.max_attempts:
                        await self._dead_letter(i.msg, i.seq, result.rejected[n], i.attempts)
                    else:
                        remaining.append(i)
                elif n in result.retry:
                    remaining.append(i)
            todo = remaining
            if todo:
                self._m.retries.labels(self.name).inc()
                await self._hold(todo, backoff)
                backoff = min(backoff * 2, sink.backoff_max_s)

    async def _send_singly(self, todo: list[_Item]) -> SendResult:
        rejected: dict[int, str] = {}
        retry: set[int] = set()
        for n, i in enumerate(todo):
            r = await self._client.send([i.record])
            if r.rejected:
                rejected[n] = next(iter(r.rejected.values()))
            elif r.retry:
                retry.add(n)
        return SendResult(rejected=rejected, retry=frozenset(retry))

    async def _dead_letter(self, msg: Msg, seq: int, reason: str, attempts: int) -> None:
        headers = {
            # Dedupe in the DLQ stream if a crash makes us do this twice.
            "Nats-Msg-Id": f"{self.name}:{self._stream}:{seq}",
            "Nexus-Sink": self.name,
            "Nexus-Stream": self._stream,
            "Nexus-Stream-Seq": str(seq),
            "Nexus-Attempts": str(attempts),
            "Nexus-Reason": reason[:200],
        }
        while not self._stopping.is_set():
            try:
                await self._js.publish(dlq_subject(self._topology, self.name), msg.data, headers=headers)
                break
            except (nats.errors.Error, OSError) as exc:
                self._warn(f"dead-letter publish failed ({type(exc).__name__}); retrying")
                await self._sleep(1.0)
        else:
            return
        log.warning(
            "siem %s: stream seq %d dead-lettered after %d attempts: %s", self.name, seq, attempts, reason
        )
        self._m.dead_lettered.labels(self.name).inc()
        await self._ack(msg)

    async def _hold(self, items: list[_Item], seconds: float) -> None:
        """Wait ``seconds`` keeping the held messages ours: JetStream would
        otherwise redeliver them after the ack wait."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while not self._stopping.is_set():
            left = end - loop.time()
            if left <= 0:
                return
            await self._sleep(min(left, ACK_WAIT_S / 3))
            for i in items:
                with contextlib.suppress(nats.errors.Error):
                    await i.msg.in_progress()
            await self._update_lag()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _ack(self, msg: Msg) -> None:
        # A lost ack means one redelivery: a duplicate the receiver dedupes.
        with contextlib.suppress(nats.errors.Error):
            await msg.ack()

    async def _update_lag(self) -> None:
        if self._psub is None:
            return
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            info = await self._psub.consumer_info()
            self._m.lag.labels(self.name).set((info.num_pending or 0) + (info.num_ack_pending or 0))

    def _warn(self, text: str) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._last_warning > 10.0:  # an outage must not flood the log
            self._last_warning = now
            log.warning("siem %s: %s", self.name, text)


class SiemForwarder:
    """Every enabled sink of a ``SiemConfig``, each with its own consumer."""

    def __init__(
        self,
        js: JetStreamContext,
        topology: Topology,
        config: SiemConfig,
        *,
        env: Mapping[str, str] | None = None,
        streams: Sequence[str] | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._js = js
        self._topology = topology
        self._config = config
        self._env = os.environ if env is None else env
        self._streams = list(streams) if streams is not None else [s.name for s in topology.streams()]
        self._metrics = metrics_for(registry)
        self._workers: list[SinkWorker] = []
        self._clients: list[SinkClient] = []
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def metrics(self) -> SiemMetrics:
        return self._metrics

    async def start(self) -> None:
        """Build every client first (a missing credential is a ConfigError
        before anything runs), then start one worker per sink and stream."""
        sinks = [s for s in self._config.sinks if s.enabled]
        # One client per worker: a syslog connection is not shared between
        # two concurrent writers.
        plan = [(s, stream, client_for(s, self._env)) for s in sinks for stream in self._streams]
        await ensure_dlq_stream(self._js, self._topology)
        for sink, stream, client in plan:
            self._clients.append(client)
            worker = SinkWorker(self._js, self._topology, stream, sink, client, self._metrics)
            # Bind now, so events published after start() are seen even by a
            # sink that starts at "new".
            worker.bound(await worker.subscribe())
            self._workers.append(worker)
            self._tasks.append(asyncio.create_task(worker.run(), name=f"siem:{sink.name}:{stream}"))

    async def stop(self) -> None:
        for w in self._workers:
            w.stop()
        # Workers notice the stop within a fetch timeout; cancel stragglers.
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=3.0)
            for t in pending:
                t.cancel()
            for t in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await t
        for w in self._workers:
            await w.release()
            await w.unsubscribe()
        for c in self._clients:
            await c.close()
        self._tasks.clear()
        self._workers.clear()
        self._clients.clear()
