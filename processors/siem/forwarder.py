"""The SIEM forwarder: one durable JetStream consumer per sink (and stream),
reading the streams directly (``streams.consumer``), never a database.

Why the shared pull consumer rather than FastStream subscribers: a sink
outage must hold the fetched batch in place (heartbeating ``in_progress`` so
JetStream does not hand it out again) and stop fetching until the sink is
back, so the backlog stays in the stream and drains in order afterwards;
a syslog stream must keep what it wrote unacknowledged until the receiver
proved to be alive after it; the dead-letter decision needs the attempt
count per record.  A pull loop per sink states all of that in a few lines.

Delivery is at least once: a record is acked only after its sink took it
(HTTP: the response; syslog over TCP/TLS: the receiver's TCP acknowledged
every byte and the connection stayed open ``confirm_after_s`` longer,
``processors.siem.sinks``), or it was dead-lettered.  A crash, an outage or
a receiver restart resends, never drops; every record carries its event id,
so receivers deduplicate.  UDP is best effort (``sinks``).

A record larger than the sink's maximum message size goes as several
messages (``processors.siem.split``); it counts as delivered when all of
them are.  Dead letters (a record the sink rejected ``max_attempts`` times,
a message that is not an event) go to the dead-letter subject as consumer
``siem_<sink>`` (``nexus deadletters``); a re-drive sends them to that sink
only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from prometheus_client import CollectorRegistry

from processors.siem.metrics import SiemMetrics, metrics_for
from processors.siem.records import Undecodable, matches, to_record
from processors.siem.sinks import SendResult, SinkClient, SinkUnavailable, client_for
from streams import poison
from streams.config_siem import SiemConfig, Sink, SyslogSink
from streams.consumer import Consumer, ConsumerGone, ConsumerSpec, Msg
from streams.tasks import stop_tasks
from streams.topology import Topology

log = logging.getLogger("nexus.siem")

ACK_WAIT_S = 30.0


def consumer_name(sink: str) -> str:
    return f"siem_{sink}"


class _Item:
    __slots__ = ("attempts", "messages", "msg", "record")

    def __init__(self, msg: Msg, record: dict[str, Any], messages: list[bytes]) -> None:
        self.msg = msg
        self.record = record
        self.messages = messages  # what the record became on the wire (parts)
        self.attempts = 0


class SinkWorker:
    """Forwards one stream to one sink."""

    def __init__(
        self,
        nc: NATS,
        topology: Topology,
        stream: str,
        sink: Sink,
        client: SinkClient,
        metrics: SiemMetrics,
    ) -> None:
        self._topology = topology
        self._stream = stream
        self._sink = sink
        self._client = client
        self._m = metrics
        self._stopping = asyncio.Event()
        self._last_warning = 0.0
        # Written, waiting for the receiver's confirmation: (ticket, items).
        self._unconfirmed: deque[tuple[int, list[_Item]]] = deque()
        # Delivered to us while a batch was held: handled next, and kept
        # ours meanwhile (their ack wait restarted with the held batch's).
        self._waiting: list[Msg] = []
        confirming = isinstance(sink, SyslogSink) and sink.transport != "udp"
        window = sink.batch_size * 2
        self.consumer = Consumer(
            nc,
            ConsumerSpec(
                stream=stream,
                name=consumer_name(sink.name),
                identity=consumer_name(sink.name),
                ack="explicit",
                ack_wait_s=ACK_WAIT_S,
                # A syslog stream keeps about confirm_after_s of traffic
                # unacknowledged: room for it, or delivery would stall.
                max_ack_pending=max(window, 20_000) if confirming else window,
                window=window,
                description=f"SIEM sink {sink.name}",
            ),
            topology,
        )

    @property
    def name(self) -> str:
        return self._sink.name

    async def open(self) -> None:
        """Bind the sink's durable consumer (created at ``deliver`` the first
        time; after that it keeps the sink's place)."""
        await self.consumer.open("all" if self._sink.deliver == "all" else "new")

    async def run(self) -> None:
        backoff = 0.2
        while not self._stopping.is_set():
            try:
                if self._waiting:
                    msgs, self._waiting = self._waiting, []
                else:
                    # Short waits while batches wait for confirmation.
                    msgs = await self.consumer.take(0.2 if self._unconfirmed else 1.0)
                msgs = await self.consumer.pass_others(msgs)
                if msgs:
                    await self._handle(msgs)
                    self._m.lag.labels(self.name, self._stream).set(msgs[-1].pending)
                else:
                    await self._update_lag()
                await self._settle()
                backoff = 0.2
            except (ConsumerGone, ConnectionError, nats.errors.Error, OSError) as exc:
                log.warning("siem %s: %s; reading again", self.name, exc)
                await self.consumer.close()
                while not self._stopping.is_set():
                    await self._sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
                    try:
                        await self.open()
                        break
                    except (nats.errors.Error, OSError, TimeoutError) as err:
                        log.warning(
                            "siem %s: cannot bind its consumer yet: %s", self.name, type(err).__name__
                        )

    def stop(self) -> None:
        self._stopping.set()

    async def release(self) -> None:
        """Give unconfirmed and waiting messages back at once (a stop), so
        the next run, not the ack wait, resends them."""
        for _, items in self._unconfirmed:
            await self.consumer.nak([i.msg for i in items])
        self._unconfirmed.clear()
        await self.consumer.nak(self._waiting)
        self._waiting = []
        await self.consumer.close()

    async def _handle(self, msgs: list[Msg]) -> None:
        items: list[_Item] = []
        for m in msgs:
            if m.delivered > 1:
                self._m.redelivered.labels(self.name).inc()
            try:
                record = to_record(
                    m.data, stream=self._stream, seq=m.seq, include_bodies=self._sink.include_bodies
                )
            except Undecodable as exc:
                await self._dead_letter(m, poison.UNDECODABLE, f"undecodable: {exc}", 1)
                continue
            if not matches(self._sink.filter, record):
                self._m.filtered.labels(self.name).inc()
                await self.consumer.ack([m])
                continue
            items.append(_Item(m, record, self._client.prepare(record)))
        await self._deliver(items)

    async def _send(self, items: list[_Item]) -> SendResult:
        """Send the items' messages; a result in terms of items (an item is
        delivered when all its messages are, rejected if any is)."""
        messages: list[bytes] = []
        owner: list[int] = []
        for n, item in enumerate(items):
            messages.extend(item.messages)
            owner.extend([n] * len(item.messages))
        result = await self._client.send(messages)
        rejected: dict[int, str] = {}
        for k, reason in result.rejected.items():
            rejected.setdefault(owner[k], reason)
        retry = {owner[k] for k in result.retry} - set(rejected)
        return SendResult(rejected=rejected, retry=frozenset(retry), ticket=result.ticket)

    async def _deliver(self, todo: list[_Item]) -> None:
        sink = self._sink
        backoff = sink.backoff_initial_s
        one_by_one = False
        while todo and not self._stopping.is_set():
            try:
                if one_by_one:
                    result = await self._send_singly(todo)
                else:
                    result = await self._send(todo)
            except SinkUnavailable as exc:
                self._m.failures.labels(self.name, "outage").inc()
                self._warn(
                    f"sink unavailable ({exc}); holding {len(todo)} records, retrying in {backoff:.1f}s"
                )
                self._m.retries.labels(self.name).inc()
                # Batches written before on the connection that just failed
                # may be lost with it: they go again, first.
                todo = self._take_unconfirmed() + todo
                await self._hold(todo, backoff)
                backoff = min(backoff * 2, sink.backoff_max_s)
                continue
            delivered = [i for n, i in enumerate(todo) if n not in result.rejected and n not in result.retry]
            if result.ticket:
                self._unconfirmed.append((result.ticket, delivered))
            else:
                await self._delivered(delivered)
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
                        await self._dead_letter(i.msg, poison.REJECTED, result.rejected[n], i.attempts)
                    else:
                        remaining.append(i)
                elif n in result.retry:
                    remaining.append(i)
            todo = remaining
            if todo:
                self._m.retries.labels(self.name).inc()
                await self._hold(todo, backoff)
                backoff = min(backoff * 2, sink.backoff_max_s)

    async def _delivered(self, items: list[_Item]) -> None:
        await self.consumer.ack([i.msg for i in items])
        self._m.forwarded.labels(self.name).inc(len(items))
        parts = sum(len(i.messages) for i in items) - len(items)
        if parts:
            self._m.split.labels(self.name).inc(parts)

    async def _settle(self) -> None:
        """Acknowledge what the receiver has confirmed; send again what a
        connection that died had not."""
        if not self._unconfirmed:
            return
        try:
            ticket = await self._client.confirmed()
        except SinkUnavailable as exc:
            self._m.failures.labels(self.name, "outage").inc()
            self._warn(f"{exc}; sending them again")
            await self._deliver(self._take_unconfirmed())
            return
        while self._unconfirmed and self._unconfirmed[0][0] <= ticket:
            await self._delivered(self._unconfirmed.popleft()[1])

    def _take_unconfirmed(self) -> list[_Item]:
        items = [i for _, batch in self._unconfirmed for i in batch]
        self._unconfirmed.clear()
        if items:
            self._m.resent.labels(self.name).inc(len(items))
        return items

    async def _send_singly(self, todo: list[_Item]) -> SendResult:
        rejected: dict[int, str] = {}
        retry: set[int] = set()
        ticket = 0
        for n, i in enumerate(todo):
            r = await self._send([i])
            ticket = max(ticket, r.ticket)
            if r.rejected:
                rejected[n] = next(iter(r.rejected.values()))
            elif r.retry:
                retry.add(n)
        return SendResult(rejected=rejected, retry=frozenset(retry), ticket=ticket)

    async def _dead_letter(self, msg: Msg, code: str, reason: str, attempts: int) -> None:
        while not self._stopping.is_set():
            try:
                await self.consumer.dead_letter(msg, code, f"{reason} (after {attempts} attempt(s))")
                break
            except ConnectionError as exc:
                self._warn(f"dead-letter publish failed ({exc}); retrying")
                await self._sleep(1.0)
        else:
            return
        self._m.dead_lettered.labels(self.name).inc()

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
            # What the reader received meanwhile is ours too: keep it from
            # being redelivered (and so sent twice) while we wait.
            with contextlib.suppress(ConsumerGone, ConnectionError, nats.errors.Error):
                self._waiting += await self.consumer.take(0)
            await self.consumer.progress([i.msg for i in items] + self._waiting)
            await self._update_lag()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _update_lag(self) -> None:
        with contextlib.suppress(nats.errors.Error, TimeoutError, ConnectionError):
            info = await self.consumer.info()
            self._m.lag.labels(self.name, self._stream).set(
                (info.num_pending or 0) + (info.num_ack_pending or 0)
            )

    def _warn(self, text: str) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._last_warning > 10.0:  # an outage must not flood the log
            self._last_warning = now
            log.warning("siem %s: %s", self.name, text)


class SiemForwarder:
    """Every enabled sink of a ``SiemConfig``, each with its own consumer."""

    def __init__(
        self,
        nc: NATS,
        topology: Topology,
        config: SiemConfig,
        *,
        env: Mapping[str, str] | None = None,
        streams: Sequence[str] | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._nc = nc
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
        plan = [
            (s, stream, client_for(s, self._env, udp_refused=self._metrics.udp_refused.labels(s.name)))
            for s in sinks
            for stream in self._streams
        ]
        for sink, stream, client in plan:
            self._clients.append(client)
            worker = SinkWorker(self._nc, self._topology, stream, sink, client, self._metrics)
            # Bind now, so events published after start() are seen even by a
            # sink that starts at "new".
            await worker.open()
            self._workers.append(worker)
            self._tasks.append(asyncio.create_task(worker.run(), name=f"siem:{sink.name}:{stream}"))

    async def stop(self) -> None:
        for w in self._workers:
            w.stop()
        # Workers notice the stop within a read timeout; cancel stragglers.
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=3.0)
            await stop_tasks(*self._tasks)
        for w in self._workers:
            await w.release()
        for c in self._clients:
            await c.close()
        self._tasks.clear()
        self._workers.clear()
        self._clients.clear()
