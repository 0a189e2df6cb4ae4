"""Body retention: purge stored audit bodies and spilled objects by policy
(``audit.body_retention_days``, ``audit.spill_retention_days``).  Applied by
the Hub's ``body-retention`` job, and by a standalone audit processor's own
loop (a deployment without a Hub).

Safe for the chain by construction: records chain body *digests*, so a
purged body leaves every hash intact (``nexus audit verify`` still passes);
it only means the bytes can no longer be produced.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import asyncpg
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, NotFoundError

log = logging.getLogger("nexus.audit")


async def purge_bodies(pool: asyncpg.Pool[Any] | asyncpg.Connection[Any], *, older_than_days: int) -> int:
    """Delete audit bodies stored more than ``older_than_days`` ago (0: keep)."""
    if older_than_days <= 0:
        return 0
    try:
        result = await pool.execute(
            "DELETE FROM audit_body WHERE stored_at < now() - make_interval(days => $1)", older_than_days
        )
    except asyncpg.UndefinedTableError:
        return 0  # no audit processor has stored a body in this database yet
    return int(result.split()[-1])


async def purge_spill(js: JetStreamContext, bucket: str, *, older_than: dt.timedelta) -> int:
    """Delete spilled objects last written longer than ``older_than`` ago
    (zero or less: keep everything).  Spilled objects are content-addressed,
    so a body written again by a newer request has a fresh mtime and stays."""
    if older_than <= dt.timedelta(0):
        return 0
    try:
        store = await js.object_store(bucket)
    except (BucketNotFoundError, NotFoundError):
        return 0
    try:
        infos = await store.list()
    except NotFoundError:  # an empty bucket
        return 0
    cutoff = dt.datetime.now(dt.UTC) - older_than
    purged = 0
    for info in infos:
        mtime = _parse_mtime(info.mtime)
        if mtime is not None and mtime < cutoff:
            await store.delete(info.name)
            purged += 1
    if purged:
        log.info("purged %d spilled bodies older than %s from %s", purged, older_than, bucket)
    return purged


def _parse_mtime(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    # NATS writes RFC 3339 with nanoseconds; Python parses at most micros.
    text = value.replace("Z", "+00:00")
    if "." in text:
        head, _, tail = text.partition(".")
        frac, sign, tz = tail, "", ""
        for s in ("+", "-"):
            if s in tail:
                frac, sign, tz = tail.partition(s)
                break
        text = f"{head}.{frac[:6]}{sign}{tz}"
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
