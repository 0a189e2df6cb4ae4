"""The DuckDB projection store with analytics rollups maintained alongside.

``AnalyticsDuckDBStore`` is the base ``DuckDBStore`` (``traffic_event`` and its
checkpoint, unchanged) plus, on the same connection and thread, right after
each of its transactions, a second one that records the batch's compliance
outcomes, marks the rollup buckets the batch touched as stale
(``analytics.dirty``) and moves the rollup checkpoint
(``projection_checkpoint`` row ``analytics_rollup``).  A refresher recomputes
the stale buckets from the facts every ``refresh_every_s`` seconds (less often
while refreshes are expensive, see ``_tick``), when the store closes, and on
``refresh_now``.

Why two transactions: the base store's transaction is its own.  The gap is
closed by ``position`` answering the smaller of the two checkpoints, so after
a crash between them the lane re-delivers the batch, the base store skips it
(its checkpoint covers it) and the rollup side catches up.

Why the refresh is decoupled from the batch: recomputing a bucket re-reads
its facts (exact percentiles, see ``rollups``), so refreshing once per second
instead of once per batch keeps the projector's throughput independent of how
many batches hit the same hour or day.  The stale marks are written with the
checkpoint, so what a crash interrupts is refreshed after the restart.  A
rollup is behind ``traffic_event`` by at most ``refresh_every_s`` (or nine
times the last refresh's duration, when that is longer).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from projections.analytics import metrics
from projections.analytics.rollups import (
    Mark,
    add_outcomes,
    dirty_counts,
    lookup,
    rebuild,
    refresh,
    stale_minutes,
)
from projections.analytics.schema import GRAINS, SchemaVersionError, drop_schema, ensure_schema
from projections.analytics.verdicts import fold_outcomes
from projections.duck_store import DuckDBStore
from projections.store import Item, fresh_items
from streams.tasks import stop_tasks

log = logging.getLogger("nexus.projections.analytics")

PROJECTION = "analytics_rollup"
_REFRESH_DUTY = 9.0  # wait this many times the last refresh before the next


class AnalyticsDuckDBStore(DuckDBStore):
    def __init__(self, path: str | Path, *, refresh_every_s: float = 1.0) -> None:
        super().__init__(path)
        self.refresh_every_s = refresh_every_s
        self._rollup_seq: dict[str, int] = {}
        self._stale_since: float | None = None
        # Stale marks written since the last refresh (mirrors analytics.dirty
        # after each commit), so a batch does not re-mark the same day.
        self._marked: set[Mark] = set()
        self._ticker: asyncio.Task[None] | None = None

    # --- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        if self._conn is not None:
            return
        await super().open()
        await self._run(self._ensure_schema)
        self._rollup_seq.clear()
        self._marked.clear()
        # Stale marks left by an earlier run are refreshed on the first tick.
        self._stale_since = time.monotonic()
        if self.refresh_every_s > 0:
            self._ticker = asyncio.create_task(self._tick(), name="analytics-rollup-refresh")

    def _ensure_schema(self) -> None:
        try:
            ensure_schema(self.conn)
        except SchemaVersionError as exc:
            # Everything in the analytics schema is derived from the stream:
            # drop it and let the rollup side re-read the stream from the
            # start (the base table keeps its rows and its checkpoint).
            log.warning("analytics: %s; rebuilding the analytics schema from the stream", exc)
            drop_schema(self.conn)
            self.conn.execute("DELETE FROM projection_checkpoint WHERE projection = ?", [PROJECTION])
            ensure_schema(self.conn)
        self._adopt_existing_facts()

    def _adopt_existing_facts(self) -> None:
        """A file the base store filled without the rollups (or whose analytics
        schema was just rebuilt): roll up what ``traffic_event`` holds now,
        which covers traffic already aged out of the stream.  The rollup
        checkpoint stays where it is, so the lane still re-reads what the
        stream holds (compliance outcomes come only from events)."""
        conn = self.conn
        has_checkpoint = conn.execute(
            "SELECT count(*) FROM projection_checkpoint WHERE projection = ?", [PROJECTION]
        ).fetchall()[0][0]
        has_rollups = conn.execute("SELECT count(*) FROM analytics.request_bucket").fetchall()[0][0]
        has_facts = conn.execute("SELECT count(*) FROM main.traffic_event").fetchall()[0][0]
        if has_checkpoint or has_rollups or not has_facts:
            return
        log.info("analytics: rolling up %d existing traffic_event rows", has_facts)
        conn.execute("BEGIN TRANSACTION")
        try:
            rebuild(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            await stop_tasks(ticker)
        if self._conn is not None:
            try:
                await self.refresh_now()
            except Exception:
                # The stale marks survive; the next open refreshes them.
                log.exception("analytics: final rollup refresh failed")
        await super().close()

    async def reset(self) -> None:
        self._stale_since = None  # nothing for the ticker to do while tables are swapped
        await self._run(lambda: drop_schema(self.conn))
        await super().reset()
        await self._run(lambda: ensure_schema(self.conn))
        self._rollup_seq.clear()
        self._marked.clear()

    async def _tick(self) -> None:
        # Under heavy catch-up (a replay) a refresh re-reads whole hours and
        # days; waiting nine times as long as the last refresh took keeps
        # refreshes under a tenth of the store's time whatever the volume.
        delay = self.refresh_every_s
        while True:
            await asyncio.sleep(delay)
            if self._stale_since is None:
                delay = self.refresh_every_s
                continue
            started = time.monotonic()
            try:
                await self.refresh_now()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("analytics: rollup refresh failed; retrying on the next tick")
            delay = max(self.refresh_every_s, (time.monotonic() - started) * _REFRESH_DUTY)

    async def refresh_now(self) -> dict[str, int]:
        """Recompute every stale bucket; returns buckets refreshed per grain."""
        return await self._run(self._refresh_tx)

    # --- positions ---------------------------------------------------------

    def _rollup_position(self, stream: str) -> int:
        cached = self._rollup_seq.get(stream)
        if cached is not None:
            return cached
        row = self.conn.execute(
            "SELECT last_seq FROM projection_checkpoint WHERE projection = ? AND stream = ?",
            [PROJECTION, stream],
        ).fetchone()
        seq = int(row[0]) if row else 0
        self._rollup_seq[stream] = seq
        return seq

    def _save_checkpoint(self, stream: str, previous: int, last_seq: int) -> None:
        # An UPDATE of the existing row is several times cheaper in DuckDB
        # than an INSERT .. ON CONFLICT; the row exists once anything was applied.
        if previous > 0:
            self.conn.execute(
                "UPDATE projection_checkpoint SET last_seq = ?, updated_at = current_timestamp "
                "WHERE projection = ? AND stream = ?",
                [last_seq, PROJECTION, stream],
            )
        else:
            self.conn.execute(
                "INSERT INTO projection_checkpoint (projection, stream, last_seq, updated_at) "
                "VALUES (?, ?, ?, current_timestamp) "
                "ON CONFLICT (projection, stream) DO UPDATE SET "
                "last_seq = EXCLUDED.last_seq, updated_at = EXCLUDED.updated_at",
                [PROJECTION, stream, last_seq],
            )

    async def position(self, stream: str) -> int:
        def _both() -> int:
            base, rollups = self._position(stream), self._rollup_position(stream)
            metrics.LAG_EVENTS.set(max(0, base - rollups))
            return min(base, rollups)

        return await self._run(_both)

    # --- applying ----------------------------------------------------------

    def _apply(self, stream: str, items: Sequence[Item], last_seq: int) -> int:
        applied = super()._apply(stream, items, last_seq)
        self._apply_rollups(stream, items, last_seq)
        return applied

    def _apply_rollups(self, stream: str, items: Sequence[Item], last_seq: int) -> None:
        checkpoint = self._rollup_position(stream)
        if last_seq <= checkpoint:
            return
        started = time.perf_counter()
        conn = self.conn
        events = [ev for _, ev in fresh_items(items, checkpoint)]
        ids = list({rid for ev in events if (rid := getattr(ev, "request_id", ""))})
        conn.execute("BEGIN TRANSACTION")
        try:
            found = lookup(conn, ids)
            add_outcomes(conn, fold_outcomes(events), found.with_outcome)
            marked = stale_minutes(conn, found, self._marked)
            self._save_checkpoint(stream, checkpoint, last_seq)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._rollup_seq[stream] = last_seq
        self._marked |= marked
        if marked and self._stale_since is None:
            self._stale_since = time.monotonic()
        metrics.EVENTS.inc(len(events))
        metrics.CHECKPOINT.set(last_seq)
        metrics.LAG_EVENTS.set(0)  # the base store just applied up to last_seq too
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        metrics.STALENESS_SECONDS.set(self._staleness())

    def _refresh_tx(self) -> dict[str, int]:
        conn = self.conn
        out: dict[str, int] = {}
        conn.execute("BEGIN TRANSACTION")
        try:
            for grain in GRAINS:
                started = time.perf_counter()
                out[grain] = refresh(conn, grain)
                metrics.REFRESH_SECONDS.labels(grain).observe(time.perf_counter() - started)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._stale_since = None
        self._marked.clear()
        for grain, n in out.items():
            metrics.BUCKETS_REFRESHED.labels(grain).inc(n)
        for grain, n in dirty_counts(conn).items():
            metrics.STALE_BUCKETS.labels(grain).set(n)
        metrics.STALENESS_SECONDS.set(0.0)
        return out

    def _staleness(self) -> float:
        since = self._stale_since
        return 0.0 if since is None else time.monotonic() - since
