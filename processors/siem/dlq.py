"""The dead-letter subject, for operators: list what a sink refused and, once
the cause is fixed, send it again.  A record that goes through is removed
from the dead-letter stream; one the sink still refuses stays."""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec
import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from processors.siem.forwarder import dlq_stream
from processors.siem.records import Undecodable, to_record
from processors.siem.sinks import SinkClient, SinkUnavailable
from streams.config_siem import Sink
from streams.topology import Topology


class DeadLetter(msgspec.Struct, frozen=True):
    dlq_seq: int
    sink: str
    stream: str
    stream_seq: int
    attempts: int
    reason: str
    event_id: str
    data: bytes


def _event_id(data: bytes) -> str:
    with contextlib.suppress(msgspec.DecodeError, AttributeError):
        value = msgspec.json.decode(data).get("id")
        return value if isinstance(value, str) else ""
    return ""


async def list_dead_letters(
    js: JetStreamContext, topology: Topology, sink: str | None = None
) -> list[DeadLetter]:
    try:
        info = await js.stream_info(dlq_stream(topology))
    except NotFoundError:
        return []
    out: list[DeadLetter] = []
    first, last = int(info.state.first_seq), int(info.state.last_seq)
    for seq in range(first, last + 1) if info.state.messages else ():
        try:
            msg = await js.get_msg(dlq_stream(topology), seq)
        except NotFoundError:  # removed by a replay
            continue
        h: dict[str, Any] = dict(msg.headers or {})
        if sink is not None and h.get("Nexus-Sink") != sink:
            continue
        data = msg.data or b""
        out.append(
            DeadLetter(
                dlq_seq=seq,
                sink=str(h.get("Nexus-Sink", "")),
                stream=str(h.get("Nexus-Stream", "")),
                stream_seq=int(h.get("Nexus-Stream-Seq", 0) or 0),
                attempts=int(h.get("Nexus-Attempts", 0) or 0),
                reason=str(h.get("Nexus-Reason", "")),
                event_id=_event_id(data),
                data=data,
            )
        )
    return out


async def replay_dead_letters(
    js: JetStreamContext, topology: Topology, sink: Sink, client: SinkClient
) -> tuple[int, int]:
    """Send every dead letter of ``sink`` again, one at a time.  Returns
    (delivered and removed, still refused).  Stops at the first outage."""
    delivered = refused = 0
    for dl in await list_dead_letters(js, topology, sink.name):
        try:
            record = to_record(
                dl.data, stream=dl.stream, seq=dl.stream_seq, include_bodies=sink.include_bodies
            )
        except Undecodable:
            refused += 1
            continue
        try:
            result = await client.send([record])
        except SinkUnavailable:
            break
        if result.rejected or result.retry:
            refused += 1
            continue
        with contextlib.suppress(NotFoundError, nats.errors.Error):
            await js.delete_msg(dlq_stream(topology), dl.dlq_seq)
        delivered += 1
    return delivered, refused
