"""The compliance columns of ``traffic_event`` as pure functions: one
StageDecision per stage fills that stage's columns, tags of every stage
are unioned, and arrival order or redelivery never changes the row."""

from __future__ import annotations

import itertools

import pytest

from projections.traffic import fold
from streams.events import Event, RequestReceived
from streams.events_compliance import HookVerdict, StageDecision

RID = "req-1"


def _events() -> list[Event]:
    return [
        RequestReceived(request_id=RID, passthrough_flags=["bypass_cache"], passthrough_reason="x" * 20),
        StageDecision(request_id=RID, stage="connection", decision="approve"),
        StageDecision(
            request_id=RID,
            stage="request",
            decision="redact",
            blocking_rule="CREDIT_CARD",
            reason_code="pii_detected",
            tags=["pii:CREDIT_CARD", "detector:pii"],
            hooks_us=120,
        ),
        HookVerdict(request_id=RID, stage="request", hook="pii", verdict="redact"),
        StageDecision(
            request_id=RID,
            stage="response",
            decision="block",
            blocking_rule="leaked-word",
            reason_code="keyword_match",
            tags=["detector:keyword", "detector:pii"],
            hooks_us=80,
            streaming_mode="chunked",
        ),
    ]


EXPECTED = {
    "passthrough_flags": "bypass_cache",
    "connection_hook_decision": "approve",
    "request_hook_decision": "redact",
    "request_hook_blocking_rule": "CREDIT_CARD",
    "request_hook_reason_code": "pii_detected",
    "request_hook_us": 120,
    "response_hook_decision": "block",
    "response_hook_blocking_rule": "leaked-word",
    "response_hook_reason_code": "keyword_match",
    "response_hook_us": 80,
    "response_hook_mode": "chunked",
    "compliance_tags": "detector:keyword,detector:pii,pii:CREDIT_CARD",
}


@pytest.mark.parametrize("order", list(itertools.permutations(range(5)))[::17])
def test_any_order_and_redelivery_give_the_same_row(order: tuple[int, ...]) -> None:
    events = _events()
    shuffled = [events[i] for i in order]
    row = fold([*shuffled, *shuffled[:2]])[RID]  # the first two delivered twice
    assert {k: row.get(k) for k in EXPECTED} == EXPECTED


def test_a_stage_without_tags_leaves_the_tags_alone() -> None:
    row = fold([StageDecision(request_id=RID, stage="request", decision="approve")])[RID]
    assert row["compliance_tags"] is None and row["request_hook_decision"] == "approve"
