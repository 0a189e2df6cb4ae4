"""The reconciler: requests that will never have an outcome, recorded as
aborted.

A gateway that crashes in the middle of a stream leaves a
``request.received`` with no ``request.completed`` or ``request.failed``:
its ``traffic_event`` row had no status forever and its quota reservation
stayed held until it expired (15 minutes).  This worker follows the
requests' first and last events and, when one stays open past a bound,
publishes ``request.aborted`` for it: the projection records the row as
aborted (a late real outcome still wins), the quota processor releases the
reservation.

Which bound, from the node heartbeats (``streams.heartbeat``):

* ``node_restarted``: the node's current process started after the request
  was received (the process that had it is gone) - seconds after a restart;
* ``node_lost``: the node has not written a heartbeat for ``lost_after_s``
  (it crashed and has not come back, or lost its network) - within a minute;
* ``open_too_long``: no outcome after ``max_open_s`` (a node that writes no
  heartbeats, or a request that leaked): the last resort.

State: the open requests, in memory, with their ``request.received``
messages left unacknowledged on a durable consumer, so the consumer's
pending set is the state that survives: a restart re-reads from the oldest
unacknowledged message (the ack floor) and finds every open request again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

import nats.errors
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError
from prometheus_client import Counter, Gauge

from streams import codec, heartbeat, poison
from streams.consumer import Consumer, ConsumerGone, ConsumerSpec, Msg
from streams.events import Node, RequestAborted, RequestReceived, now_ms
from streams.kv_scan import scan
from streams.tasks import stop_tasks
from streams.topology import Topology

log = logging.getLogger("nexus.reconcile")

DURABLE = "reconcile"
# An outcome seen is remembered this long: a request.received redelivered
# after a restart must not reopen a request that already ended.
_FORGET_CLOSED_S = 600.0

OPEN = Gauge(
    "nexus_reconcile_open_requests", "Requests received and not yet ended, as the reconciler sees them"
)
ABORTED = Counter(
    "nexus_reconcile_aborted_total",
    "Requests recorded as aborted (cause: node_restarted, node_lost, open_too_long)",
    ["cause"],
)


@dataclass(slots=True)
class _Open:
    msg: Msg  # the request.received, unacknowledged while the request is open
    event: RequestReceived


@dataclass
class ReconcileSettings:
    # A node silent this long is lost (heartbeats every 5 s; room for a few
    # missed ones and clock skew between the node and this worker).
    lost_after_s: float = 30.0
    # No outcome after this long: aborted whatever the node says.
    max_open_s: float = 3600.0
    sweep_s: float = 5.0
    durable: str = DURABLE
    node: Node = field(default_factory=lambda: Node(kind="processor", id="reconcile"))


class Reconciler:
    def __init__(self, nc: NATS, topology: Topology, settings: ReconcileSettings | None = None) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._topology = topology
        self.settings = s = settings or ReconcileSettings()
        tags = ("request.received", "request.completed", "request.failed", "request.aborted")
        self.consumer = Consumer(
            nc,
            ConsumerSpec(
                stream=topology.traffic_stream,
                name=s.durable,
                identity=s.durable,
                subjects=tuple(topology.traffic_subject(t) for t in tags),
                ack="explicit",
                # Received events stay unacknowledged while their request
                # is open: room for that many, and for as long.
                ack_wait_s=s.max_open_s + 600,
                max_ack_pending=200_000,
                window=5000,
                description="reconcile: requests that never end are recorded as aborted",
            ),
            topology,
        )
        self.open: dict[str, _Open] = {}
        self._closed: dict[str, float] = {}
        self._seen_nodes: set[str] = set()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._open_consumer()
        self._task = asyncio.create_task(self._run(), name="reconcile")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=5)  # (see streams.tasks: not wait_for)
            await stop_tasks(self._task)
            self._task = None
        await self.consumer.close()

    async def _open_consumer(self) -> None:
        """Read from the oldest unacknowledged message: every request still
        open when this worker last stopped comes back at once (JetStream
        would redeliver them only after the ack wait)."""
        try:
            info = await self._js.consumer_info(self._topology.traffic_stream, self.settings.durable)
        except NotFoundError:
            await self.consumer.open("new")
            return
        floor = info.ack_floor.stream_seq if info.ack_floor is not None else 0
        await self.consumer.open(floor + 1 if floor else "all", reset=True)

    async def _run(self) -> None:
        next_sweep = time.monotonic() + self.settings.sweep_s
        while not self._stopping.is_set():
            try:
                msgs = await self.consumer.pass_others(await self.consumer.take(1.0))
                if msgs:
                    await self._handle(msgs)
                if time.monotonic() >= next_sweep:
                    await self.sweep()
                    next_sweep = time.monotonic() + self.settings.sweep_s
            except asyncio.CancelledError:
                raise
            except (ConsumerGone, ConnectionError, nats.errors.Error, OSError) as exc:
                # The open requests come back from the ack floor.
                log.warning("reconcile: %s; reading again", exc)
                self.open.clear()
                await self.consumer.close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 1.0)
                with contextlib.suppress(nats.errors.Error, OSError, TimeoutError, ConnectionError):
                    await self._open_consumer()

    async def _handle(self, msgs: list[Msg]) -> None:
        done: list[Msg] = []
        now = time.monotonic()
        for msg in msgs:
            try:
                event, _ = poison.decode_event(msg.data)
            except poison.Poison as exc:
                await self.consumer.dead_letter(msg, exc.code, exc.reason)  # acknowledges it
                continue
            rid = event.request_id
            if isinstance(event, RequestReceived):
                if not rid or rid in self._closed:
                    done.append(msg)
                elif rid in self.open:  # a redelivery: keep the newest delivery to ack
                    done.append(self.open[rid].msg)
                    self.open[rid] = _Open(msg, event)
                else:
                    self.open[rid] = _Open(msg, event)
            else:
                done.append(msg)
                self._closed[rid] = now
                ended = self.open.pop(rid, None)
                if ended is not None:
                    done.append(ended.msg)
        await self.consumer.ack(done)
        OPEN.set(len(self.open))

    async def _beats(self) -> dict[str, heartbeat.Heartbeat]:
        beats: dict[str, heartbeat.Heartbeat] = {}
        # Exact, unlike nats-py's keys() (streams.kv_scan); no bucket, no beats.
        for item in await scan(self._js, self._topology.heartbeat_bucket):
            beat = heartbeat.decode(item.value)
            if beat is not None:
                beats[item.key] = beat
        self._seen_nodes.update(beats)
        return beats

    async def sweep(self) -> int:
        """Abort the open requests whose node is gone; returns how many."""
        now_mono = time.monotonic()
        for rid in [r for r, t in self._closed.items() if now_mono - t > _FORGET_CLOSED_S]:
            del self._closed[rid]
        if not self.open:
            return 0
        beats = await self._beats()
        s = self.settings
        now = now_ms()
        aborted: list[tuple[_Open, str, str]] = []
        for o in self.open.values():
            ev = o.event
            key = heartbeat.key(ev.node)
            beat = beats.get(key)
            cause = reason = ""
            if beat is not None and beat.started_at_ms > ev.occurred_at_ms:
                cause, reason = "node_restarted", f"node {ev.node.id} restarted after it received the request"
            elif beat is not None and now - beat.beat_at_ms > s.lost_after_s * 1000:
                silent = (now - beat.beat_at_ms) / 1000
                cause, reason = "node_lost", f"node {ev.node.id} has not been seen for {silent:.0f} s"
            elif beat is None and key in self._seen_nodes:
                cause, reason = "node_lost", f"node {ev.node.id} is no longer known"
            elif now - ev.occurred_at_ms > s.max_open_s * 1000:
                cause, reason = "open_too_long", f"no outcome after {s.max_open_s:.0f} s"
            if cause:
                aborted.append((o, cause, reason))
        for o, cause, reason in aborted:
            await self._abort(o, cause, reason)
        OPEN.set(len(self.open))
        return len(aborted)

    async def _abort(self, o: _Open, cause: str, reason: str) -> None:
        ev = o.event
        event = RequestAborted(
            request_id=ev.request_id,
            trace_id=ev.trace_id,
            node=self.settings.node,
            tenant=ev.tenant,
            cause=cause,
            reason=reason,
            received_at_ms=ev.occurred_at_ms,
        )
        # One abort per request, whoever (or however often) decides it.
        await self._js.publish(
            self._topology.subject_for(event),
            codec.encode(event),
            headers={"Nats-Msg-Id": f"aborted:{ev.request_id}"},
        )
        log.info("reconcile: request %s aborted (%s)", ev.request_id, reason)
        ABORTED.labels(cause).inc()
        self.open.pop(ev.request_id, None)
        self._closed[ev.request_id] = time.monotonic()
        await self.consumer.ack([o.msg])
