"""Every live entry of a KV bucket, read exactly once.

nats-py's ``KeyValue.keys()`` is not exact: it watches the bucket through a
push consumer and decides it has seen everything when the consumer's info
says nothing is pending and nothing has been *processed* yet.  Entries the
server has already pushed but the client has not yet handled count as
neither, so the end marker can come before them and a key written just
before is missing from the answer (the Hub's agents list lost a just-enrolled
agent this way, now and then).  A pull consumer gets nothing until it asks:
its pending count right after creation is the exact number of subjects to
read, and each delivered message carries the exact count still to come.

One pass also replaces the "list the keys, then get each" pattern: the
values come with the scan.
"""

from __future__ import annotations

import contextlib
import secrets
from typing import NamedTuple

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import api
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

_DELETED = frozenset({"DEL", "PURGE"})
_MARKERS = frozenset({"MaxAge", "Purge", "Remove"})  # nats-server 2.11+ expiry/removal markers
_BATCH = 256


class KvItem(NamedTuple):
    key: str
    value: bytes
    revision: int


async def scan(
    js: JetStreamContext, bucket: str, *, prefix: str = "", timeout_s: float = 5.0
) -> list[KvItem]:
    """The bucket's live entries (deleted and purged keys left out), those
    whose key starts with ``prefix`` when given, in stream order.  An absent
    bucket has none."""
    stream = f"KV_{bucket}"
    head = f"$KV.{bucket}."
    name = f"scan-{secrets.token_hex(8)}"
    config = api.ConsumerConfig(
        name=name,
        # A prefix that ends at a token boundary is filtered by the server
        # (a user's sessions, not every session); any other, here.
        filter_subject=head + (prefix if prefix.endswith(".") else "") + ">",
        deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
        ack_policy=api.AckPolicy.NONE,
        max_ack_pending=-1,
        mem_storage=True,
        inactive_threshold=30.0,  # the server's clean-up if this client vanishes mid-scan
    )
    try:
        await js.add_consumer(stream, config=config)
    except NotFoundError:
        return []
    sub = await js.pull_subscribe_bind(stream=stream, name=name)
    try:
        # What the consumer holds when it is made: the last entry of every
        # key.  It goes on to deliver what is written after, so "nothing
        # pending" may never come on a busy bucket: read this many, no more
        # (an entry written meanwhile may come too, and then counts as the
        # key's value, or its deletion).
        total = (await sub.consumer_info()).num_pending or 0
        read = 0
        found: dict[str, KvItem] = {}
        while read < total:
            try:
                msgs = await sub.fetch(min(total - read, _BATCH), timeout=timeout_s)
            except NatsTimeoutError:
                raise TimeoutError(
                    f"{stream}: {total - read} of {total} entries not delivered within {timeout_s} s"
                ) from None
            for msg in msgs:
                read += 1
                meta = msg.metadata
                if meta.num_pending == 0:
                    read = total  # nothing more, even of what was written meanwhile
                key = msg.subject[len(head) :]
                if not key.startswith(prefix):
                    continue
                headers = msg.headers or {}
                if headers.get("KV-Operation") in _DELETED or headers.get("Nats-Marker-Reason") in _MARKERS:
                    found.pop(key, None)
                    continue
                found.pop(key, None)  # (kept in the order of its latest entry)
                found[key] = KvItem(key, msg.data, meta.sequence.stream)
        return list(found.values())
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        with contextlib.suppress(Exception):
            await js.delete_consumer(stream, name)
