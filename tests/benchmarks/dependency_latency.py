"""Benchmark: the gateway's own CPU per request with its dependencies fast
and slowed, side by side in one run.

    python tests/benchmarks/dependency_latency.py [--requests 3000] [--delay-ms 2] [--rounds 3]

The production features on (``nexus-production.yaml``: hooks, a quota
reservation on Valkey for every request, events to JetStream).  The same
closed-loop load (``--concurrency`` clients on keep-alive connections)
goes through one gateway whose NATS and Valkey are reached directly, and
through one whose NATS and Valkey sit behind a relay adding ``--delay-ms``
each way (``harness/delay.py``).  What is compared is the CPU time the
gateway process itself used (user + system, from /proc), divided by the
requests served: a hot path that spends CPU in proportion to its
dependencies' latency (polling, re-flushing, retrying) shows up as a
higher figure on the slowed side.  Rounds alternate the two gateways so a
change in the machine's load hits both.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import aiohttp
import msgspec

from tests.benchmarks.harness import systems
from tests.benchmarks.harness.delay import DelayProxy
from tests.benchmarks.harness.loadgen import REPO, Target
from tests.benchmarks.harness.procs import spawn, wait_port

PRODUCTION = Path(__file__).with_name("nexus-production.yaml")
_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime


async def drive(target: Target, stream: bool, n: int, concurrency: int) -> None:
    body = target.body(stream)
    headers = {**target.headers, "Content-Type": "application/json"}
    todo = iter(range(n))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:

        async def worker() -> None:
            for _ in todo:
                async with http.post(target.url, data=body, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"status {r.status}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--delay-ms", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--modes", default="non-stream,stream")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nexus-deps-"))
    sim, sim_url = systems.start_sim("sim", "zero", None, work)
    nats = DelayProxy("127.0.0.1", 4222, args.delay_ms).start()
    valkey = DelayProxy("127.0.0.1", 6379, args.delay_ms).start()
    extra: dict[str, Any] = msgspec.yaml.decode(PRODUCTION.read_bytes())
    gateways: dict[str, tuple[Any, Any]] = {}
    try:
        for name, deps in (
            ("direct", {}),
            (
                f"deps +{args.delay_ms:g} ms",
                {"NEXUS_NATS_URL": nats.url("nats"), "NEXUS_VALKEY_URL": valkey.url("redis") + "/0"},
            ),
        ):
            run_dir = Path(tempfile.mkdtemp(prefix="gw-", dir=work))
            launch = systems.nexus_launch(
                {"zero": sim_url}, run_dir, f"DEPS{secrets.token_hex(4).upper()}", extra
            )
            launch.env.update(deps)
            proc = spawn(
                "gateway", launch.argv, log_dir=run_dir, cpus=(0,), env={**os.environ, **launch.env}, cwd=REPO
            )
            wait_port(proc, launch.port, 120)
            gateways[name] = (proc, launch)
        cpu: dict[tuple[str, str], list[float]] = {}
        for mode in args.modes.split(","):
            stream = mode == "stream"
            for _proc, launch in gateways.values():
                asyncio.run(drive(launch.target("zero"), stream, 300, args.concurrency))  # warm
            for _ in range(args.rounds):
                for name, (proc, launch) in gateways.items():
                    before, t0 = cpu_seconds(proc.pid), time.monotonic()
                    asyncio.run(drive(launch.target("zero"), stream, args.requests, args.concurrency))
                    used = cpu_seconds(proc.pid) - before
                    cpu.setdefault((mode, name), []).append(used / args.requests * 1000)
                    rate = args.requests / (time.monotonic() - t0)
                    per = used / args.requests * 1000
                    print(
                        f"  {mode:<10} {name:<14} {per:6.3f} ms CPU/request  ({rate:,.0f} req/s)", flush=True
                    )
        print(f"\n{'mode':<10} {'gateway':<14} {'CPU ms/request (median)':>24} {'vs direct':>10}")
        for mode in args.modes.split(","):
            base = sorted(cpu[(mode, "direct")])[len(cpu[(mode, "direct")]) // 2]
            for name in gateways:
                vals = sorted(cpu[(mode, name)])
                med = vals[len(vals) // 2]
                print(f"{mode:<10} {name:<14} {med:>24.3f} {med / base - 1:>+10.1%}")
    finally:
        for proc, launch in gateways.values():
            proc.stop()
            systems.delete_streams(os.environ.get("NEXUS_NATS_URL", "nats://127.0.0.1:4222"), launch.prefix)
        nats.stop()
        valkey.stop()
        sim.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
