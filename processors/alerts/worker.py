"""The alerts worker: a FastStream application on the event streams.

    quota.alert, hook.stage, audit.verified,  ─► rules ─► dedup ─► alert.raised ─┐
    <prefix>.deadletter.siem_*, heartbeats,                                      │
    the fleet's sync records                                                     │
                                                                                  ▼
            alert.delivery ◄─ rate limit, attempts with backoff ◄─ channels ◄─ alert.raised
                  │
                  └─► the delivery log (Postgres: alert, alert_delivery), rebuilt by replay

Every source is a FastStream subscriber except ``hook.stage``, read at the
traffic's own volume by the lean shared consumer (``stage_lane``: 6 us of
CPU per event against 134 us, measured).

Two hops on purpose: a rule's handler only decides and publishes
``alert.raised`` (then acknowledges its source event); delivery reads
``alert.raised`` from the stream, so an alert raised is delivered even if
the worker dies in between, and the delivery log is built from events
alone.  Handlers are thin: the rules (``rules``), dedup (``dedup``) and
delivery (``delivery``) are where the logic lives.

The configuration (``alerts:``) comes from a file or the Hub's snapshots
and may change while running (``set_config``): rules apply at once;
channels are rebuilt, and a set that cannot be built (a secret missing)
changes nothing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import os
import socket
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from faststream.nats.annotations import NatsMessage
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from prometheus_client import Counter

from processors.alerts import channels, dedup, rules
from processors.alerts.delivery import Sleep, deliver
from processors.alerts.kvmirror import KvMirror
from processors.alerts.ratelimit import TokenBucket
from processors.alerts.stage_lane import StageLane
from streams import codec, deadletter, heartbeat
from streams.config_alerts import (
    SEVERITY_RANK,
    AlertsConfig,
    AuditChainRule,
    BlockRateRule,
    BudgetRule,
    NodeDriftRule,
    NodeOfflineRule,
    Rule,
    SiemDeadLetterRule,
)
from streams.events import Node
from streams.events_alerts import AlertDelivery, AlertRaised, AuditVerified
from streams.events_compliance import StageDecision
from streams.events_quota import QuotaAlert
from streams.faststream_app import make_broker
from streams.jetstream import connect, ensure_streams
from streams.tasks import stop_tasks
from streams.topology import Topology

log = logging.getLogger("nexus.alerts")

IDENTITY = "alerts"

RAISED = Counter("nexus_alerts_raised_total", "Alerts raised (sent to their channels)", ["rule"])
SUPPRESSED = Counter("nexus_alerts_suppressed_total", "Alerts suppressed as duplicates", ["rule"])

# How long JetStream waits for a delivery's acknowledgement; a delivery
# still retrying says it is in progress every _PROGRESS_S.
_ACK_WAIT_S = 60.0
_PROGRESS_S = 20.0
# A handler that fails (NATS or Postgres away) hands its message back to be
# delivered again after this long, not at once: no tight loop on an outage.
RETRY_AFTER_S = 2.0
# Alerts delivered at once (deliver_alert).
_DELIVERING = 16
# Alerts whose delivery outcomes are remembered (see deliver_alert).
_REMEMBERED = 1000

Clock = Callable[[], float]


def alert_id(dedup_key: str, sent_at_ms: int) -> str:
    """A UUIDv7-shaped id that the same (dedup key, send time) always gets:
    a source event delivered twice raises one alert (Nats-Msg-Id)."""
    h = hashlib.sha256(f"{dedup_key}\x00{sent_at_ms}".encode()).hexdigest()
    t = f"{sent_at_ms & 0xFFFF_FFFF_FFFF:012x}"
    return f"{t[:8]}-{t[8:]}-7{h[:3]}-{'89ab'[int(h[3], 16) & 3]}{h[4:7]}-{h[7:19]}"


@dataclass(frozen=True)
class _Source:
    """Where a rule kind's events come from, and its handler."""

    subject: str
    durable: str
    stream: str
    handler: Callable[..., Awaitable[None]]
    kwargs: dict[str, Any] = field(default_factory=dict)
    # Read by the lean shared consumer instead of FastStream (the
    # high-volume source; processors/alerts/stage_lane.py says why).
    lean: bool = False


def default_node_id() -> str:
    return f"alerts-{socket.gethostname()}-{os.getpid()}"


