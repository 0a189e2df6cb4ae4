"""The hash chain, as pure functions: what a record's canonical content is,
how it is hashed, and how a stored run of records is checked.

A record commits to its predecessor: ``hash = sha256(prev_hash || content)``
where ``content`` is the canonical JSON (sorted keys, msgspec) of the
record's facts: its chain position, the stream and sequence it came from,
the event's id, type, tenant and fields, with every body replaced by its
digest.  Bodies can therefore be purged without breaking the chain, and any
edit, reorder, insertion or deletion of records changes a hash downstream.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable
from typing import Any

import msgspec

from streams.poison import store_text

GENESIS = bytes(32)

_canonical = msgspec.json.Encoder(order="sorted")
_any = msgspec.json.Decoder()


class BodyCopy(msgspec.Struct, frozen=True):
    """An inline body found in an event: kept apart from the chained content."""

    path: str
    content_type: str
    data: bytes
    sha256: str


class Record(msgspec.Struct, frozen=True, kw_only=True):
    """One audit row as stored; ``content`` is the chained canonical JSON."""

    n: int
    event_id: str
    event_type: str
    stream: str
    stream_seq: int
    occurred_at_ms: int
    org_id: str
    project_id: str
    key_id: str
    request_id: str
    content: str
    prev_hash: bytes
    hash: bytes


def _is_body(value: Any) -> bool:
    return isinstance(value, dict) and ("inline" in value or "ref" in value) and "size" in value


def _digest_bodies(value: Any, path: str, out: list[BodyCopy]) -> Any:
    """Replace every Body-shaped object by its digest, collecting inline bytes.
    Generic on purpose: event types this processor has never seen (verdicts,
    admin actions, a newer producer's) are recorded the same way."""
    if _is_body(value):
        digest: dict[str, Any] = {k: v for k, v in value.items() if k != "inline"}
        inline = value.get("inline")
        if isinstance(inline, str):
            try:
                data = base64.b64decode(inline, validate=True)
            except (binascii.Error, ValueError):
                data = inline.encode()
            sha = hashlib.sha256(data).hexdigest()
            digest["sha256"] = sha
            digest["size"] = len(data)
            out.append(BodyCopy(path, str(value.get("content_type", "")), data, sha))
        return digest
    if isinstance(value, dict):
        return {k: _digest_bodies(v, f"{path}.{k}" if path else k, out) for k, v in value.items()}
    if isinstance(value, list):
        return [_digest_bodies(v, f"{path}[{i}]", out) for i, v in enumerate(value)]
    return value


def _text(d: dict[str, Any], key: str) -> str:
    """A chained fact as its indexed column holds it: NUL and lone
    surrogates as U+FFFD, over 1 KB cut to its start and SHA-256
    (``streams.poison.store_text``); the chained content keeps it exact."""
    v = d.get(key)
    return store_text(v) if isinstance(v, str) else ""


# The last millisecond of year 9999: a later (or absurd) time is not a
# timestamp the column can hold, and is recorded as none (0).
_MAX_MS = 253_402_300_799_999


def _millis(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= _MAX_MS else 0


def build_record(
    *, n: int, prev_hash: bytes, stream: str, stream_seq: int, raw: bytes, unstorable: str = ""
) -> tuple[Record, list[BodyCopy]]:
    """The record for one stream message.  Undecodable bytes are still
    recorded (type ``undecodable``, with the digest of the raw payload): an
    audit trail notes what arrived, it does not pick.  ``unstorable`` (the
    database's reason) records a message Postgres refused the same way, as
    type ``unstorable`` with that reason; its exact bytes stay in the stream
    and on the dead-letter subject."""
    bodies: list[BodyCopy] = []
    event: Any = None
    if not unstorable:
        try:
            event = _any.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            event = None
    if not isinstance(event, dict):
        event = {
            "type": "unstorable" if unstorable else "undecodable",
            "raw": {"sha256": hashlib.sha256(raw).hexdigest(), "size": len(raw)},
        }
        if unstorable:
            event["reason"] = unstorable
    facts = _digest_bodies(event, "", bodies)
    content_obj = {"n": n, "stream": stream, "seq": stream_seq, "event": facts}
    content = _canonical.encode(content_obj).decode()
    raw_tenant = facts.get("tenant")
    tenant: dict[str, Any] = raw_tenant if isinstance(raw_tenant, dict) else {}
    rec = Record(
        n=n,
        event_id=_text(facts, "id"),
        event_type=_text(facts, "type"),
        stream=stream,
        stream_seq=stream_seq,
        occurred_at_ms=_millis(facts.get("occurred_at_ms")),
        org_id=_text(tenant, "org_id"),
        project_id=_text(tenant, "project_id"),
        key_id=_text(tenant, "key_id"),
        request_id=_text(facts, "request_id"),
        content=content,
        prev_hash=prev_hash,
        hash=chain_hash(prev_hash, content),
    )
    return rec, bodies


def chain_hash(prev_hash: bytes, content: str) -> bytes:
    return hashlib.sha256(prev_hash + content.encode()).digest()


class Break(msgspec.Struct, frozen=True):
    """The first place the chain does not hold."""

    n: int
    event_id: str
    stream_seq: int
    reason: str

    def describe(self) -> str:
        where = f"record {self.n}"
        if self.event_id:
            where += f" (event {self.event_id}, stream seq {self.stream_seq})"
        return f"{where}: {self.reason}"


def _columns_match(rec: Record) -> str | None:
    """The indexed columns are copies of chained facts; a copy that differs
    from the content was edited after the fact."""
    try:
        content = _any.decode(rec.content)
    except msgspec.DecodeError:
        return "content is not valid JSON"
    if not isinstance(content, dict):
        return "content is not a JSON object"
    raw_event = content.get("event")
    event: dict[str, Any] = raw_event if isinstance(raw_event, dict) else {}
    raw_tenant = event.get("tenant")
    tenant: dict[str, Any] = raw_tenant if isinstance(raw_tenant, dict) else {}
    expected = {
        "n": (content.get("n"), rec.n),
        "stream": (content.get("stream"), rec.stream),
        "stream_seq": (content.get("seq"), rec.stream_seq),
        "event_id": (_text(event, "id"), rec.event_id),
        "event_type": (_text(event, "type"), rec.event_type),
        "org_id": (_text(tenant, "org_id"), rec.org_id),
        "project_id": (_text(tenant, "project_id"), rec.project_id),
        "key_id": (_text(tenant, "key_id"), rec.key_id),
        "request_id": (_text(event, "request_id"), rec.request_id),
        "occurred_at": (_millis(event.get("occurred_at_ms")), rec.occurred_at_ms),
    }
    for column, (chained, stored) in expected.items():
        if chained != stored:
            return f"column {column} ({stored!r}) differs from the chained content ({chained!r})"
    return None


def verify_run(records: Iterable[Record], *, first_n: int, prev_hash: bytes) -> tuple[int, Break | None]:
    """Check consecutive records starting at position ``first_n`` whose
    predecessor's hash is ``prev_hash``.  Returns how many were checked and
    the first break, if any."""
    expected_n = first_n
    checked = 0
    for rec in records:
        if rec.n != expected_n:
            if rec.n > expected_n:
                missing = f"{expected_n}" if rec.n == expected_n + 1 else f"{expected_n}-{rec.n - 1}"
                return checked, Break(
                    n=expected_n, event_id="", stream_seq=0, reason=f"missing (records {missing} deleted)"
                )
            return checked, Break(rec.n, rec.event_id, rec.stream_seq, "duplicate chain position")
        if rec.prev_hash != prev_hash:
            return checked, Break(
                rec.n,
                rec.event_id,
                rec.stream_seq,
                f"prev_hash does not match record {rec.n - 1}'s hash (one of the two was rewritten)",
            )
        if chain_hash(prev_hash, rec.content) != rec.hash:
            return checked, Break(
                rec.n, rec.event_id, rec.stream_seq, "content does not match its hash (record altered)"
            )
        mismatch = _columns_match(rec)
        if mismatch:
            return checked, Break(rec.n, rec.event_id, rec.stream_seq, mismatch)
        prev_hash = rec.hash
        expected_n += 1
        checked += 1
    return checked, None
