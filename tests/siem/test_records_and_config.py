"""Pure pieces of the SIEM forwarder: the siem:/audit: config sections
(strict, SSRF-guarded), the record a sink receives (no secrets, bodies by
policy), filters, and the RFC 5424 / CEF encodings parsed back by the test
receiver's strict parser."""

from __future__ import annotations

import base64
import json
import textwrap

import pytest

from processors.siem import formats
from processors.siem.records import Undecodable, matches, to_record
from streams import codec
from streams.config_base import ConfigError
from streams.config_siem import SinkFilter
from streams.config_validation import parse_config
from streams.events import Body, BodyRef, RequestCompleted, RequestFailed, RequestReceived, Tenant
from streams.events_compliance import HookVerdict
from tests.siem.receivers import parse_5424, parse_cef

KEY = "nvk_" + "0f" * 32

ORGS = "orgs: [{id: acme}]\n"


@pytest.mark.parametrize(
    ("yaml", "error"),
    [
        pytest.param(
            "siem: {sinks: [{kind: syslog, name: s, host: 10.1.2.3, port: 514}]}",
            "non-public address",
            id="syslog->private-host",
        ),
        pytest.param(
            "siem: {sinks: [{kind: splunk_hec, name: h, url: 'http://127.0.0.1:8088', token_env: T}]}",
            "non-public address",
            id="hec->loopback",
        ),
        pytest.param(
            "siem: {sinks: [{kind: elastic, name: e, url: 'http://metadata.internal/'}]}",
            "internal host",
            id="elastic->internal",
        ),
        pytest.param(
            "siem: {sinks: [{kind: webhook, name: w, url: 'file:///etc/passwd'}]}",
            "http or https",
            id="webhook->file-url",
        ),
        pytest.param(
            "siem: {sinks: [{kind: webhook, name: w, url: 'https://u:p@x.example.com/'}]}",
            "credentials in the URL",
            id="webhook->userinfo",
        ),
        pytest.param(
            "siem: {sinks: [{kind: webhook, name: w, url: 'https://x.example.com', "
            "headers: {Authorization: 'Bearer abc'}}]}",
            "use token_env",
            id="webhook->secret-header",
        ),
        pytest.param(
            "siem: {sinks: [{kind: webhook, name: w, url: 'https://x.example.com', colour: red}]}",
            "unknown field `colour`",
            id="unknown-field",
        ),
        pytest.param(
            "siem: {sinks: [{kind: kafka, name: w}]}",
            "Invalid value 'kafka'",
            id="unknown-kind",
        ),
        pytest.param(
            "siem: {sinks: [{kind: webhook, name: w, url: 'https://a.example.com'}, "
            "{kind: webhook, name: w, url: 'https://b.example.com'}]}",
            "duplicate sink 'w'",
            id="duplicate-name",
        ),
        pytest.param(
            "siem: {sinks: [{kind: webhook, name: 'a.b', url: 'https://a.example.com'}]}",
            "must be 1-64 letters",
            id="bad-name",
        ),
        pytest.param(
            ORGS + "siem: {sinks: [{kind: webhook, name: w, url: 'https://a.example.com', "
            "filter: {orgs: [nope]}}]}",
            "unknown org 'nope'",
            id="filter->unknown-org",
        ),
        pytest.param(
            "siem: {sinks: [{kind: webhook, name: w, url: 'https://a.example.com', "
            "filter: {statuses: ['6xx']}}]}",
            "not a status",
            id="filter->bad-status",
        ),
        pytest.param(
            "siem: {sinks: [{kind: webhook, name: w, url: 'https://a.example.com', max_attempts: 0}]}",
            "at least 1",
            id="max-attempts-0",
        ),
        pytest.param("audit: {body_retention_days: -1}", "must not be negative", id="audit->negative"),
    ],
)
def test_bad_siem_config_is_a_clear_error(yaml: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        parse_config(yaml)


def test_good_siem_config_loads() -> None:
    cfg = parse_config(
        ORGS
        + """
audit: {body_retention_days: 7}
siem:
  sinks:
    - {kind: syslog, name: soc, host: 127.0.0.1, port: 6514, transport: tls, format: cef,
       allow_private_network: true, filter: {verdicts: [block], orgs: [acme]}}
    - {kind: splunk_hec, name: splunk, url: 'https://splunk.example.com:8088', token_env: HEC,
       include_bodies: true, max_attempts: 3}
"""
    )
    assert cfg.audit.body_retention_days == 7
    assert [s.name for s in cfg.siem.sinks] == ["soc", "splunk"]
    assert cfg.siem.sinks[1].include_bodies is True


def test_the_documented_example_loads() -> None:
    import streams.config_siem

    doc = streams.config_siem.__doc__ or ""
    example = textwrap.dedent(doc.split("::", 1)[1])
    cfg = parse_config("orgs: [{id: acme}]\n" + example)
    assert [s.name for s in cfg.siem.sinks] == ["soc", "splunk", "elastic", "hook"]
    assert cfg.siem.sinks[0].filter.verdicts == ("block",)


def test_record_has_no_secret_and_bodies_only_by_policy() -> None:
    ev = RequestReceived(
        user_agent=f"sdk/1.0 key={KEY}",
        body=Body(inline=b'{"prompt":"hello"}', size=18),
        tenant=Tenant(org_id="acme", key_id="k1"),
    )
    raw = codec.encode(ev)
    plain = to_record(raw, stream="S", seq=7, include_bodies=False)
    text = json.dumps(plain)
    assert KEY not in text and "hello" not in text and "inline" not in plain["body"]
    assert plain["id"] == ev.id and plain["nexus"] == {"stream": "S", "seq": 7}
    assert plain["tenant"]["key_id"] == "k1"  # an identifier, not a secret: kept
    with_body = to_record(raw, stream="S", seq=7, include_bodies=True)
    assert base64.b64decode(with_body["body"]["inline"]) == b'{"prompt":"hello"}'
    # A spilled body is forwarded as its reference, never fetched.
    spilled = RequestReceived(body=Body(ref=BodyRef(key="sha256/ab", size=9, sha256="ab"), size=9))
    assert (
        to_record(codec.encode(spilled), stream="S", seq=1, include_bodies=True)["body"]["ref"]["sha256"]
        == "ab"
    )
    # A type this forwarder does not know travels as is, minus credentials.
    unknown = b'{"type":"admin.key_rotated","id":"e1","api_key":"sk-live-1","nested":{"password":"p","n":1}}'
    rec = to_record(unknown, stream="S", seq=2, include_bodies=False)
    assert rec["type"] == "admin.key_rotated" and "api_key" not in rec and rec["nested"] == {"n": 1}
    with pytest.raises(Undecodable):
        to_record(b"{not json", stream="S", seq=3, include_bodies=False)


@pytest.mark.parametrize(
    ("flt", "event", "selected"),
    [
        pytest.param(SinkFilter(), RequestCompleted(), True, id="empty->all"),
        pytest.param(SinkFilter(event_types=("request.*",)), RequestCompleted(), True, id="type-prefix"),
        pytest.param(SinkFilter(event_types=("hook.verdict",)), RequestCompleted(), False, id="type-miss"),
        pytest.param(SinkFilter(statuses=("2xx",)), RequestCompleted(), True, id="default-200-in-2xx"),
        pytest.param(SinkFilter(statuses=("5xx",)), RequestFailed(status=503), True, id="5xx"),
        pytest.param(SinkFilter(statuses=("429",)), RequestFailed(status=503), False, id="429-miss"),
        pytest.param(SinkFilter(statuses=("5xx",)), RequestReceived(), False, id="no-status-field"),
        pytest.param(SinkFilter(verdicts=("block",)), HookVerdict(verdict="block"), True, id="verdict"),
        pytest.param(SinkFilter(verdicts=("approve",)), HookVerdict(), True, id="default-approve"),
        pytest.param(SinkFilter(verdicts=("block",)), RequestCompleted(), False, id="no-verdict"),
        pytest.param(
            SinkFilter(orgs=("acme",)), RequestCompleted(tenant=Tenant(org_id="acme")), True, id="org"
        ),
        pytest.param(SinkFilter(orgs=("acme",)), RequestCompleted(), False, id="org-miss"),
    ],
)
def test_filters(flt: SinkFilter, event: object, selected: bool) -> None:
    record = to_record(codec.encode(event), stream="S", seq=1, include_bodies=False)  # type: ignore[arg-type]
    assert matches(flt, record) is selected


def test_syslog_and_cef_encodings_parse_back() -> None:
    ev = RequestFailed(
        status=502,
        reason='upstream "said" ] no | a=b \\ done\nnext',
        tenant=Tenant(org_id="ac]me", project_id="p"),
        request_id="req-1",
    )
    record = to_record(codec.encode(ev), stream="S", seq=1, include_bodies=False)
    cef = formats.cef(record)
    frame = formats.syslog_message(record, facility=13, hostname="gw 1", app_name="nexus", msg=cef)
    framed = formats.octet_counted(frame)
    length, _, rest = framed.partition(b" ")
    assert int(length) == len(rest) == len(frame)
    msg = parse_5424(frame)
    assert msg.pri == 13 * 8 + 3 and msg.msgid == "request.failed" and msg.hostname == "gw1"
    sd = msg.sd["nexus@32473"]
    assert sd["id"] == ev.id and sd["org"] == "ac]me" and sd["status"] == "502"
    header, ext = parse_cef(msg.msg)
    assert header[:5] == ["CEF:0", "Nexus", "Nexus Gateway", "0.1", "request.failed"]
    assert header[6] == "8"  # error -> CEF 8
    assert ext["externalId"] == ev.id and ext["cs1"] == "ac]me" and ext["outcome"] == "502"
    assert ext["reason"] == 'upstream "said" ] no | a=b \\ done\nnext'
    as_json = parse_5424(
        formats.syslog_message(record, facility=13, hostname="h", app_name="a", msg=formats.json_msg(record))
    )
    assert json.loads(as_json.msg)["id"] == ev.id
