"""``nexus sql "<query>"``: query the Postgres read models of a running
``nexus up`` (or of NEXUS_POSTGRES_DSN) and print the rows as a table."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import asyncpg

from streams.config_base import ConfigError
from streams.settings import Settings, load_settings


def _dsn(settings: Settings) -> str | None:
    if settings.postgres_dsn:
        return settings.postgres_dsn
    endpoints = settings.home_path / "run" / "endpoints.json"
    if endpoints.exists():
        return str(json.loads(endpoints.read_text())["postgres_dsn"])
    return None


def format_table(columns: list[str], rows: list[tuple[object, ...]]) -> str:
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    out = [" | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    out.append("-+-".join("-" * w for w in widths))
    out += [" | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


async def _run(dsn: str, query: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        stmt = await conn.prepare(query)
        records = await stmt.fetch()
        columns = [a.name for a in stmt.get_attributes()]
        return format_table(columns, [tuple(r) for r in records])
    finally:
        await conn.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="nexus sql")
    parser.add_argument("query")
    parser.add_argument("--data-dir", type=Path, default=None, help="nexus up's (NEXUS_HOME)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings({"home": str(args.data_dir) if args.data_dir else None})
    except ConfigError as exc:
        print(f"nexus sql: {exc}", file=sys.stderr)
        return 2
    dsn = _dsn(settings)
    if dsn is None:
        print("nexus sql: no running `nexus up` found and NEXUS_POSTGRES_DSN is not set", file=sys.stderr)
        return 2
    try:
        print(asyncio.run(_run(dsn, args.query)))
    except (asyncpg.PostgresError, OSError) as exc:
        print(f"nexus sql: {exc}", file=sys.stderr)
        return 1
    return 0
