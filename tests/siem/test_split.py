"""Records over a sink's maximum message size: split on their largest list,
long strings shortened, every message within the limit and whole."""

from __future__ import annotations

import json
from typing import Any

import pytest

from processors.siem import formats
from processors.siem.records import to_record
from processors.siem.split import fit
from streams import codec
from streams.events import Body, RequestReceived, Tenant
from streams.events_compliance import HookVerdict, SpanFound
from tests.siem.receivers import parse_5424, parse_cef


def _syslog(fmt: str) -> Any:
    def render(record: dict[str, Any]) -> bytes:
        msg = formats.cef(record) if fmt == "cef" else formats.json_msg(record)
        return formats.syslog_message(record, facility=13, hostname="gw", app_name="nexus", msg=msg)

    return render


def _verdict(n: int) -> dict[str, Any]:
    ev = HookVerdict(
        request_id="r1",
        tenant=Tenant(org_id="acme"),
        hook="pii",
        verdict="redact",
        reason="card numbers",
        spans=[SpanFound(entity=f"CREDIT_CARD_{i}", start=i, end=i + 16, score=0.5) for i in range(n)],
    )
    return to_record(codec.encode(ev), stream="S", seq=7, include_bodies=False)


@pytest.mark.parametrize("limit", [2048, 8192])
def test_a_verdict_with_256_findings_becomes_whole_messages_with_every_finding(limit: int) -> None:
    record = _verdict(256)
    assert len(_syslog("json")(record)) > limit
    messages = fit(record, _syslog("json"), limit)
    assert len(messages) > 1 and all(len(m) <= limit for m in messages)
    parts = [json.loads(parse_5424(m).msg) for m in messages]
    assert {p["id"] for p in parts} == {record["id"]}
    assert [p["nexus"]["part"]["index"] for p in parts] == list(range(len(parts)))
    assert {p["nexus"]["part"]["count"] for p in parts} == {len(parts)}
    assert [s["entity"] for p in parts for s in p["spans"]] == [s["entity"] for s in record["spans"]]
    assert all(p["reason"] == "card numbers" and p["nexus"]["seq"] == 7 for p in parts)


def test_cef_has_no_list_to_split_and_long_values_are_shortened() -> None:
    record = _verdict(256)
    record["reason"] = "x" * 20_000
    [message] = fit(record, _syslog("cef"), 2048)
    assert len(message) <= 2048
    _, ext = parse_cef(parse_5424(message).msg)
    assert ext["externalId"] == record["id"] and ext["reason"].endswith("…")


def test_a_big_body_is_shortened_and_says_so() -> None:
    ev = RequestReceived(request_id="r2", body=Body(inline=b"A" * 100_000, size=100_000))
    record = to_record(codec.encode(ev), stream="S", seq=1, include_bodies=True)
    [message] = fit(record, _syslog("json"), 8192)
    out = json.loads(parse_5424(message).msg)
    assert len(message) <= 8192
    assert out["nexus"]["truncated"] == ["body.inline"] and out["body"]["sha256"] == record["body"]["sha256"]


def test_a_record_within_the_limit_is_one_message_unchanged() -> None:
    record = _verdict(3)
    assert fit(record, _syslog("json"), 8192) == [_syslog("json")(record)]
