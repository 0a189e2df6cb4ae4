"""Rollup maintenance: which buckets a batch made stale, and recomputing them.

Percentiles are recomputed exactly from the fact table for every stale
bucket, not merged from stored sketches.  Why: the facts sit next to the
rollups in the same columnar file, a refresh only reads the stale buckets'
rows, exact values are what analysts expect, and recomputation is
deterministic, so a replay reproduces the live rollups bit for bit.  A
mergeable sketch (t-digest, DDSketch) would be approximate and its merge
result depends on merge order; DuckDB also cannot persist aggregate states.
The price is that a day bucket is re-read when it is refreshed, which is why
refreshes run on a timer (see ``store``) rather than once per batch.

Every SUM is over integers or DECIMALs, so it is exact and order-free.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

import duckdb

from projections.analytics.schema import GRAINS
from projections.analytics.verdicts import COUNT_COLUMNS, FLAG_COLUMNS, Outcome

_TRUNC = {"minute": "minute", "hour": "hour", "day": "day"}


class Lookup(NamedTuple):
    """What the batch's requests look like before this batch's rollup step."""

    # (request id, its minute now, the minute it was last rolled into)
    buckets: list[tuple[str, datetime, datetime | None]]
    # requests that already have a compliance outcome row
    with_outcome: set[str]


def lookup(conn: duckdb.DuckDBPyConnection, request_ids: list[str]) -> Lookup:
    if not request_ids:
        return Lookup([], set())
    # Request ids are UUIDv7, so a batch's ids fall in a narrow range and the
    # BETWEENs let DuckDB skip every row group outside it by its min/max: the
    # lookup costs the same whether the tables hold a day or a year.  (Correct
    # for any ids; only the speed depends on their order.)
    rows = conn.execute(
        """
        SELECT ids.request_id, date_trunc('minute', t.first_seen_at), b.minute, v.request_id IS NOT NULL
        FROM (SELECT unnest($ids::VARCHAR[]) AS request_id) ids
        LEFT JOIN (
            SELECT request_id, first_seen_at FROM main.traffic_event
            WHERE request_id BETWEEN $lo AND $hi AND first_seen_at IS NOT NULL
        ) t USING (request_id)
        LEFT JOIN (
            SELECT request_id, minute FROM analytics.request_bucket WHERE request_id BETWEEN $lo AND $hi
        ) b USING (request_id)
        LEFT JOIN (
            SELECT request_id FROM analytics.request_verdict WHERE request_id BETWEEN $lo AND $hi
        ) v USING (request_id)
        """,
        {"ids": request_ids, "lo": min(request_ids), "hi": max(request_ids)},
    ).fetchall()
    return Lookup(
        [(rid, minute, old) for rid, minute, old, _ in rows if minute is not None],
        {rid for rid, _, _, has in rows if has},
    )


Mark = tuple[str, datetime]  # (grain, bucket)


def stale_minutes(
    conn: duckdb.DuckDBPyConnection, found: Lookup, already: frozenset[Mark] | set[Mark] = frozenset()
) -> set[Mark]:
    """Mark stale, at every grain, the minute each request is in now (from
    ``traffic_event``) and the minute it was last rolled into, then remember
    the new minute.  ``already``: marks known to be in ``analytics.dirty``
    (skipped: a day bucket is touched by every batch of that day).  Returns
    the marks written."""
    rows = found.buckets
    minutes: set[datetime] = set()
    new_ids: list[str] = []
    new_minutes: list[datetime] = []
    moved_ids: list[str] = []
    moved_minutes: list[datetime] = []
    for rid, minute, old in rows:
        minutes.add(minute)
        if old is None:
            new_ids.append(rid)
            new_minutes.append(minute)
        elif old != minute:
            moved_ids.append(rid)
            moved_minutes.append(minute)
            minutes.add(old)
    stale: set[Mark] = set()
    for m in minutes:
        stale.add(("minute", m))
        stale.add(("hour", m.replace(minute=0)))
        stale.add(("day", m.replace(hour=0, minute=0)))
    stale -= already
    if stale:
        grains, buckets = zip(*stale, strict=True)
        conn.execute(
            "INSERT INTO analytics.dirty SELECT unnest($1::VARCHAR[]), unnest($2::TIMESTAMP[]) "
            "ON CONFLICT DO NOTHING",
            [list(grains), list(buckets)],
        )
    # Plain INSERT / UPDATE rather than an upsert: the lookup above already
    # told which rows exist, and DuckDB's ON CONFLICT path is slower.
    if new_ids:
        conn.execute(
            "INSERT INTO analytics.request_bucket SELECT unnest($1::VARCHAR[]), unnest($2::TIMESTAMP[])",
            [new_ids, new_minutes],
        )
    if moved_ids:
        conn.execute(
            "UPDATE analytics.request_bucket AS b SET minute = m.minute "
            "FROM (SELECT unnest($1::VARCHAR[]) AS request_id, unnest($2::TIMESTAMP[]) AS minute) m "
            "WHERE b.request_id = m.request_id",
            [moved_ids, moved_minutes],
        )
    return stale


def add_outcomes(conn: duckdb.DuckDBPyConnection, outcomes: dict[str, Outcome], existing: set[str]) -> None:
    """Add a batch's compliance outcomes to ``analytics.request_verdict``:
    counts add up, flags stay set once set.  ``existing``: the ids that
    already have a row (plain INSERT and UPDATE are cheaper than an upsert)."""
    cols = COUNT_COLUMNS + FLAG_COLUMNS

    def columns(ids: list[str]) -> tuple[str, list[object]]:
        args: list[object] = [ids] + [[getattr(outcomes[r], c) for r in ids] for c in cols]
        unnests = ", ".join(
            ["unnest($1::VARCHAR[]) AS request_id"]
            + [
                f"unnest(${i}::{'BOOLEAN' if c in FLAG_COLUMNS else 'INTEGER'}[]) AS {c}"
                for i, c in enumerate(cols, 2)
            ]
        )
        return f"SELECT {unnests}", args

    fresh = [r for r in outcomes if r not in existing]
    again = [r for r in outcomes if r in existing]
    if fresh:
        select, args = columns(fresh)
        conn.execute(f"INSERT INTO analytics.request_verdict (request_id, {', '.join(cols)}) {select}", args)
    if again:
        select, args = columns(again)
        updates = ", ".join(
            [f"{c} = v.{c} + d.{c}" for c in COUNT_COLUMNS] + [f"{c} = v.{c} OR d.{c}" for c in FLAG_COLUMNS]
        )
        conn.execute(
            f"UPDATE analytics.request_verdict AS v SET {updates} FROM ({select}) d "  # noqa: S608
            "WHERE v.request_id = d.request_id",
            args,
        )


_AGGREGATES = """
    count(*) AS requests,
    count(*) FILTER (WHERE outcome = 'completed' AND coalesce(status, 0) < 400) AS ok,
    count(*) FILTER (WHERE outcome <> 'completed' OR coalesce(status, 0) >= 400) AS errors,
    count(*) FILTER (WHERE (outcome <> 'completed' OR status >= 400) AND status BETWEEN 400 AND 499)
        AS errors_4xx,
    count(*) FILTER (WHERE (outcome <> 'completed' OR status >= 400) AND status >= 500) AS errors_5xx,
    count(*) FILTER (WHERE stream) AS streamed,
    CAST(sum(prompt_tokens) AS BIGINT) AS prompt_tokens,
    CAST(sum(completion_tokens) AS BIGINT) AS completion_tokens,
    CAST(sum(cached_tokens) AS BIGINT) AS cached_tokens,
    CAST(sum(reasoning_tokens) AS BIGINT) AS reasoning_tokens,
    CAST(sum(total_tokens) AS BIGINT) AS total_tokens,
    CAST(sum(cost_usd) AS DECIMAL(38,10)) AS cost_usd,
    CAST(sum(cache_savings_usd) AS DECIMAL(38,10)) AS cache_savings_usd,
    count(*) FILTER (WHERE cache_status IN ('hit', 'semantic_hit')) AS cache_hits,
    CAST(coalesce(sum(CAST(latency_ms AS DECIMAL(18,3))), 0) AS DECIMAL(38,3)) AS latency_sum_ms,
    quantile_cont(latency_ms, 0.5) AS latency_p50_ms,
    quantile_cont(latency_ms, 0.95) AS latency_p95_ms,
    quantile_cont(latency_ms, 0.99) AS latency_p99_ms,
    max(latency_ms) AS latency_max_ms,
    quantile_cont(ttft_ms, 0.5) AS ttft_p50_ms,
    quantile_cont(ttft_ms, 0.95) AS ttft_p95_ms,
    CAST(sum(verdict_approve) AS BIGINT) AS verdict_approve,
    CAST(sum(verdict_redact) AS BIGINT) AS verdict_redact,
    CAST(sum(verdict_block) AS BIGINT) AS verdict_block,
    CAST(sum(verdict_error) AS BIGINT) AS verdict_error,
    CAST(sum(findings) AS BIGINT) AS findings,
    count(*) FILTER (WHERE blocked) AS blocked,
    count(*) FILTER (WHERE redacted) AS redacted
