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
from nats.js.errors import NotFoundError

from processors.quota.settle import Settler
from processors.quota.worker import DURABLE, consumer_config, fetch_batch, usage_subject
from streams.config import NexusConfig
from streams.config_quota import QuotaPolicy
from streams.jetstream import connect, ensure_streams
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
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(topology.traffic_stream, durable)
        policy = QuotaPolicy(config, key_prefix)
        settler = Settler(client, policy)  # alerts: markers survive, nothing to re-send
        wiped = await wipe_counters(client, policy)
        info = await js.stream_info(topology.traffic_stream)
        last_seq = info.state.last_seq
        sub = await js.pull_subscribe(
            usage_subject(topology),
            durable=durable,
            stream=topology.traffic_stream,
            config=consumer_config(durable),
        )
        events = applied = dups = 0
        while True:
            msgs = await fetch_batch(sub, wait_s=0.5)
            if not msgs:
                cinfo = await js.consumer_info(topology.traffic_stream, durable)
                if cinfo.num_pending == 0:
                    break
                continue
            result = await settler.apply([(m.data, m.metadata.sequence.stream) for m in msgs])
            for m in msgs:
                await m.ack()
            events += len(msgs)
            applied += result.applied
            dups += result.duplicates
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
