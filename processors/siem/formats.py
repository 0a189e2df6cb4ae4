"""Wire formats for SIEM sinks, as pure functions of a record:
RFC 5424 syslog (with RFC 6587 octet counting for stream transports), CEF,
Splunk HEC events, Elastic ``_bulk`` NDJSON and a JSON webhook body."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import msgspec

from processors.siem.records import severity, verdict_of

_json = msgspec.json.Encoder()
# RFC 5612's documentation enterprise number, as the SD-ID namespace.
SD_ID = "nexus@32473"
VENDOR, PRODUCT, VERSION = "Nexus", "Nexus Gateway", "0.1"

_CEF_SEVERITY = {3: 8, 4: 6, 5: 4, 6: 2}


def _timestamp(record: dict[str, Any]) -> str:
    ms = record.get("occurred_at_ms")
    if not isinstance(ms, int) or ms <= 0:
        return "-"
    t = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _printascii(value: str, limit: int) -> str:
    """HOSTNAME, APP-NAME and MSGID are PRINTUSASCII (33-126), bounded."""
    cleaned = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return cleaned or "-"


def _sd_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _tenant(record: dict[str, Any]) -> dict[str, Any]:
    t = record.get("tenant")
    return t if isinstance(t, dict) else {}


def structured_data(record: dict[str, Any]) -> str:
    tenant = _tenant(record)
    params = {
        "id": record.get("id", ""),
        "type": record.get("type", ""),
        "org": tenant.get("org_id", ""),
        "project": tenant.get("project_id", ""),
        "key": tenant.get("key_id", ""),
        "request": record.get("request_id", ""),
        "status": record.get("status", ""),
        "verdict": verdict_of(record),
    }
    body = " ".join(f'{k}="{_sd_value(str(v))}"' for k, v in params.items() if v not in ("", None))
    return f"[{SD_ID} {body}]"


def syslog_message(
    record: dict[str, Any], *, facility: int, hostname: str, app_name: str, msg: str, procid: str = "-"
) -> bytes:
    """One RFC 5424 message: ``<PRI>1 TIMESTAMP HOST APP PROCID MSGID [SD] MSG``."""
    pri = facility * 8 + severity(record)
    header = (
        f"<{pri}>1 {_timestamp(record)} {_printascii(hostname, 255)} {_printascii(app_name, 48)} "
        f"{_printascii(procid, 128)} {_printascii(str(record.get('type', '')), 32)}"
    )
    return f"{header} {structured_data(record)} {msg}".encode()


def octet_counted(message: bytes) -> bytes:
    """RFC 6587 / RFC 5425 framing: ``MSG-LEN SP SYSLOG-MSG``."""
    return str(len(message)).encode() + b" " + message


def json_msg(record: dict[str, Any]) -> str:
    return _json.encode(record).decode()


def _cef_header(value: str) -> str:
    return value.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _cef_ext(value: Any) -> str:
    text = str(value)
    return text.replace("\\", "\\\\").replace("=", "\\=").replace("\r", "\\r").replace("\n", "\\n")


def cef(record: dict[str, Any]) -> str:
    """ArcSight CEF:0.  The event id is ``externalId``; tenant fields go in
    the custom string slots with their labels."""
    tenant = _tenant(record)
    event_type = str(record.get("type", "event"))
    ext: list[tuple[str, Any]] = [
        ("rt", record.get("occurred_at_ms", "")),
        ("externalId", record.get("id", "")),
        ("cs1Label", "org"),
        ("cs1", tenant.get("org_id", "")),
        ("cs2Label", "project"),
        ("cs2", tenant.get("project_id", "")),
        ("cs3Label", "virtualKey"),
        ("cs3", tenant.get("key_id", "")),
        ("cs4Label", "requestId"),
        ("cs4", record.get("request_id", "")),
        ("suser", tenant.get("user_id", "")),
        ("src", record.get("client_ip", "")),
        ("requestMethod", record.get("method", "")),
        ("request", record.get("path", "")),
        ("outcome", record.get("status", "")),
        ("reason", record.get("reason") or record.get("reason_code", "")),
        ("cs5Label", "verdict"),
        ("cs5", verdict_of(record)),
        ("cs6Label", "model"),
        ("cs6", record.get("model") or record.get("provider_model") or record.get("requested_model", "")),
        ("dvchost", (record.get("node") or {}).get("id", "") if isinstance(record.get("node"), dict) else ""),
    ]
    cost = record.get("cost_usd")
    if isinstance(cost, (int, float)):
        ext += [("cfp1Label", "costUsd"), ("cfp1", cost)]
    pairs = " ".join(f"{k}={_cef_ext(v)}" for k, v in ext if v not in ("", None))
    sev = _CEF_SEVERITY.get(severity(record), 2)
    header = "|".join(
        _cef_header(x) for x in ("CEF:0", VENDOR, PRODUCT, VERSION, event_type, event_type.replace(".", " "))
    )
    return f"{header}|{sev}|{pairs}"


def hec_event(record: dict[str, Any], *, source: str, sourcetype: str, index: str) -> bytes:
    """One Splunk HEC ``/services/collector/event`` event (a batch is
    events back to back).  The event id is also an indexed field so a search
    can deduplicate."""
    ms = record.get("occurred_at_ms")
    node = record.get("node")
    ev: dict[str, Any] = {
        "host": node.get("id", "nexus") if isinstance(node, dict) else "nexus",
        "source": source,
        "sourcetype": sourcetype,
        "event": record,
        "fields": {"event_id": record.get("id", ""), "org": _tenant(record).get("org_id", "")},
    }
    if isinstance(ms, int):
        ev["time"] = round(ms / 1000, 3)
    if index:
        ev["index"] = index
    return _json.encode(ev) + b"\n"


def hec_batch(records: Sequence[dict[str, Any]], *, source: str, sourcetype: str, index: str) -> bytes:
    return b"".join(hec_event(r, source=source, sourcetype=sourcetype, index=index) for r in records)


def elastic_action(record: dict[str, Any], *, index: str) -> bytes:
    """One ``_bulk`` NDJSON pair with ``create`` and ``_id`` = event id:
    Elastic itself refuses a second copy (409), which the sink counts as
    delivered.  The parts of a split record get their own ids."""
    doc_id = str(record.get("id", ""))
    meta = record.get("nexus")
    if isinstance(meta, dict) and isinstance(meta.get("part"), dict):
        doc_id = f"{doc_id}.{meta['part'].get('index', 0)}"
    doc = dict(record)
    if isinstance(record.get("occurred_at_ms"), int):
        doc["@timestamp"] = _timestamp(record)
    return _json.encode({"create": {"_index": index, "_id": doc_id}}) + b"\n" + _json.encode(doc) + b"\n"


def elastic_bulk(records: Sequence[dict[str, Any]], *, index: str) -> bytes:
    return b"".join(elastic_action(r, index=index) for r in records)


def webhook_event(record: dict[str, Any]) -> bytes:
    return _json.encode(record)


def webhook_body(events: Sequence[bytes]) -> bytes:
    """``{"events": [...]}`` from events already encoded."""
    return b'{"events":[' + b",".join(events) + b"]}"