"""


def refresh(conn: duckdb.DuckDBPyConnection, grain: str) -> int:
    """Recompute every stale bucket of ``grain`` from the facts and clear its
    stale marks.  Returns how many buckets were refreshed.  Runs inside the
    caller's transaction."""
    if grain not in _TRUNC:
        raise ValueError(f"unknown grain {grain!r}")
    unit = _TRUNC[grain]
    row = conn.execute(
        "SELECT count(*), min(bucket), max(bucket) FROM analytics.dirty WHERE grain = ?", [grain]
    ).fetchone()
    if row is None or not row[0]:
        return 0
    n, lo, hi = int(row[0]), row[1], row[2]
    conn.execute(
        f"DELETE FROM analytics.rollup_{grain} "  # noqa: S608 - identifiers and literals from this module only
        "WHERE bucket IN (SELECT bucket FROM analytics.dirty WHERE grain = ?)",
        [grain],
    )
    # The explicit ts range lets DuckDB skip row groups by their min/max
    # before the bucket semi-join.
    conn.execute(
        f"""
        INSERT INTO analytics.rollup_{grain}
        SELECT date_trunc('{unit}', ts) AS bucket, org_id, project_id, key_id, model, provider,
        {_AGGREGATES}
        FROM analytics.requests
        WHERE outcome IS NOT NULL
          AND ts >= $lo AND ts < $hi + INTERVAL 1 {unit}
          AND date_trunc('{unit}', ts) IN (SELECT bucket FROM analytics.dirty WHERE grain = $grain)
        GROUP BY ALL
        """,  # noqa: S608 - identifiers and literals from this module only
        {"lo": lo, "hi": hi, "grain": grain},
    )
    conn.execute("DELETE FROM analytics.dirty WHERE grain = ?", [grain])
    return n


def dirty_counts(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    rows = conn.execute("SELECT grain, count(*) FROM analytics.dirty GROUP BY grain").fetchall()
    found = {str(g): int(c) for g, c in rows}
    return {g: found.get(g, 0) for g in GRAINS}


def rebuild(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Recompute every rollup from ``traffic_event`` as it stands: for a file
    the base projector filled without the analytics store.  Verdict counts
    come from events, so only a replay restores those.  Runs inside the
    caller's transaction."""
    for grain in GRAINS:
        conn.execute(f"DELETE FROM analytics.rollup_{grain}")  # noqa: S608 - grain from GRAINS
    conn.execute("DELETE FROM analytics.request_bucket")
    conn.execute(
        "INSERT INTO analytics.request_bucket SELECT request_id, date_trunc('minute', first_seen_at) "
        "FROM main.traffic_event WHERE first_seen_at IS NOT NULL"
    )
    conn.execute("DELETE FROM analytics.dirty")
    for grain in GRAINS:
        conn.execute(
            f"INSERT INTO analytics.dirty SELECT DISTINCT '{grain}', date_trunc('{grain}', minute) "  # noqa: S608
            "FROM analytics.request_bucket"
        )
    return {grain: refresh(conn, grain) for grain in GRAINS}
