"""Schema of the projection stores: the numbered migrations shipped in
``projections/migrations/<dialect>/NNNN_name.sql`` and the upsert statements
generated from ``projections.traffic.COLUMNS`` for each dialect."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from projections.traffic import COLUMNS, TABLE, Column, Kind, Rule

Dialect = Literal["postgres", "duckdb"]

# The component name under which these migrations are recorded in
# ``schema_migrations`` (other parts of Nexus may share the database).
COMPONENT = "projections"

# Every table the migrations create.  ``replay`` drops exactly these; a test
# checks that the migrations create nothing else.
OWNED_TABLES: tuple[str, ...] = (TABLE, "projection_checkpoint")

SCHEMA_MIGRATIONS_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    component  text    NOT NULL,
    version    integer NOT NULL,
    name       text    NOT NULL,
    checksum   text    NOT NULL,
    PRIMARY KEY (component, version)
)
"""

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]


def migrations(dialect: Dialect) -> list[Migration]:
    folder = resources.files("projections").joinpath("migrations", dialect)
    found: list[Migration] = []
    for entry in folder.iterdir():
        m = _FILE.match(entry.name)
        if m is None:
            continue
        found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration numbers in projections/migrations/{dialect}")
    return found


def check_applied(dialect: Dialect, applied: dict[int, str]) -> list[Migration]:
    """The migrations still to apply, given ``version -> checksum`` of those
    already applied; an applied file that changed since is an error (edit a
    shipped migration and every existing database silently diverges)."""
    todo: list[Migration] = []
    for mig in migrations(dialect):
        recorded = applied.get(mig.version)
        if recorded is None:
            todo.append(mig)
        elif recorded != mig.checksum:
            raise MigrationError(
                f"migration {dialect}/{mig.version:04d}_{mig.name}.sql changed after it was applied; "
                "add a new numbered migration instead"
            )
    return todo


# --- upsert statements ------------------------------------------------------


def _select_expr(col: Column, dialect: Dialect) -> str:
    # Timestamps travel as epoch milliseconds (exact, cheap to bind) and are
    # converted by the database.
    if col.kind is Kind.TS:
        if dialect == "postgres":
            return f"timestamptz 'epoch' + u.{col.name} * interval '1 millisecond'"
        return f"epoch_ms(u.{col.name})"
    return f"u.{col.name}"


def _set_clause(col: Column, dialect: Dialect) -> str:
    n = col.name
    if col.rule is Rule.UNION:
        # Both sides are sorted, distinct, comma-joined labels or NULL
        # (never ""): their union in the same form.
        both = f"concat_ws(',', EXCLUDED.{n}, t.{n})"
        if dialect == "postgres":
            # Identifiers come from COLUMNS only.
            distinct = f"SELECT DISTINCT x FROM unnest(string_to_array({both}, ',')) AS x"  # noqa: S608
            labels = f"array_to_string(ARRAY({distinct} WHERE x <> '' ORDER BY x), ',')"
        else:
            labels = f"array_to_string(list_sort(list_distinct(string_split({both}, ','))), ',')"
        return f"{n} = NULLIF({labels}, '')"
    if col.rule is Rule.SET:
        return f"{n} = COALESCE(EXCLUDED.{n}, t.{n})"
    if col.rule is Rule.MIN:
        return f"{n} = LEAST(EXCLUDED.{n}, t.{n})"
    if col.rule is Rule.MAX:
        return f"{n} = GREATEST(EXCLUDED.{n}, t.{n})"
    return f"{n} = CASE WHEN EXCLUDED.{col.rank} > t.{col.rank} THEN EXCLUDED.{n} ELSE t.{n} END"


# The relation a batch is upserted from: in Postgres a temporary table the
# batch is COPYed into, in DuckDB an Arrow table registered under this name.
BATCH_RELATION = "_nexus_batch"

_PG_TYPE = {
    Kind.TEXT: "text",
    Kind.INT: "bigint",
    Kind.FLOAT: "double precision",
    Kind.BOOL: "boolean",
    Kind.TS: "bigint",  # epoch milliseconds, converted by the upsert
}


def pg_batch_table_ddl() -> str:
    """The session's staging table for one batch (emptied at each commit)."""
    cols = ", ".join(f"{c.name} {_PG_TYPE[c.kind]}" for c in COLUMNS)
    return f"CREATE TEMPORARY TABLE IF NOT EXISTS {BATCH_RELATION} ({cols}) ON COMMIT DELETE ROWS"


def upsert_sql(dialect: Dialect) -> str:
    """One statement that upserts a whole batch of folded rows from
    ``BATCH_RELATION`` (Postgres: COPYed into the staging table; DuckDB: an
    Arrow table): no per-row statements, and no per-value parameter binding
    (binding one array per column cost several times more per row)."""
    names = ", ".join(c.name for c in COLUMNS)
    select = ", ".join(_select_expr(c, dialect) for c in COLUMNS)
    updates = ",\n    ".join(_set_clause(c, dialect) for c in COLUMNS if c.name != "request_id")
    return (
        f"INSERT INTO {TABLE} AS t ({names})\nSELECT {select}\nFROM {BATCH_RELATION} AS u\n"
        f"ON CONFLICT (request_id) DO UPDATE SET\n    {updates}"
    )


def columnar(rows: list[dict[str, object]]) -> list[list[object]]:
    """Folded rows -> one list per column, in ``COLUMNS`` order.  Rank columns
    are never NULL (a NULL rank would make every comparison unknown)."""
    out: list[list[object]] = []
    for col in COLUMNS:
        name = col.name
        if col.rule is Rule.MAX and col.kind is Kind.INT:
            out.append([r.get(name) or 0 for r in rows])
        else:
            out.append([r.get(name) for r in rows])
    return out
