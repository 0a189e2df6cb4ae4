"""GET /api/admin/audit: the admin audit trail as the audit processor
chained it in Postgres (``audit_log``; hash-chained, ``nexus audit
verify`` checks it).  Newest first, keyset on the chain position, one query
per page; filtered by org (and below), actor, action and decision.

An org's auditors read its records: the org is part of the resource asked
about; reading every org's records needs the right at the global scope.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg
import msgspec
from aiohttp import web

from hub.api.errors import ApiError
from hub.api.http import Call, json_response
from hub.api.pages import Page, limit_of
from hub.authz import org_path
from hub.iam import resource_nrn


class AuditRecord(msgspec.Struct, kw_only=True):
    n: int  # position in the chain
    occurred_at: dt.datetime | None
    hash: str  # this record's chain hash (hex)
    event: dict[str, Any]  # the admin.action event as chained


def _cursor(raw: str) -> int | None:
    if not raw:
        return None
    try:
        n = int(raw)
    except ValueError:
        raise ApiError(
            "invalid_query", "after: a record number from a previous page", field="after"
        ) from None
    return n


async def list_audit(call: Call) -> web.Response:
    org = call.query("org")
    if org and call.state.get("org", org) is None:
        raise ApiError("invalid_query", f"org: unknown org {org!r}", field="org")
    path = org_path(call.state, org)
    call.authorize(resource_nrn("audit", path, "trail"), org=org)
    dsn = call.hub.postgres_dsn
    if not dsn:
        raise ApiError("unavailable", "this Hub has no Postgres read model configured")
    limit = limit_of(call.query("limit"))
    after = _cursor(call.query("after"))
    where = ["event_type = 'admin.action'"]
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if org:
        # The org and every org below it.
        subtree = [
            o.id
            for o in call.state.all("org")
            if org_path(call.state, o.id) == path or org_path(call.state, o.id).startswith(path + "/")
        ]
        where.append(f"org_id = ANY({arg(subtree)}::text[])")
    if after is not None:
        where.append(f"n < {arg(after)}")
    for name in ("actor", "action", "decision", "resource"):
        value = call.query(name)
        if value:
            where.append(f"(content::jsonb -> 'event' ->> '{name}') = {arg(value)}")
    # Every value is a bind parameter; the text holds only our own column
    # names and placeholders.
    conditions = " AND ".join(where)
    bound = arg(limit + 1)
    sql = f"SELECT n, occurred_at, hash, content FROM audit_log WHERE {conditions} ORDER BY n DESC LIMIT {bound}"  # noqa: S608, E501
    try:
        conn = await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        raise ApiError("unavailable", f"the audit store is not reachable ({type(exc).__name__})") from None
    try:
        try:
            rows = await conn.fetch(sql, *args)
        except asyncpg.UndefinedTableError:
            rows = []  # no audit processor has written yet
    finally:
        await conn.close()
    items = [
        AuditRecord(
            n=r["n"],
            occurred_at=r["occurred_at"],
            hash=bytes(r["hash"]).hex(),
            event=msgspec.json.decode(r["content"]).get("event", {}),
        )
        for r in rows[:limit]
    ]
    nxt = str(items[-1].n) if len(rows) > limit else None
    return json_response(Page(items=items, next=nxt))