class AlertsWorker:
    def __init__(
        self,
        nats_url: str,
        topology: Topology,
        config: AlertsConfig,
        *,
        env: Mapping[str, str] | None = None,
        node_id: str = "",
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        node_check_s: float = 1.0,
        log_writer: Callable[[AlertRaised | AlertDelivery], Awaitable[None]] | None = None,
    ) -> None:
        self._nats_url = nats_url
        self.topology = topology
        self._env = os.environ if env is None else env
        self.node = Node(kind="processor", id=node_id or default_node_id())
        self._clock = clock
        self._sleep = sleep
        self._node_check_s = node_check_s
        self._log_writer = log_writer
        self.config = config
        self._clients: dict[str, channels.ChannelClient] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._block_rates = rules.BlockRates()
        self._nodes = rules.NodeWatch()
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._dedup: dedup.Deduplicator | None = None
        self._broker: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._source_specs: dict[type[Rule], _Source] = {}
        self._running: dict[type[Rule], Any] = {}  # rule kind -> its running subscriber
        self._sources_lock = asyncio.Lock()
        self._heartbeats: KvMirror | None = None
        self._fleet_sync: KvMirror | None = None
        self._drift = rules.DriftWatch()
        # alert id -> channel -> (its outcome, published yet)
        self._attempted: collections.OrderedDict[str, dict[str, tuple[AlertDelivery, bool]]] = (
            collections.OrderedDict()
        )
        # channel + rule + subject -> the lock ordering that incident's
        # notifications (gone once nobody holds or waits for it).
        self._incident_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._clients, self._buckets = self._build(config, {}, {})

    # --- configuration ----------------------------------------------------------

    def _build(
        self,
        cfg: AlertsConfig,
        old_clients: dict[str, channels.ChannelClient],
        old_buckets: dict[str, TokenBucket],
        *,
        reread_secrets: bool = False,
    ) -> tuple[dict[str, channels.ChannelClient], dict[str, TokenBucket]]:
        """Clients for ``cfg``'s enabled channels; raises ConfigError (a
        secret missing) before anything changes.  A channel whose config did
        not change keeps its client (unless its secrets are to be read again)
        and its rate bucket."""
        clients: dict[str, channels.ChannelClient] = {}
        buckets: dict[str, TokenBucket] = {}
        for c in cfg.channels if cfg.enabled else ():
            if not c.enabled:
                continue
            old = old_clients.get(c.name)
            same = old is not None and old.config == c and not reread_secrets
            clients[c.name] = old if same and old is not None else channels.build(c, self._env)
            bucket = old_buckets.get(c.name)
            keep = bucket is not None and old is not None and old.config.rate_per_minute == c.rate_per_minute
            buckets[c.name] = bucket if keep and bucket is not None else TokenBucket(c.rate_per_minute)
        return clients, buckets

    async def set_config(self, cfg: AlertsConfig, *, reread_secrets: bool = False) -> bool:
        """Follow a new ``alerts:`` section; False (and nothing changed) when
        its channels cannot be built.  ``reread_secrets``: read every
        channel's secret again (a rotated secret file; SIGHUP)."""
        if cfg == self.config and not reread_secrets:
            return True
        try:
            clients, buckets = self._build(cfg, self._clients, self._buckets, reread_secrets=reread_secrets)
        except ValueError as exc:  # ConfigError
            log.error("alerts: new configuration not applied: %s", exc)
            return False
        retired = [c for name, c in self._clients.items() if clients.get(name) is not c]
        self._clients, self._buckets, self.config = clients, buckets, cfg
        for c in retired:
            with contextlib.suppress(Exception):
                await c.close()
        await self._sync_sources()
        log.info("alerts: configuration applied (%d rules, %d channels)", len(cfg.rules), len(clients))
        return True

    async def follow(self, cfg: AlertsConfig) -> None:
        """``set_config`` for a snapshot follower: raising refuses the
        snapshot (the follower keeps what it had and says so)."""
        if not await self.set_config(cfg):
            raise ValueError("the alerts: section's channels cannot be built here (see the log)")

    # --- raising ----------------------------------------------------------------

    async def _publish(self, event: AlertRaised | AlertDelivery) -> None:
        assert self._js is not None
        await self._js.publish(
            self.topology.subject_for(event),
            codec.encode(event),
            stream=self.topology.traffic_stream,
            headers={"Nats-Msg-Id": event.id},
        )

    async def raise_firing(self, firing: rules.Firing) -> AlertRaised | None:
        """Deduplicate a firing and, when it is to be sent, publish its
        ``alert.raised``.  Returns the alert (None: suppressed)."""
        assert self._dedup is not None
        rule = firing.rule
        window = rule.dedup_window_s if rule.dedup_window_s is not None else self.config.dedup_window_s
        now_ms = int(self._clock() * 1000)
        decision = await self._dedup.decide(
            firing.dedup_key, source=firing.source_event_id, now_ms=now_ms, window_s=window
        )
        if not decision.send:
            SUPPRESSED.labels(rule.name).inc()
            log.info(
                "alerts: %s suppressed (%d since the last one sent)", firing.dedup_key, decision.suppressed
            )
            return None
        rank = SEVERITY_RANK[firing.severity]
        targets = [
            name
            for name in rule.channels
            if name in self._clients and rank >= SEVERITY_RANK[self._clients[name].config.min_severity]
        ]
        alert = AlertRaised(
            id=alert_id(firing.dedup_key, decision.sent_at_ms),
            occurred_at_ms=decision.sent_at_ms,
            node=self.node,
            tenant=firing.tenant,
            rule=rule.name,
            rule_kind=str(type(rule).__struct_config__.tag),
            subject=firing.subject,
            dedup_key=firing.dedup_key,
            severity=firing.severity,
            status=firing.status,
            title=firing.title,
            summary=firing.summary,
            details={k: v for k, v in firing.details.items() if v},
            channels=targets,
            suppressed=decision.suppressed,
            source_event_id=firing.source_event_id,
        )
        await self._publish(alert)
        RAISED.labels(rule.name).inc()
        return alert

    async def _raise_all(self, firings: list[rules.Firing]) -> None:
        for f in firings:
            await self.raise_firing(f)

    # --- delivering -------------------------------------------------------------

    async def deliver_alert(self, alert: AlertRaised) -> list[AlertDelivery]:
        """Deliver ``alert`` to its channels at once, each outcome published
        as soon as it is known.  Called again for the same alert (an outcome
        could not be published, the handler is retried), it sends only to
        the channels not yet tried: a receiver is not notified twice
        because NATS blinked.

        Alerts are delivered concurrently (a dead receiver retrying must
        not hold up the pages behind it), but one incident's notifications
        on one channel go out one at a time, in the order they arrive (a
        resolve does not overtake its trigger)."""
        done = self._attempted.get(alert.id)
        if done is None:
            done = self._attempted[alert.id] = {}
            while len(self._attempted) > _REMEMBERED:
                self._attempted.popitem(last=False)

        async def one(name: str) -> AlertDelivery:
            if name not in done:
                client = self._clients.get(name)
                if client is None:
                    record = AlertDelivery(
                        alert_id=alert.id,
                        rule=alert.rule,
                        channel=name,
                        outcome="failed",
                        reason="the channel is no longer configured (or disabled)",
                        node=self.node,
                    )
                else:
                    key = f"{name}\x00{alert.rule}\x00{alert.subject}"
                    lock = self._incident_locks.get(key)
                    if lock is None:
                        lock = self._incident_locks[key] = asyncio.Lock()
                    async with lock:
                        record = await deliver(
                            alert, client, self._buckets[name], node=self.node, sleep=self._sleep
                        )
                done[name] = (record, False)
            record, published = done[name]
            if not published:
                await self._publish(record)
                done[name] = (record, True)
            return record

        results = await asyncio.gather(*(one(n) for n in alert.channels), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return [r for r in results if isinstance(r, AlertDelivery)]

    # --- the application ----------------------------------------------------------

    def _subscriber(self, subject: str, durable: str, stream: str, **kwargs: Any) -> Any:
        """A FastStream pull subscriber on a durable consumer of ours (the
        subscriber object: call it on the handler, start and stop it)."""
        from faststream import AckPolicy
        from faststream.nats import JStream, PullSub

        return self._broker.subscriber(
            subject,
            stream=JStream(stream, declare=False),
            durable=self._durable(durable),
            # A new installation starts from now: thirty days of history
            # would page everyone at once.  The durable remembers after that.
            config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW, ack_wait=_ACK_WAIT_S, filter_subjects=[]),
            pull_sub=PullSub(batch_size=50, timeout=1.0),
            ack_policy=AckPolicy.NACK_ON_ERROR,
            **kwargs,
        )

    def _durable(self, name: str) -> str:
        return f"{self.topology.prefix}_{name}"

    @staticmethod
    async def _guard(what: str, work: Awaitable[object]) -> None:
        from faststream.exceptions import NackMessage

        try:
            await work
        except Exception as exc:
            log.warning(
                "alerts: %s failed (%s); the event comes back in %g s",
                what,
                type(exc).__name__,
                RETRY_AFTER_S,
            )
            raise NackMessage(delay=RETRY_AFTER_S) from None

    def _sources(self) -> dict[type[Rule], _Source]:
        """The event sources, each read only while a rule of its kind is
        enabled: hook.stage carries every request's decisions, and a worker
        with no block-rate rule has no business paying for reading it."""
        t = self.topology
        guard = self._guard
        traffic = t.traffic_stream

        async def on_quota_alert(event: QuotaAlert) -> None:
            await guard("the budget rule", self._raise_all(rules.on_quota_alert(self.config, event)))

        async def on_stage(event: StageDecision) -> None:
            await self._raise_all(self._block_rates.observe(self.config, event))

        async def on_audit(event: AuditVerified) -> None:
            await guard("the audit-chain rule", self._raise_all(rules.on_audit_verified(self.config, event)))

        async def letter(msg: NatsMessage, original: Any) -> rules.DeadLetterSeen:
            h = msg.headers
            return rules.DeadLetterSeen(
                consumer=h.get("Nexus-Consumer", ""),
                code=h.get("Nexus-Code", ""),
                reason=h.get("Nexus-Reason", ""),
                subject=h.get("Nexus-Subject", ""),
                stream_seq=h.get("Nexus-Stream-Seq", ""),
                message_id=h.get("Nats-Msg-Id", "") or msg.message_id,
            )

        async def on_dead_letter(seen: rules.DeadLetterSeen) -> None:
            await guard("the SIEM dead-letter rule", self._raise_all(rules.on_dead_letter(self.config, seen)))

        return {
            BudgetRule: _Source(t.traffic_subject("quota.alert"), "alerts_budget", traffic, on_quota_alert),
            BlockRateRule: _Source(
                t.traffic_subject("hook.stage"), "alerts_stage", traffic, on_stage, lean=True
            ),
            AuditChainRule: _Source(t.traffic_subject("audit.verified"), "alerts_audit", traffic, on_audit),
            SiemDeadLetterRule: _Source(
                f"{t.subject_root}.deadletter.*.*",
                "alerts_deadletters",
                deadletter.stream_name(t),
                on_dead_letter,
                {"decoder": letter},
            ),
        }

    async def _sync_sources(self) -> None:
        """Read the sources the enabled rules need, and only those.  A source
        no rule needs has its durable consumer deleted, so one enabled later
        starts from that moment, not from a backlog of stale events."""
        if self._broker is None or self._js is None:
            return
        async with self._sources_lock:
            wanted = {type(r) for r in self.config.rules if r.enabled} if self.config.enabled else set()
            for kind, source in self._source_specs.items():
                running = self._running.get(kind)
                if kind in wanted and running is None:
                    if source.lean:
                        assert self._nc is not None
                        lane = StageLane(
                            self._nc, self.topology, self._durable(source.durable), IDENTITY, source.handler
                        )
                        await lane.start()
                        self._running[kind] = lane
                        continue
                    sub = self._subscriber(source.subject, source.durable, source.stream, **source.kwargs)
                    sub(source.handler)
                    await sub.start()
                    self._running[kind] = sub
                elif kind not in wanted:
                    if running is not None:
                        await running.stop()
                        del self._running[kind]
                    with contextlib.suppress(NotFoundError):
                        await self._js.delete_consumer(source.stream, self._durable(source.durable))

    def _app(self) -> None:
        t = self.topology
        guard = self._guard
        traffic = t.traffic_stream
        self._source_specs = self._sources()

        async def on_raised(event: AlertRaised, msg: NatsMessage) -> None:
            async def keep_alive() -> None:
                while True:
                    await asyncio.sleep(_PROGRESS_S)
                    await msg.in_progress()

            alive = asyncio.create_task(keep_alive())
            try:
                await guard("delivery", self.deliver_alert(event))
            finally:
                alive.cancel()

        self._subscriber(
            t.traffic_subject("alert.raised"), "alerts_deliver", traffic, max_workers=_DELIVERING
        )(on_raised)

        if self._log_writer is not None:
            write = self._log_writer

            async def on_alert_event(event: AlertRaised | AlertDelivery) -> None:
                await guard("the delivery log", write(event))

            self._subscriber(f"{t.subject_root}.traffic.alert.>", "alerts_log", traffic)(on_alert_event)

    async def start(self) -> None:
        self._nc = await connect(self._nats_url, name=f"nexus-{self.node.id}")
        try:
            self._js = self._nc.jetstream()
            await ensure_streams(self._js, self.topology)
            await deadletter.ensure_stream(self._js, self.topology)
            self._dedup = dedup.Deduplicator(await dedup.bucket(self._js, self.topology))
            # Per-message lines at DEBUG, and FastStream's own chatter (its
            # task supervisor says INFO for every pull task it watches) kept
            # below WARNING: the worker logs what matters itself.
            chatter = logging.getLogger("nexus.alerts.faststream")
            chatter.setLevel(logging.WARNING)
            self._broker = make_broker(
                self._nats_url,
                topology=self.topology,
                identity=IDENTITY,
                log_level=logging.DEBUG,
                logger=chatter,
            )
            self._app()
            await self._broker.start()
            await self._sync_sources()
        except BaseException:
            await self.stop()
            raise
        self._heartbeats = KvMirror(self._js, self.topology.heartbeat_bucket)
        self._heartbeats.start()
        self._fleet_sync = KvMirror(self._js, self.topology.fleet_sync_bucket)
        self._fleet_sync.start()
        self._tasks.append(asyncio.create_task(self._watch_nodes(), name="alerts-nodes"))

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await stop_tasks(*self._tasks)
        self._tasks.clear()
        for mirror in (self._heartbeats, self._fleet_sync):
            if mirror is not None:
                await mirror.stop()
        self._heartbeats = self._fleet_sync = None
        for running in self._running.values():
            if isinstance(running, StageLane):  # the broker stops its own subscribers
                with contextlib.suppress(Exception):
                    await running.stop()
        self._running.clear()
        if self._broker is not None:
            with contextlib.suppress(Exception):
                await self._broker.stop()
            self._broker = None
        for c in self._clients.values():
            with contextlib.suppress(Exception):
                await c.close()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
            self._nc = None

    # --- nodes ------------------------------------------------------------------

    def _beats(self) -> dict[str, heartbeat.Heartbeat]:
        out: dict[str, heartbeat.Heartbeat] = {}
        for key, value in self._heartbeats.values.items() if self._heartbeats is not None else ():
            beat = heartbeat.decode(value)
            if beat is not None:
                out[key] = beat
        return out

    async def check_nodes(self) -> list[AlertRaised]:
        """One pass of the node rules: offline (heartbeats) and drift (the
        fleet's sync records)."""
        now_ms = int(self._clock() * 1000)
        decided: list[tuple[rules.Firing, Callable[[rules.Firing], None]]] = []
        kinds = {type(r) for r in self.config.rules}
        if NodeOfflineRule in kinds and self._heartbeats is not None and self._heartbeats.ready.is_set():
            decided += [
                (f, self._nodes.revert) for f in self._nodes.check(self.config, self._beats(), now_ms)
            ]
        if NodeDriftRule in kinds and self._fleet_sync is not None and self._fleet_sync.ready.is_set():
            states = [s for v in self._fleet_sync.values.values() if (s := rules.decode_sync_state(v))]
            decided += [(f, self._drift.revert) for f in self._drift.check(self.config, states)]
        raised = []
        for f, revert in decided:
            try:
                alert = await self.raise_firing(f)
            except Exception:
                revert(f)  # decided again on the next pass
                raise
            if alert is not None:
                raised.append(alert)
        return raised

    async def _watch_nodes(self) -> None:
        while True:
            try:
                await self.check_nodes()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS away: try again next round
                log.warning("alerts: node check failed: %s", type(exc).__name__)
            await asyncio.sleep(self._node_check_s)
