"""The pure read-model rules: whatever order the facts of a request arrive
in, and however often, the folded row is the same."""

from __future__ import annotations

import itertools

import pytest

from projections.traffic import COLUMN_NAMES, delta, fold
from streams.codec import UnknownEvent
from streams.events import RequestAborted, RequestCompleted, RequestFailed, RequestReceived, UpstreamResult
from tests.projections.helpers import failed_request, ok_request, retried_request


def _one_row(events: list[object]) -> dict[str, object]:
    rows = fold(events)
    assert len(rows) == 1
    row = next(iter(rows.values()))
    # a column no fact set is NULL in the table, absent or None here
    return {c: row.get(c) for c in COLUMN_NAMES}


@pytest.mark.parametrize(
    "events",
    [
        pytest.param(ok_request(1, stream=True), id="ok-stream"),
        pytest.param(retried_request(2), id="retry-then-ok"),
        pytest.param(failed_request(3), id="upstream-timeout"),
    ],
)
def test_every_arrival_order_folds_to_the_same_row(events: list[object]) -> None:
    expected = _one_row(events)
    for perm in itertools.permutations(events):
        assert _one_row(list(perm)) == expected
    # and a batch that carries every fact twice changes nothing
    assert _one_row(events + events[::-1]) == expected


def test_retry_names_the_provider_that_answered_and_keeps_the_last_attempt() -> None:
    row = _one_row(retried_request(4)[::-1])
    assert (row["provider"], row["provider_model"]) == ("prov-b", "b-1")
    assert row["upstream_attempt"] == 2
    assert row["upstream_status"] == 200
    assert row["upstream_error_code"] == ""
    assert row["attempts"] == 2
    assert row["first_seen_at"] == retried_request(4)[0].occurred_at_ms


def test_a_failure_after_a_started_stream_wins_over_the_completion() -> None:
    rid = "r-broken-stream"
    completed = RequestCompleted(request_id=rid, occurred_at_ms=100, status=200, latency_ms=9.0)
    failed = RequestFailed(
        request_id=rid, occurred_at_ms=90, status=502, error_code="stream_dropped", stage="stream"
    )
    for order in ([completed, failed], [failed, completed]):
        row = _one_row(list(order))
        assert (row["outcome"], row["status"], row["error_code"]) == ("failed", 502, "stream_dropped")
        assert row["completed_at"] == 90


def test_an_auth_failure_without_provider_does_not_erase_the_provider() -> None:
    rid = "r-x"
    up = UpstreamResult(request_id=rid, provider="sim", provider_model="s", status=200)
    failed = RequestFailed(request_id=rid, status=499, error_code="client_closed")
    for order in ([up, failed], [failed, up]):
        assert _one_row(list(order))["provider"] == "sim"


def test_events_the_table_does_not_use_are_ignored() -> None:
    assert delta(UnknownEvent(type="future.thing", id="x")) is None
    assert delta(RequestReceived(request_id="")) is None
    assert fold([UnknownEvent(type="x"), RequestReceived(request_id="")]) == {}


def test_deltas_only_name_real_columns() -> None:
    for ev in ok_request(5) + retried_request(5) + failed_request(5):
        d = delta(ev)
        assert d is not None
        assert set(d) <= set(COLUMN_NAMES)


def test_a_cache_hit_records_what_it_saved() -> None:
    hit = RequestCompleted(
        request_id="r-hit", status=200, cache_status="hit", attempts=0, cache_saving_usd=0.0042
    )
    row = fold([RequestReceived(request_id="r-hit", requested_model="m"), hit])["r-hit"]
    assert (row["cache_status"], row["attempts"], row["cache_saving_usd"]) == ("hit", 0, 0.0042)


def test_the_final_attempt_names_its_pooled_credential() -> None:
    benched = UpstreamResult(request_id="r-pool", attempt=1, status=429, credential_id="key-a")
    served = UpstreamResult(request_id="r-pool", attempt=2, status=200, credential_id="key-b")
    for events in ([benched, served], [served, benched]):
        assert fold(events)["r-pool"]["credential_id"] == "key-b"


def test_an_abort_yields_to_the_nodes_own_outcome_arriving_late() -> None:
    """The reconciler aborts a request whose node went quiet; a node that was
    only cut off from NATS delivers its outcome later from its outbox, and
    that one is the truth, in whichever order the two are projected."""
    events = ok_request(7, stream=True)
    received, completed = events[0], events[-1]
    aborted = RequestAborted(request_id=received.request_id, occurred_at_ms=999_999, cause="node_lost")
    row = _one_row([received, aborted])
    assert (row["outcome"], row["status"], row["completed_at"]) == ("aborted", None, 999_999)
    for order in itertools.permutations([*events, aborted]):
        row = _one_row(list(order))
        assert (row["outcome"], row["status"]) == ("completed", 200)
        assert row["completed_at"] == completed.occurred_at_ms
