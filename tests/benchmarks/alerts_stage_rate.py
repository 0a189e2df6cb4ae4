"""What the alerts worker's block-rate rule costs: hook.stage events/s read
by the worker (its stage lane on the lean consumer, then the rule), beside
the lean consumer alone reading the same events in the same run (the
baseline).  Before the lane, a FastStream subscriber read them: 134 us of
CPU per event against the baseline's 2 us (1,422 events/s), measured with
this script at 5,000 events; the lane: 6 us (28,750 events/s).

Puts COUNT hook.stage events (one in ten a block) in a fresh stream on the
real NATS (not timed), then times (1) the lean consumer (``streams.consumer``)
reading and acknowledging them all and (2) the alerts worker with one
block_rate rule consuming them all (its durable consumer's pending and
unacknowledged counts at zero), with the process's CPU time for each (on a
loaded machine the CPU per event is the figure to read: wall time is what
the scheduler left over).  Prints the machine and load, and the figures as JSON on the last line.

    python tests/benchmarks/alerts_stage_rate.py                 # 5,000 events
    python tests/benchmarks/alerts_stage_rate.py --count 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import contextlib

from nats.js.api import ConsumerConfig, DeliverPolicy

from processors.alerts.worker import AlertsWorker
from streams import codec, deadletter
from streams.config_alerts import AlertsConfig, BlockRateRule, WebhookChannel
from streams.consumer import Consumer, ConsumerSpec
from streams.events import Tenant
from streams.events_compliance import StageDecision
from streams.jetstream import connect, delete_streams, ensure_streams
from streams.topology import Topology
from tests.benchmarks.projection_throughput import _load, machine


async def _publish(js: object, topology: Topology, count: int) -> None:
    nc = js._nc  # type: ignore[attr-defined]
    subject = topology.traffic_subject("hook.stage")
    for i in range(count):
        ev = StageDecision(
            stage="request",
            decision="block" if i % 10 == 0 else "approve",
            tenant=Tenant(org_id=f"org{i % 7}"),
        )
        await nc.publish(subject, codec.encode(ev), headers={"Nats-Msg-Id": ev.id})
        if i % 1000 == 999:
            await nc.flush(timeout=60)
    await nc.flush(timeout=60)


async def _lean(nc: object, topology: Topology, count: int) -> tuple[float, float]:
    spec = ConsumerSpec(
        stream=topology.traffic_stream,
        name="bench-lean",
        identity="bench",
        subjects=(topology.traffic_subject("hook.stage"),),
        durable=False,
    )
    consumer = Consumer(nc, spec, topology)  # type: ignore[arg-type]
    await consumer.open("all")
    got = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    while got < count:
        msgs = await consumer.take(1.0)
        for m in msgs:
            codec.decode(m.data)
        got += len(msgs)
        if msgs:
            await consumer.ack(msgs)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    await consumer.close()
    return elapsed, cpu


async def main(args: argparse.Namespace) -> None:
    topology = Topology(prefix=f"BENCH{uuid.uuid4().hex[:6]}".upper())
    nc = await connect(args.nats, name="bench-alerts")
    js = nc.jetstream()
    await ensure_streams(js, topology)
    cfg = AlertsConfig(
        channels=(
            WebhookChannel(
                name="ops", url="http://127.0.0.1:9/", signing_secret_env="S", allow_private_network=True
            ),
        ),
        rules=(BlockRateRule(name="blocks", min_count=10**6, per="org", channels=("ops",)),),
    )
    worker = AlertsWorker(args.nats, topology, cfg, env={"S": "x"})
    durable = f"{topology.prefix}_alerts_stage"
    try:
        # The worker's durable consumer made before the events exist (the
        # worker starts from "new"), the worker itself only after the
        # baseline ran: the two never share the machine.
        await js.add_consumer(
            topology.traffic_stream,
            ConsumerConfig(
                durable_name=durable,
                deliver_policy=DeliverPolicy.NEW,
                filter_subject=topology.traffic_subject("hook.stage"),
                ack_wait=60.0,
            ),
        )
        await _publish(js, topology, args.count)
        lean_s, lean_cpu = await _lean(nc, topology, args.count)
        cpu0, t0 = time.process_time(), time.perf_counter()
        await worker.start()
        while True:
            info = await js.consumer_info(topology.traffic_stream, durable)
            if not info.num_pending and not info.num_ack_pending and info.delivered.stream_seq >= args.count:
                break
            await asyncio.sleep(0.05)
        worker_s, worker_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        await worker.stop()
        await delete_streams(js, topology)
        with contextlib.suppress(Exception):
            await js.delete_stream(deadletter.stream_name(topology))
        for bucket in (f"{topology.prefix}_ALERTS", topology.heartbeat_bucket):
            with contextlib.suppress(Exception):
                await js.delete_key_value(bucket)
        await nc.close()
    print(f"machine: {machine()}; load {_load()}")
    print(f"{args.count} hook.stage events")
    print(
        f"  lean consumer (baseline): {args.count / lean_s:,.0f} events/s, "
        f"{lean_cpu / args.count * 1e6:,.0f} us CPU per event (read, decode, acknowledge)"
    )
    print(
        f"  alerts worker (block_rate rule): {args.count / worker_s:,.0f} events/s, "
        f"{worker_cpu / args.count * 1e6:,.0f} us CPU per event (the process: the worker's loop)"
    )
    print(
        json.dumps(
            {
                "events": args.count,
                "lean_events_per_s": round(args.count / lean_s),
                "lean_cpu_us_per_event": round(lean_cpu / args.count * 1e6),
                "worker_events_per_s": round(args.count / worker_s),
                "worker_cpu_us_per_event": round(worker_cpu / args.count * 1e6),
            }
        )
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--count", type=int, default=5000)
    p.add_argument("--nats", default="nats://127.0.0.1:4222")
    asyncio.run(main(p.parse_args()))
