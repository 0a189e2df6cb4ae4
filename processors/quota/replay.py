"""``nexus replay quotas``: drop every processor-owned counter and rebuild
it from the traffic stream, from sequence 1, through the same settle path
the live processor uses.

Stop the live quota processor first.  The replay recreates the processor's
durable consumer and leaves it acknowledged up to the stream's end, so a
processor started afterwards carries on from there.  Reservations of
requests in flight (ingress-owned) and alert markers are kept: a replay
never re-sends an alert.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import msgspec

from processors.quota.settle import Settler
from processors.quota.worker import DURABLE, consumer_spec, settle_batch
from streams.config import NexusConfig
from streams.consumer import Consumer
from streams.jetstream import connect, ensure_streams
from streams.quota_counters import QuotaPolicy
from streams.topology import Topology


class ReplayReport(msgspec.Struct):
    events: int
    applied: int
    duplicates: int
    wiped_keys: int
    last_seq: int
    seconds: float


async def wipe_counters(client: Any, policy: QuotaPolicy) -> int:
    n = 0
    for pattern in policy.keys.processor_patterns():
        batch: list[bytes] = []
        async for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                n += await client.unlink(*batch)
                batch.clear()
        if batch:
            n += await client.unlink(*batch)
    return n


async def replay_quotas(
    config: NexusConfig,
    *,
    nats_url: str,
    valkey_url: str,
    topology: Topology,
    key_prefix: str,
    durable: str = DURABLE,
) -> ReplayReport:
    import valkey.asyncio as valkey

    started = time.monotonic()

    async def quiet(exc: Exception) -> None:
        # A one-shot command: the failure is reported once, by the caller.
        return None

    nc = await connect(nats_url, name="nexus-quota-replay", max_reconnect_attempts=2, error_cb=quiet)
    client = valkey.Valkey.from_url(valkey_url)
    try:
        js = nc.jetstream()
        await ensure_streams(js, topology)
        policy = QuotaPolicy(config, key_prefix)
        settler = Settler(client, policy)  # alerts: markers survive, nothing to re-send
        wiped = await wipe_counters(client, policy)
        info = await js.stream_info(topology.traffic_stream)
        last_seq = info.state.last_seq
        consumer = Consumer(nc, consumer_spec(topology, durable), topology)
        await consumer.open("all", reset=True)
        events = applied = dups = 0
        try:
            while True:
                msgs = await consumer.pass_others(await consumer.take(0.5))
                if not msgs:
                    cinfo = await consumer.info()
                    if cinfo.num_pending == 0 and cinfo.num_ack_pending == 0:
                        break
                    continue
                # The same settle path as the live processor, dead letters
                # included (an event it could never settle is not settled now).
                result = await settle_batch(consumer, settler, msgs)
                events += len(msgs)
                applied += result.applied
                dups += result.duplicates
        finally:
            await consumer.close()
        return ReplayReport(
            events=events,
            applied=applied,
            duplicates=dups,
            wiped_keys=wiped,
            last_seq=last_seq,
            seconds=time.monotonic() - started,
        )
    finally:
        await client.aclose()
        with contextlib.suppress(Exception):
            await nc.flush(timeout=2)
        await nc.close()
