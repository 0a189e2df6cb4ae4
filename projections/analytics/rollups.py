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

import duckdb

from projections.analytics.schema import GRAINS
from projections.analytics.verdicts import COUNT_COLUMNS, FLAG_COLUMNS, Outcome

_TRUNC = {"minute": "minute", "hour": "hour", "day": "day"}


def stale_minutes(conn: duckdb.DuckDBPyConnection, request_ids: list[str]) -> int:
    """Mark the buckets of ``request_ids`` stale, at every grain: the minute
    each request is in now (from ``traffic_event``) and the minute it was
    last rolled into, then remember the new minute.  Returns how many minute
    buckets were marked.  One read and two writes, whatever the batch size."""
    if not request_ids:
        return 0
    rows = conn.execute(
        """
        SELECT t.request_id, date_trunc('minute', t.first_seen_at), b.minute
        FROM (SELECT unnest($1::VARCHAR[]) AS request_id) ids
        JOIN main.traffic_event t USING (request_id)
        LEFT JOIN analytics.request_bucket b USING (request_id)
        WHERE t.first_seen_at IS NOT NULL
        """,
        [request_ids],
    ).fetchall()
    minutes: set[datetime] = set()
    moved_ids: list[str] = []
    moved_minutes: list[datetime] = []
    for rid, minute, old in rows:
        minutes.add(minute)
        if old != minute:
            moved_ids.append(rid)
            moved_minutes.append(minute)
            if old is not None:
                minutes.add(old)
    if not minutes:
        return 0
    stale: set[tuple[str, datetime]] = set()
    for m in minutes:
        stale.add(("minute", m))
        stale.add(("hour", m.replace(minute=0)))
        stale.add(("day", m.replace(hour=0, minute=0)))
    grains, buckets = zip(*stale, strict=True)
    conn.execute(
        "INSERT INTO analytics.dirty SELECT unnest($1::VARCHAR[]), unnest($2::TIMESTAMP[]) "
        "ON CONFLICT DO NOTHING",
        [list(grains), list(buckets)],
    )
    if moved_ids:
        conn.execute(
            "INSERT INTO analytics.request_bucket "
            "SELECT unnest($1::VARCHAR[]), unnest($2::TIMESTAMP[]) "
            "ON CONFLICT (request_id) DO UPDATE SET minute = EXCLUDED.minute",
            [moved_ids, moved_minutes],
        )
    return len(minutes)


def add_outcomes(conn: duckdb.DuckDBPyConnection, outcomes: dict[str, Outcome]) -> None:
    """Add a batch's compliance outcomes to ``analytics.request_verdict``:
    counts add up, flags stay set once set."""
    if not outcomes:
        return
    ids = list(outcomes)
    cols = COUNT_COLUMNS + FLAG_COLUMNS
    args: list[object] = [ids] + [[getattr(outcomes[r], c) for r in ids] for c in cols]
    unnests = ", ".join(
        ["unnest($1::VARCHAR[]) AS request_id"]
        + [
            f"unnest(${i}::{'BOOLEAN' if c in FLAG_COLUMNS else 'INTEGER'}[]) AS {c}"
            for i, c in enumerate(cols, 2)
        ]
    )
    updates = ", ".join(
        [f"{c} = v.{c} + EXCLUDED.{c}" for c in COUNT_COLUMNS]
        + [f"{c} = v.{c} OR EXCLUDED.{c}" for c in FLAG_COLUMNS]
    )
    conn.execute(
        f"INSERT INTO analytics.request_verdict AS v (request_id, {', '.join(cols)}) "  # noqa: S608
        f"SELECT * FROM (SELECT {unnests}) ON CONFLICT (request_id) DO UPDATE SET {updates}",
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
    count(*) FILTER (WHERE cache_status = 'hit') AS cache_hits,
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
