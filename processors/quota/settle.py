"""Settling usage events on the quota counters.

``plan`` is pure: a UsageRecorded event and the policy give the counter
operations.  ``Settler.apply`` sends a whole batch of plans to one Lua call
that skips already-processed event ids, releases each request's
reservation, adds the spend, marks threshold crossings and advances the
position, all atomically; redelivery or replay can never double-count.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from streams import poison
from streams.events import Node, RequestAborted, Tenant, UsageRecorded, now_ms
from streams.events_quota import QuotaAlert
from streams.poison import Poison
from streams.quota_counters import NANO, ROLLING_LUA, Counter, Limit, QuotaPolicy, Subject, usd_to_nano

log = logging.getLogger("nexus.processors.quota")

SETTLE_LUA = ROLLING_LUA + (Path(__file__).parent / "settle.lua").read_text()
# Event ids are remembered for this many stream sequences after the
# position: far more than can be in flight unacknowledged (max_ack_pending).
KEEP_IDS_SEQS = 200_000


class Op(msgspec.Struct, frozen=True):
    k: str
    r: int
    b: int
    n: int
    a: int
    x: int
    ak: str
    t: list[tuple[float, int]]
    m: dict[str, Any]


class Plan(msgspec.Struct, frozen=True):
    id: str
    seq: int
    rid: str
    ops: list[Op]


def amount_for(lim: Limit, ev: UsageRecorded) -> int:
    if lim.unit == "requests":
        return 1
    if lim.unit == "tokens":
        u = ev.usage
        return u.total_tokens or (u.prompt_tokens + u.completion_tokens)
    # Cost is computed once, on the event, by the node that served it.
    return usd_to_nano(ev.cost_usd) if ev.priced else 0


def subject_of(policy: QuotaPolicy, ev: UsageRecorded) -> Subject:
    t = ev.tenant
    model = policy.canonical_model(ev.model or ev.provider_model)
    return Subject(
        org=t.org_id,
        project=t.project_id,
        key=t.key_id,
        user=t.user_id,
        provider=ev.provider or policy.model_provider.get(model, ""),
        model=model,
    )


def _window_closed(c: Counter, event_ms: int, now: int) -> bool:
    if c.rolling:
        return event_ms + c.limit.window_s * 1000 <= now
    return c.resets_at_ms <= now


def plan(policy: QuotaPolicy, ev: UsageRecorded, seq: int, now: int) -> Plan:
    """The counter operations for one usage event, dated by the event's own
    time (not the processor's) so a replay lands in the same windows.  No
    alert is armed for a window that has already ended at ``now``: a replay
    must not announce a crossing from last month (its marker may be gone)."""
    s = subject_of(policy, ev)
    ops = []
    for c in policy.counters(s, ev.occurred_at_ms):
        lim = c.limit
        thresholds = (
            []
            if _window_closed(c, ev.occurred_at_ms, now)
            else [(f, math.ceil(f * lim.limit)) for f in lim.alert_at]
        )
        ops.append(
            Op(
                k=c.spent_key,
                r=1 if c.rolling else 0,
                b=c.bucket,
                n=c.nbuckets,
                a=amount_for(lim, ev),
                x=max(1000, c.expire_at_ms - ev.occurred_at_ms),
                ak=c.alert_key,
                t=thresholds,
                m={
                    "budget_id": lim.id,
                    "counter_id": c.cid,
                    "window_id": c.window_id,
                    "unit": lim.unit,
                    "action": lim.action,
                    "limit": lim.limit_display,
                    "org": s.org,
                    "project": s.project,
                    "key": s.key,
                    "user": s.user,
                }
                if thresholds
                else {},
            )
        )
    return Plan(id=ev.id, seq=seq, rid=ev.request_id, ops=ops)


class ApplyResult(msgspec.Struct):
    applied: int = 0
    duplicates: int = 0
    ignored: int = 0
    alerts: int = 0
    # (index in the messages, why): events that cannot be settled, for the
    # dead-letter subject; nothing of them was written.
    poisoned: list[tuple[int, Poison]] = msgspec.field(default_factory=list)


# Counters are integers Valkey's Lua holds exactly.
_COUNTABLE = 2**53


def _checked(p: Plan) -> Plan:
    for op in p.ops:
        if not 0 <= op.a < _COUNTABLE:
            raise Poison(poison.OUT_OF_RANGE, f"an amount of {op.a} cannot be counted (budget key {op.k})")
    return p


AlertPublisher = Callable[[QuotaAlert, str], Awaitable[None]]


class Settler:
    def __init__(
        self,
        client: Any,  # valkey.asyncio.Valkey
        policy: QuotaPolicy,
        *,
        publish_alert: AlertPublisher | None = None,
        node_id: str = "quota",
    ) -> None:
        self.client = client
        self.policy = policy
        self.publish_alert = publish_alert
        self.node = Node(kind="processor", id=node_id)
        self._settle = client.register_script(SETTLE_LUA)
        # Recent settle lags (ms from the usage event to its counters being
        # written), for the benchmark and metrics.
        self.lags_ms: deque[float] = deque(maxlen=100_000)

    def set_policy(self, policy: QuotaPolicy) -> None:
        self.policy = policy

    async def apply(self, messages: Sequence[tuple[bytes, int]], *, now: int | None = None) -> ApplyResult:
        """Apply (event bytes, stream seq) pairs; events of other types are
        skipped (the consumer only subscribes to usage events)."""
        now = now_ms() if now is None else now
        plans: list[Plan] = []
        index: list[int] = []  # the message each plan is for
        occurred: list[int] = []
        result = ApplyResult()
        for i, (data, seq) in enumerate(messages):
            try:
                ev, _ = poison.decode_event(data)
                if isinstance(ev, RequestAborted):
                    # It will never have usage: give back what it holds.
                    plans.append(Plan(id=ev.id, seq=seq, rid=ev.request_id, ops=[]))
                    index.append(i)
                    occurred.append(ev.occurred_at_ms)
                    continue
                if not isinstance(ev, UsageRecorded):
                    result.ignored += 1
                    continue
                try:
                    planned = plan(self.policy, ev, seq, now)
                except (ValueError, OverflowError, TypeError) as exc:  # an absurd time, say
                    raise Poison(poison.INVALID, f"cannot be planned: {type(exc).__name__}: {exc}") from None
                plans.append(_checked(planned))
            except Poison as exc:
                result.poisoned.append((i, exc))
                continue
            index.append(i)
            occurred.append(ev.occurred_at_ms)
        while plans:
            keys = self.policy.keys
            raw = await self._settle(
                keys=[keys.res_expiry, keys.position, keys.processed, keys.pending_alerts],
                args=[keys.res_prefix, KEEP_IDS_SEQS, msgspec.json.encode(plans)],
            )
            if int(raw[0]) == -1:
                # The script refused one event before writing anything: set
                # it aside and settle the others.
                bad = int(raw[1]) - 1
                why = "the settle script cannot count one of its amounts or windows"
                result.poisoned.append((index.pop(bad), Poison(poison.OUT_OF_RANGE, why)))
                del plans[bad]
                del occurred[bad]
                continue
            done = now_ms()
            self.lags_ms.extend(done - t for t in occurred)
            result.applied, result.duplicates, result.alerts = int(raw[0]), int(raw[1]), int(raw[2])
            break
        if result.alerts:
            await self.flush_alerts()
        return result

    async def flush_alerts(self) -> int:
        """Publish pending alerts, then forget them.  A crash in between
        republishes with the same Nats-Msg-Id, which JetStream drops."""
        if self.publish_alert is None:
            return 0
        key = self.policy.keys.pending_alerts
        pending: dict[bytes, bytes] = await self.client.hgetall(key)
        sent = 0
        for field, payload in sorted(pending.items()):
            m = msgspec.json.decode(payload)
            scale = NANO if m.get("unit") == "usd" else 1
            alert = QuotaAlert(
                request_id=m.get("request_id", ""),
                node=self.node,
                tenant=Tenant(
                    org_id=m.get("org", ""),
                    project_id=m.get("project", ""),
                    key_id=m.get("key", ""),
                    user_id=m.get("user", ""),
                ),
                alert_key=field.decode(),
                budget_id=m.get("budget_id", ""),
                counter_id=m.get("counter_id", ""),
                window_id=m.get("window_id", ""),
                unit=m.get("unit", ""),
                action=m.get("action", ""),
                threshold=float(m.get("threshold", 0.0)),
                limit=float(m.get("limit", 0.0)),
                spent=float(m.get("spent_raw", 0)) / scale,
            )
            await self.publish_alert(alert, field.decode())
            await self.client.hdel(key, field)
            sent += 1
        return sent

    async def position(self) -> int:
        v = await self.client.get(self.policy.keys.position)
        return int(v) if v else 0
