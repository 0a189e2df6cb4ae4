"""Duplicate suppression: an alert with the same dedup key (rule, subject,
status) is sent once per window; repeats are counted and the next one sent
says how many were suppressed.

State is one record per key in a JetStream KV bucket (``<PREFIX>_ALERTS``),
written by compare-and-set, so replicas of the worker (and a worker
restarted in the middle of a storm) agree on what was sent.  A record
remembers the source event that was sent: when that event is delivered
again (the worker died before acknowledging it) the decision is the same
"send", with the same alert id, and the stream's duplicate window stores
the alert once.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass

import msgspec
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.errors import Error as JetStreamError
from nats.js.kv import KeyValue

from streams.topology import Topology

# The longest dedup window the config allows, plus a day.
_KEEP_S = 31 * 24 * 3600
_ATTEMPTS = 8


class _Record(msgspec.Struct, frozen=True):
    sent_at_ms: int
    source: str = ""  # the source event of the alert sent
    suppressed: int = 0  # repeats since then


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(_Record).decode


@dataclass(frozen=True, slots=True)
class Decision:
    send: bool
    sent_at_ms: int  # when the alert this one belongs to was (or is now) sent
    suppressed: int  # send: repeats suppressed before it; not send: repeats so far


def bucket_name(topology: Topology) -> str:
    return f"{topology.prefix}_ALERTS"


async def bucket(js: JetStreamContext, topology: Topology) -> KeyValue:
    name = bucket_name(topology)
    try:
        return await js.key_value(name)
    except (BucketNotFoundError, NotFoundError):
        pass
    with contextlib.suppress(JetStreamError):
        return await js.create_key_value(
            KeyValueConfig(bucket=name, history=1, ttl=_KEEP_S, storage=StorageType.FILE)
        )
    return await js.key_value(name)


def _kv_key(dedup_key: str) -> str:
    # KV keys allow few characters; the dedup key may hold anything.
    return "d." + hashlib.sha256(dedup_key.encode()).hexdigest()[:40]


class Deduplicator:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def decide(self, dedup_key: str, *, source: str, now_ms: int, window_s: float) -> Decision:
        key = _kv_key(dedup_key)
        for _ in range(_ATTEMPTS):
            try:
                entry = await self._kv.get(key)
            except KeyNotFoundError:
                entry = None
            rec = _decode(entry.value) if entry is not None and entry.value else None
            if rec is not None and source and rec.source == source:
                return Decision(True, rec.sent_at_ms, 0)  # the same source again: the same alert
            try:
                if rec is None:
                    await self._kv.create(key, _encode(_Record(now_ms, source)))
                    return Decision(True, now_ms, 0)
                assert entry is not None and entry.revision is not None
                if now_ms - rec.sent_at_ms < window_s * 1000:
                    count = rec.suppressed + 1
                    await self._kv.update(
                        key, _encode(_Record(rec.sent_at_ms, rec.source, count)), last=entry.revision
                    )
                    return Decision(False, rec.sent_at_ms, count)
                await self._kv.update(key, _encode(_Record(now_ms, source)), last=entry.revision)
                return Decision(True, now_ms, rec.suppressed)
            except KeyWrongLastSequenceError:
                continue  # another writer came first: read again
        raise RuntimeError("alerts dedup: the record kept changing; giving up on this event for now")
