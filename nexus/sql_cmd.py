"""``nexus sql "<query>"``: query the Postgres read models of a running
``nexus up`` (or of NEXUS_POSTGRES_DSN) and print the rows as a table."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

import asyncpg

from nexus.up import default_data_dir


def _dsn(data_dir: Path) -> str | None:
    if os.environ.get("NEXUS_POSTGRES_DSN"):
        return os.environ["NEXUS_POSTGRES_DSN"]
    endpoints = data_dir / "run" / "endpoints.json"
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
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    dsn = _dsn((args.data_dir or default_data_dir()).expanduser())
    if dsn is None:
        print("nexus sql: no running `nexus up` found and NEXUS_POSTGRES_DSN is not set", file=sys.stderr)
        return 2
    try:
        print(asyncio.run(_run(dsn, args.query)))
    except (asyncpg.PostgresError, OSError) as exc:
        print(f"nexus sql: {exc}", file=sys.stderr)
        return 1
    return 0
