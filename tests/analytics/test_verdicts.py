"""Compliance events fold into per-request outcomes (pure functions)."""

from __future__ import annotations

import pytest

from projections.analytics.verdicts import Outcome, fold_outcomes
from streams.events import RequestCompleted
from streams.events_compliance import HookVerdict, SpanFound, StageDecision

SPAN = SpanFound(entity="EMAIL_ADDRESS", start=0, end=5)


@pytest.mark.parametrize(
    ("events", "want"),
    [
        pytest.param(
            [
                HookVerdict(request_id="r", verdict="approve"),
                StageDecision(request_id="r", decision="approve"),
            ],
            Outcome(verdict_approve=1),
            id="clean",
        ),
        pytest.param(
            [
                HookVerdict(request_id="r", verdict="redact", effective="redact", spans=[SPAN, SPAN]),
                StageDecision(request_id="r", decision="redact", redacted=True),
            ],
            Outcome(verdict_redact=1, findings=2, redacted=True),
            id="redacted",
        ),
        pytest.param(
            [
                HookVerdict(request_id="r", verdict="block", effective="block", spans=[SPAN]),
                StageDecision(request_id="r", decision="block"),
            ],
            Outcome(verdict_block=1, findings=1, blocked=True),
            id="blocked",
        ),
        pytest.param(
            [HookVerdict(request_id="r", verdict="timeout", effective="block")],
            Outcome(verdict_block=1, verdict_error=1),
            id="timeout->fail-closed",
        ),
        pytest.param(
            [
                HookVerdict(request_id="r", verdict="skipped"),
                StageDecision(request_id="r", decision="bypassed"),
            ],
            Outcome(),
            id="skipped-is-not-a-verdict",
        ),
        pytest.param(
            [StageDecision(request_id="r", decision="block", enforced=False)],
            Outcome(),
            id="audit-only-block-is-not-blocked",
        ),
    ],
)
def test_outcome_of_one_request(events: list[object], want: Outcome) -> None:
    assert fold_outcomes(events) == {"r": want}


def test_other_events_and_anonymous_ones_are_ignored() -> None:
    assert fold_outcomes([RequestCompleted(request_id="r"), HookVerdict(verdict="block")]) == {}
