"""``nexus analytics``: export Parquet, refresh or rebuild rollups, status.

These open the DuckDB file themselves, which DuckDB allows only while no
other process (a running projector, a notebook) has it open.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TypeVar

import duckdb

from projections.analytics.export import ExportError, export
from projections.analytics.rollups import dirty_counts, rebuild, refresh
from projections.analytics.schema import GRAINS, SchemaVersionError, ensure_schema
from projections.duckfile import open_duckdb
from projections.settings import DEFAULT_DUCKDB_PATH
from streams.config_base import ConfigError
from streams.settings import load_settings

_T = TypeVar("_T")


class CliError(RuntimeError):
    pass


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day (YYYY-MM-DD)") from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nexus analytics", description="DuckDB analytics: rollups and Parquet export"
    )
    p.add_argument(
        "--db",
        help=f"the DuckDB file (default: $NEXUS_DUCKDB_PATH or {DEFAULT_DUCKDB_PATH})",
    )
    sub = p.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="write requests and rollups as Parquet, one folder per day")
    ex.add_argument("--out", required=True, type=Path, help="destination folder")
    ex.add_argument("--from", dest="day_from", type=_day, help="first day (UTC), inclusive")
    ex.add_argument("--to", dest="day_to", type=_day, help="last day (UTC), inclusive")
    rf = sub.add_parser("refresh", help="recompute stale rollup buckets")
    rf.add_argument(
        "--rebuild",
        action="store_true",
        help="recompute every rollup from traffic_event (verdict counts need `nexus replay duckdb`)",
    )
    sub.add_parser("status", help="checkpoints, row counts and stale buckets")
    return p


def _open(path: Path) -> duckdb.DuckDBPyConnection:
    if not path.exists():
        raise CliError(f"no DuckDB file at {path} (set NEXUS_DUCKDB_PATH or pass --db)")
    try:
        conn = open_duckdb(path)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise CliError(
                f"{path} is open in another process (a running projector or notebook); "
                "stop it, or run this against a copy of the file"
            ) from None
        raise CliError(f"cannot open {path}: {exc}") from None
    except duckdb.Error as exc:
        raise CliError(f"{path} is not a DuckDB database: {exc}") from None
    has_facts = conn.execute(
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_schema = 'main' AND table_name = 'traffic_event'"
    ).fetchone()
    if not has_facts or not has_facts[0]:
        conn.close()
        raise CliError(f"{path} has no traffic_event table: run the projector (`nexus project`) first")
    return conn


def _in_tx(conn: duckdb.DuckDBPyConnection, fn: Callable[[], _T]) -> _T:
    conn.execute("BEGIN TRANSACTION")
    try:
        out = fn()
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return out


def _prepare(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the analytics schema if needed and bring the rollups current."""
    existed = conn.execute(
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_schema = 'analytics' AND table_name = 'meta'"
    ).fetchone()
    ensure_schema(conn)
    if existed and existed[0]:
        _in_tx(conn, lambda: [refresh(conn, g) for g in GRAINS])
    else:
        # The base projector filled this file without the analytics store.
        _in_tx(conn, lambda: rebuild(conn))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        db = load_settings({"duckdb_path": args.db}).duckdb_path
    except ConfigError as exc:
        print(f"nexus analytics: {exc}", file=sys.stderr)
        return 2
    path = Path(db or DEFAULT_DUCKDB_PATH).expanduser()
    try:
        conn = _open(path)
        try:
            return _run(args, conn, path)
        finally:
            conn.close()
    except (CliError, ExportError, SchemaVersionError) as exc:
        print(f"nexus analytics: {exc}", file=sys.stderr)
        return 1
    except duckdb.Error as exc:
        print(f"nexus analytics: DuckDB error: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, conn: duckdb.DuckDBPyConnection, path: Path) -> int:
    _prepare(conn)
    if args.command == "export":
        result = export(conn, args.out, day_from=args.day_from, day_to=args.day_to)
        if not result.days:
            print(f"nothing to export from {path} in that range")
            return 0
        span = f"{result.days[0]} .. {result.days[-1]}" if len(result.days) > 1 else str(result.days[0])
        rows = ", ".join(f"{name} {n}" for name, n in result.rows.items())
        print(f"exported {len(result.days)} day(s) ({span}) to {result.out}: {rows} rows")
        return 0
    if args.command == "refresh":
        if args.rebuild:
            done = _in_tx(conn, lambda: rebuild(conn))
            print("rebuilt rollups: " + ", ".join(f"{g} {n} buckets" for g, n in done.items()))
        else:
            print("rollups are current")
        return 0
    checkpoints = conn.execute(
        "SELECT projection, stream, last_seq FROM projection_checkpoint ORDER BY ALL"
    ).fetchall()
    print(f"database: {path}")
    for projection, stream, seq in checkpoints:
        print(f"checkpoint {projection} {stream}: {seq}")
    total, first, last = conn.execute(
        "SELECT count(*), min(day), max(day) FROM analytics.requests WHERE outcome IS NOT NULL"
    ).fetchone() or (0, None, None)
    print(f"requests: {total} ({first} .. {last})")
    for grain in GRAINS:
        n = conn.execute(f"SELECT count(*) FROM analytics.rollup_{grain}").fetchone()  # noqa: S608
        print(f"rollup_{grain}: {n[0] if n else 0} rows")
    stale = dirty_counts(conn)
    print("stale buckets: " + ", ".join(f"{g} {n}" for g, n in stale.items()))
    return 0
