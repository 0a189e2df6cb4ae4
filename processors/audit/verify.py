"""Verify a range of the audit chain stored in Postgres."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import asyncpg
import msgspec

from processors.audit import store
from processors.audit.chain import GENESIS, Break, verify_run

_PAGE = 5000
_any = msgspec.json.Decoder()
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


class VerifyResult(msgspec.Struct, frozen=True):
    first_n: int
    last_n: int  # the last record checked (first_n - 1 when none)
    checked: int
    head_n: int  # the chain head: how many records the writer says exist
    broken: Break | None = None
    bodies_checked: int = 0

    @property
    def ok(self) -> bool:
        return self.broken is None

    def describe(self) -> str:
        if self.broken is not None:
            return f"audit chain BROKEN at {self.broken.describe()}"
        span = f"records {self.first_n}-{self.last_n}" if self.checked else "no records"
        return (
            f"audit chain OK: {span} ({self.checked} checked, chain head {self.head_n}; "
            f"{self.bodies_checked} stored bodies match their digests)"
        )


async def verify(conn: asyncpg.Connection[Any], *, from_n: int = 1, to_n: int | None = None) -> VerifyResult:
    """Check records ``from_n``..``to_n`` (inclusive; to the chain head when
    ``to_n`` is None) and report the first break."""
    from_n = max(from_n, 1)
    head = await conn.fetchrow("SELECT n, hash FROM audit_chain WHERE chain = $1", store.CHAIN)
    head_n = int(head["n"]) if head else 0
    head_hash = bytes(head["hash"]) if head else GENESIS
    # The chain head is authoritative for how many records exist.
    end = head_n if to_n is None else min(to_n, head_n)

    def result(checked: int, brk: Break | None, bodies: int = 0) -> VerifyResult:
        return VerifyResult(from_n, from_n + checked - 1, checked, head_n, brk, bodies)

    if from_n == 1:
        prev = GENESIS
    else:
        before = await conn.fetchval("SELECT hash FROM audit_log WHERE n = $1", from_n - 1)
        if before is None:
            return result(0, Break(from_n - 1, "", 0, "missing (the record before the range is deleted)"))
        prev = bytes(before)
    checked = 0
    next_n = from_n
    while next_n <= end:
        rows = await conn.fetch(
            f"{store.SELECT_RECORDS} WHERE n >= $1 AND n <= $2 ORDER BY n LIMIT {_PAGE}", next_n, end
        )
        if not rows:
            break
        records = [store.record_from_row(r) for r in rows]
        count, brk = verify_run(records, first_n=next_n, prev_hash=prev)
        checked += count
        if brk is not None:
            return result(checked, brk)
        prev = records[-1].hash
        next_n = records[-1].n + 1
    if next_n <= end:
        missing = f"{next_n}" if next_n == end else f"{next_n}-{end}"
        return result(checked, Break(next_n, "", 0, f"missing (records {missing} deleted)"))
    if to_n is None and checked and prev != head_hash:
        return result(checked, Break(end, "", 0, "the chain head's hash does not match the last record"))
    later = await conn.fetchval("SELECT min(n) FROM audit_log WHERE n > $1", head_n)
    if to_n is None and later is not None:
        return result(checked, Break(int(later), "", 0, "record beyond the chain head (inserted)"))
    bodies, brk = await _verify_bodies(conn, from_n, end)
    return result(checked, brk, bodies)


async def _verify_bodies(conn: asyncpg.Connection[Any], from_n: int, to_n: int) -> tuple[int, Break | None]:
    """Stored bodies must hash to the digest their record chained; purged
    bodies are simply absent, which is fine."""
    rows = await conn.fetch(
        "SELECT l.n, l.event_id, l.stream_seq, l.content::text AS content, b.path, b.data"
        " FROM audit_body b JOIN audit_log l ON l.event_id = b.event_id"
        " WHERE l.n >= $1 AND l.n <= $2 ORDER BY l.n",
        from_n,
        to_n,
    )
    for r in rows:
        chained = _at(_any.decode(r["content"]).get("event"), r["path"])
        digest = chained.get("sha256") if isinstance(chained, dict) else None
        if digest != hashlib.sha256(bytes(r["data"])).hexdigest():
            return len(rows), Break(
                int(r["n"]),
                r["event_id"],
                int(r["stream_seq"]),
                f"stored body {r['path']!r} does not match its chained digest (body altered)",
            )
    return len(rows), None


def _at(value: Any, path: str) -> Any:
    for name, index in _PATH_PART.findall(path):
        if name:
            value = value.get(name) if isinstance(value, dict) else None
        else:
            i = int(index)
            value = value[i] if isinstance(value, list) and i < len(value) else None
    return value
