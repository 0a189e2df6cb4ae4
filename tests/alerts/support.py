"""What the alerts tests share: publishing on the real streams, reading
events back, waiting without asserting wall-clock timings."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgspec
from nats.js import JetStreamContext
from prometheus_client import REGISTRY

from streams import codec
from streams.topology import Topology


async def publish(js: JetStreamContext, topology: Topology, event: msgspec.Struct) -> None:
    await js.publish(
        topology.subject_for(event),
        codec.encode(event),
        headers={"Nats-Msg-Id": event.id},  # type: ignore[attr-defined]
    )


async def events_of(js: JetStreamContext, topology: Topology, tag: str) -> list[Any]:
    info = await js.stream_info(topology.traffic_stream)
    out = []
    seq = int(info.state.first_seq)
    last = int(info.state.last_seq)
    subject = topology.traffic_subject(tag)
    while seq <= last:
        try:
            msg = await js.get_msg(topology.traffic_stream, seq, subject=subject, next=True)
        except Exception:
            break
        if msg.seq is None:
            break
        out.append(codec.decode(msg.data or b""))
        seq = msg.seq + 1
    return out


async def wait_for(pred: Callable[[], bool], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.05)


async def wait_for_events(
    js: JetStreamContext, topology: Topology, tag: str, count: int, timeout: float = 30.0
) -> list[Any]:
    async with asyncio.timeout(timeout):
        while True:
            got = await events_of(js, topology, tag)
            if len(got) >= count:
                return got
            await asyncio.sleep(0.1)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0
