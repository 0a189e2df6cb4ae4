"""Node heartbeats: every node process that publishes events (the
publisher, ``streams.publisher``) puts one record in a KV bucket every few
seconds, under its node's key.  What the reconciler (``processors.reconcile``)
needs to know about a node: whether it is the process that received a
request (``started_at_ms``) and whether it is still alive (``beat_at_ms``).

The bucket keeps the last record per node for a day: a node that stopped
beating is still known to have existed, so its open requests are aborted
instead of waiting for the longest a request may take.
"""

from __future__ import annotations

import contextlib
import re

import msgspec
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.errors import Error as JetStreamError
from nats.js.kv import KeyValue

from streams.events import Node
from streams.topology import Topology

INTERVAL_S = 5.0
_KEEP_S = 24 * 3600
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class Heartbeat(msgspec.Struct, frozen=True):
    kind: str
    id: str
    started_at_ms: int  # when this process started (its own clock)
    beat_at_ms: int  # when this record was written (its own clock)
    interval_s: float = INTERVAL_S


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Heartbeat).decode


def key(node: Node) -> str:
    """The node's KV key: kind and id, with what a key cannot hold replaced."""
    return f"{_UNSAFE.sub('_', node.kind)}.{_UNSAFE.sub('_', node.id)}"


def encode(beat: Heartbeat) -> bytes:
    return _encode(beat)


def decode(data: bytes) -> Heartbeat | None:
    with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
        return _decode(data)
    return None


async def bucket(js: JetStreamContext, topology: Topology) -> KeyValue:
    try:
        return await js.key_value(topology.heartbeat_bucket)
    except (BucketNotFoundError, NotFoundError):
        pass
    with contextlib.suppress(JetStreamError):
        return await js.create_key_value(
            KeyValueConfig(bucket=topology.heartbeat_bucket, history=1, ttl=_KEEP_S, storage=StorageType.FILE)
        )
    return await js.key_value(topology.heartbeat_bucket)
