"""The rules as pure functions of events: what fires, about which subject,
how severe, in what words.  No I/O and no clock of their own (the block
rate window runs on the events' time, node checks are given ``now``), so
they are tested with plain values.

A ``Firing`` is not yet an alert: the worker deduplicates it (rule and
subject, ``dedup``), then raises it (``alert.raised``) and delivers it.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec

from streams import heartbeat
from streams.config_alerts import (
    AlertsConfig,
    AuditChainRule,
    BlockRateRule,
    BudgetRule,
    NodeDriftRule,
    NodeOfflineRule,
    Rule,
    SiemDeadLetterRule,
)
from streams.events import Tenant
from streams.events_alerts import AuditVerified
from streams.events_compliance import StageDecision
from streams.events_quota import QuotaAlert


@dataclass(frozen=True, slots=True)
class Firing:
    rule: Rule
    subject: str
    severity: str
    title: str
    summary: str
    details: dict[str, str] = field(default_factory=dict)
    status: str = "firing"  # firing | resolved
    source_event_id: str = ""
    # What makes two firings the same alert beyond rule and subject (a
    # budget's 80 % and 100 % crossings are two alerts).
    variant: str = ""
    # Whose it is, when it is a tenant's (a budget, an org's block rate):
    # the alert events carry it, so SIEM filters by org see them.
    tenant: Tenant = field(default_factory=Tenant)

    @property
    def dedup_key(self) -> str:
        parts = [self.rule.name, self.subject, self.status]
        if self.variant:
            parts.append(self.variant)
        return "|".join(parts)


R = TypeVar(
    "R", BudgetRule, BlockRateRule, NodeOfflineRule, NodeDriftRule, SiemDeadLetterRule, AuditChainRule
)


def _active(cfg: AlertsConfig, kind: type[R]) -> list[R]:
    return [r for r in cfg.rules if r.enabled and isinstance(r, kind)] if cfg.enabled else []


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.0f} %"


def _amount(value: float, unit: str) -> str:
    if unit == "usd":
        return f"${value:,.2f}"
    return f"{value:,.0f} {unit}"


# --- budgets ------------------------------------------------------------------


def on_quota_alert(cfg: AlertsConfig, event: QuotaAlert) -> list[Firing]:
    out: list[Firing] = []
    for rule in _active(cfg, BudgetRule):
        if rule.budgets and event.budget_id not in rule.budgets:
            continue
        if rule.thresholds and not any(abs(t - event.threshold) < 1e-9 for t in rule.thresholds):
            continue
        reached = event.threshold >= 1.0
        subject = f"{event.counter_id or event.budget_id}@{event.window_id}"
        out.append(
            Firing(
                rule=rule,
                subject=subject,
                severity="critical" if reached else "warning",
                title=f"Budget {event.budget_id} at {_pct(event.threshold)}",
                summary=(
                    f"Budget {event.budget_id} ({event.counter_id or 'shared'}, window {event.window_id}) "
                    f"has used {_amount(event.spent, event.unit)} of {_amount(event.limit, event.unit)}: "
                    f"past {_pct(event.threshold)} of its limit"
                    + (f"; its action is {event.action}" if reached and event.action else "")
                    + "."
                ),
                details={
                    "budget": event.budget_id,
                    "counter": event.counter_id,
                    "window": event.window_id,
                    "unit": event.unit,
                    "threshold": f"{event.threshold:g}",
                    "limit": f"{event.limit:g}",
                    "spent": f"{event.spent:g}",
                    "action": event.action,
                    "org": event.tenant.org_id,
                },
                source_event_id=event.id,
                variant=f"{event.threshold:g}",
                tenant=event.tenant,
            )
        )
    return out


# --- block / redact rate -----------------------------------------------------------


class BlockRates:
    """Sliding windows of stage decisions per rule and scope, on the events'
    own time, in one-second buckets with running sums: memory is bounded by
    the window, the cost per event is constant."""

    def __init__(self) -> None:
        # (rule, scope) -> buckets [second, matched, total], oldest first
        self._windows: dict[tuple[str, str], collections.deque[list[int]]] = {}
        self._sums: dict[tuple[str, str], list[int]] = {}  # [matched, total] in the window
        self._seen = 0

    def reset(self) -> None:
        self._windows.clear()
        self._sums.clear()

    def _forget_quiet_scopes(self, now_s: int, longest_window_s: int) -> None:
        # Per-key scopes come and go with keys: drop those silent for longer
        # than any window, so memory follows the active keys, not all keys ever.
        for key in [k for k, w in self._windows.items() if not w or w[-1][0] < now_s - longest_window_s]:
            del self._windows[key]
            del self._sums[key]

    @staticmethod
    def _scope(rule: BlockRateRule, event: StageDecision) -> str:
        if rule.per == "org":
            return f"org:{event.tenant.org_id or '-'}"
        if rule.per == "key":
            return f"key:{event.tenant.key_id or '-'}"
        return "global"

    def _add(self, key: tuple[str, str], second: int, matched: int, window_s: int) -> tuple[int, int] | None:
        """The window's (matched, total) with this event in it; None when the
        event is older than the window (it changes nothing)."""
        window = self._windows.setdefault(key, collections.deque())
        sums = self._sums.setdefault(key, [0, 0])
        newest = window[-1][0] if window else second
        if second < newest - window_s + 1:
            return None
        if second > newest or not window:
            window.append([second, matched, 1])
        else:
            # Late by a few seconds: its own bucket, found from the newest end.
            for i in range(len(window) - 1, -1, -1):
                if window[i][0] == second:
                    window[i][1] += matched
                    window[i][2] += 1
                    break
                if window[i][0] < second:
                    window.insert(i + 1, [second, matched, 1])
                    break
            else:
                window.appendleft([second, matched, 1])
        sums[0] += matched
        sums[1] += 1
        horizon = window[-1][0] - window_s + 1
        while window and window[0][0] < horizon:
            old = window.popleft()
            sums[0] -= old[1]
            sums[1] -= old[2]
        return sums[0], sums[1]

    def observe(self, cfg: AlertsConfig, event: StageDecision) -> list[Firing]:
        out: list[Firing] = []
        second = event.occurred_at_ms // 1000
        active = _active(cfg, BlockRateRule)
        self._seen += 1
        if self._seen % 10_000 == 0 and active:
            self._forget_quiet_scopes(second, max(int(r.window_s) for r in active))
        for rule in active:
            scope = self._scope(rule, event)
            matched = 1 if event.decision in rule.decisions else 0
            counted = self._add((rule.name, scope), second, matched, int(rule.window_s))
            if counted is None or not matched:
                continue
            count, total = counted
            ratio = count / total if total else 0.0
            if count < rule.min_count or ratio < rule.min_ratio:
                continue
            what = "/".join(rule.decisions)
            where = scope.replace(":", " ")
            out.append(
                Firing(
                    rule=rule,
                    subject=scope,
                    severity=rule.severity,
                    title=f"{count} {what} decisions in {rule.window_s:g} s ({where})",
                    summary=(
                        f"{count} of {total} compliance decisions for {where} were {what} "
                        f"in the last {rule.window_s:g} s ({ratio:.0%}); the rule fires at {rule.min_count}"
                        + (f" and {rule.min_ratio:.0%}" if rule.min_ratio else "")
                        + "."
                    ),
                    details={
                        "scope": scope,
                        "count": str(count),
                        "total": str(total),
                        "ratio": f"{ratio:.3f}",
                        "window_s": f"{rule.window_s:g}",
                        "last_hook": event.blocking_hook,
                        "last_rule": event.blocking_rule,
                        "last_reason": event.reason_code,
                    },
                    source_event_id=event.id,
                    tenant=(
                        Tenant(org_id=event.tenant.org_id)
                        if rule.per == "org"
                        else Tenant(org_id=event.tenant.org_id, key_id=event.tenant.key_id)
                        if rule.per == "key"
                        else Tenant()
                    ),
                )
            )
        return out


# --- nodes ---------------------------------------------------------------------


class NodeWatch:
    """Which nodes are offline: a heartbeat ``missed_beats`` intervals late.
    Says when a node goes offline and when it comes back."""

    def __init__(self) -> None:
        self._offline: dict[tuple[str, str], int] = {}  # (rule, node key) -> last beat seen
        self._keys: dict[tuple[str, str], str] = {}  # (rule, subject) -> node key

    def revert(self, firing: Firing) -> None:
        """Forget that ``firing`` was decided (it could not be raised): the
        next check decides it again."""
        key = (firing.rule.name, self._keys.get((firing.rule.name, firing.subject), ""))
        if firing.status == "firing":
            self._offline.pop(key, None)
        else:
            self._offline[key] = 0

    def check(self, cfg: AlertsConfig, beats: dict[str, heartbeat.Heartbeat], now_ms: int) -> list[Firing]:
        out: list[Firing] = []
        rules = _active(cfg, NodeOfflineRule)
        names = {r.name for r in rules}
        for key in [k for k in self._offline if k[0] not in names]:
            del self._offline[key]
        for rule in rules:
            for node_key, beat in beats.items():
                if rule.node_kinds and beat.kind not in rule.node_kinds:
                    continue
                late_ms = now_ms - beat.beat_at_ms
                limit_ms = int(rule.missed_beats * beat.interval_s * 1000)
                key = (rule.name, node_key)
                subject = f"{beat.kind}/{beat.id}"
                self._keys[(rule.name, subject)] = node_key
                details = {
                    "node_kind": beat.kind,
                    "node_id": beat.id,
                    "last_beat_ms": str(beat.beat_at_ms),
                    "interval_s": f"{beat.interval_s:g}",
                }
                if late_ms > limit_ms and key not in self._offline:
                    self._offline[key] = beat.beat_at_ms
                    out.append(
                        Firing(
                            rule=rule,
                            subject=subject,
                            severity=rule.severity,
                            title=f"Node {subject} is offline",
                            summary=(
                                f"{beat.kind} node {beat.id} has not sent a heartbeat for "
                                f"{late_ms / 1000:.0f} s ({rule.missed_beats} beats of "
                                f"{beat.interval_s:g} s missed)."
                            ),
                            details=details,
                            source_event_id=f"beat:{node_key}:{beat.beat_at_ms}",
                        )
                    )
                elif late_ms <= limit_ms and key in self._offline:
                    del self._offline[key]
                    out.append(
                        Firing(
                            rule=rule,
                            subject=subject,
                            severity=rule.severity,
                            status="resolved",
                            title=f"Node {subject} is back online",
                            summary=f"{beat.kind} node {beat.id} sends heartbeats again.",
                            details=details,
                            source_event_id=f"beat:{node_key}:{beat.beat_at_ms}",
                        )
                    )
        return out


# --- drift --------------------------------------------------------------------


class SyncState(msgspec.Struct, frozen=True):
    """What the alerts read of a thing's sync record in the KV bucket
    ``<PREFIX>_FLEET_SYNC`` (written by the Hub: ``hub.fleet.drift.SyncRecord``;
    unknown fields are ignored, so the Hub may add to it)."""

    thing: str = ""
    version: int = 0  # the desired version it does not run
    pushes: int = 0
    drift: bool = False
    drift_since_ms: int = 0


_sync_state = msgspec.json.Decoder(SyncState)


def decode_sync_state(data: bytes) -> SyncState | None:
    try:
        return _sync_state.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


class DriftWatch:
    """Which things are in drift; says when one drifts and when it recovers."""

    def __init__(self) -> None:
        self._drifting: set[tuple[str, str]] = set()  # (rule, thing)

    def revert(self, firing: Firing) -> None:
        key = (firing.rule.name, firing.subject.removeprefix("thing/"))
        if firing.status == "firing":
            self._drifting.discard(key)
        else:
            self._drifting.add(key)

    def check(self, cfg: AlertsConfig, records: list[SyncState]) -> list[Firing]:
        out: list[Firing] = []
        rules = _active(cfg, NodeDriftRule)
        names = {r.name for r in rules}
        self._drifting = {k for k in self._drifting if k[0] in names}
        for rule in rules:
            for rec in records:
                if not rec.thing or (rule.things and rec.thing not in rule.things):
                    continue
                key = (rule.name, rec.thing)
                details = {
                    "thing": rec.thing,
                    "desired_version": str(rec.version),
                    "repushes": str(rec.pushes),
                    "drift_since_ms": str(rec.drift_since_ms),
                }
                if rec.drift and key not in self._drifting:
                    self._drifting.add(key)
                    out.append(
                        Firing(
                            rule=rule,
                            subject=f"thing/{rec.thing}",
                            severity=rule.severity,
                            title=f"Thing {rec.thing} is in drift",
                            summary=(
                                f"{rec.thing} does not run its desired configuration (version {rec.version}) "
                                f"after {rec.pushes} re-pushes; the Hub marked it drift "
                                f"(nexus admin things show {rec.thing})."
                            ),
                            details=details,
                            source_event_id=f"drift:{rec.thing}:{rec.version}:{rec.drift_since_ms}",
                        )
                    )
                elif not rec.drift and key in self._drifting:
                    self._drifting.discard(key)
                    out.append(
                        Firing(
                            rule=rule,
                            subject=f"thing/{rec.thing}",
                            severity=rule.severity,
                            status="resolved",
                            title=f"Thing {rec.thing} converged again",
                            summary=(
                                f"{rec.thing} runs its desired configuration (version {rec.version}) again."
                            ),
                            details=details,
                            source_event_id=f"converged:{rec.thing}:{rec.version}",
                        )
                    )
        return out


# --- SIEM dead letters and the audit chain --------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetterSeen:
    """A dead letter as the worker sees it: its headers, not its bytes."""

    consumer: str
    code: str
    reason: str
    subject: str
    stream_seq: str
    message_id: str


def on_dead_letter(cfg: AlertsConfig, letter: DeadLetterSeen) -> list[Firing]:
    if not letter.consumer.startswith("siem_"):
        return []
    sink = letter.consumer.removeprefix("siem_")
    return [
        Firing(
            rule=rule,
            subject=f"siem/{sink}",
            severity=rule.severity,
            title=f"SIEM sink {sink} dead-lettered a record",
            summary=(
                f"The SIEM sink {sink} gave up on a record ({letter.code}: {letter.reason}); "
                f"it is kept on the dead-letter stream (nexus deadletters list --consumer {letter.consumer})."
            ),
            details={
                "sink": sink,
                "code": letter.code,
                "reason": letter.reason,
                "subject": letter.subject,
                "stream_seq": letter.stream_seq,
            },
            source_event_id=letter.message_id,
        )
        for rule in _active(cfg, SiemDeadLetterRule)
    ]


def on_audit_verified(cfg: AlertsConfig, event: AuditVerified) -> list[Firing]:
    if event.ok:
        return []
    return [
        Firing(
            rule=rule,
            subject="audit-chain",
            severity=rule.severity,
            title=f"Audit chain broken at record {event.broken_n}",
            summary=(
                f"Verifying the audit hash chain (records {event.first_n}-{event.last_n}, "
                f"head {event.head_n}) found a break at record {event.broken_n}: {event.reason}."
            ),
            details={
                "broken_n": str(event.broken_n),
                "broken_event_id": event.broken_event_id,
                "reason": event.reason,
                "checked": str(event.checked),
                "head_n": str(event.head_n),
            },
            source_event_id=event.id,
            variant=str(event.broken_n),
        )
        for rule in _active(cfg, AuditChainRule)
    ]
