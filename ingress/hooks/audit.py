"""StageResult -> events: one HookVerdict per hook, one StageDecision."""

from __future__ import annotations

from ingress.hooks.emergency import NO_BYPASS, Bypass
from ingress.hooks.types import StageResult, Verdict
from streams.events import Event, Node, Tenant
from streams.events_compliance import HookVerdict, SpanFound, StageDecision

MAX_SPANS_PER_EVENT = 256


def stage_events(
    result: StageResult,
    *,
    request_id: str,
    node: Node,
    tenant: Tenant,
    trace_id: str = "",
    streaming_mode: str = "",
    enforced: bool = True,
    bypass: Bypass = NO_BYPASS,
) -> list[Event]:
    # The envelope's fields as keywords of each call, not a dict spread into
    # it, and no copy or comprehension for an empty tag or span list:
    # building these events is a share of every hooked request's cost.
    events: list[Event] = []
    for r in result.records:
        events.append(
            HookVerdict(
                request_id=request_id,
                trace_id=trace_id,
                node=node,
                tenant=tenant,
                stage=result.stage,
                hook=r.hook,
                hook_type=r.hook_type,
                priority=r.priority,
                verdict=r.verdict,
                effective=r.effective.label,
                reason_code=r.reason_code,
                reason=r.reason,
                rule=r.rule,
                severity=r.severity,
                tags=list(r.tags) if r.tags else [],
                # Where, never what: offsets and the entity name only.
                spans=[
                    SpanFound(s.entity, s.start, s.end, round(s.score, 3))
                    for s in r.spans[:MAX_SPANS_PER_EVENT]
                ]
                if r.spans
                else [],
                elapsed_us=r.elapsed_us,
                fail_mode=r.fail_mode,
                mode=r.mode,
                enforcement=r.enforcement,
            )
        )
    decision = "bypassed" if result.bypassed else result.decision.label
    events.append(
        StageDecision(
            request_id=request_id,
            trace_id=trace_id,
            node=node,
            tenant=tenant,
            stage=result.stage,
            decision=decision,
            blocking_hook=result.blocking_hook,
            blocking_rule=result.blocking_rule if result.decision is not Verdict.APPROVE else "",
            reason_code=result.reason_code,
            reason=result.reason,
            tags=list(result.tags),
            hooks_run=sum(1 for r in result.records if r.verdict != "skipped"),
            hooks_us=result.elapsed_us,
            redacted=result.redacted,
            streaming_mode=streaming_mode,
            enforced=enforced,
            passthrough_flags=bypass.flags,
            passthrough_reason=bypass.reason,
            kill_switch=bypass.kill_switch,
            monitored_decision=result.monitored.label if result.monitored is not Verdict.APPROVE else "",
            monitored_hook=result.monitored_hook,
            monitored_rule=result.monitored_rule,
        )
    )
    return events
