"""Gateway overhead benchmark (a script, not a pytest test).

Starts the simulated provider (zero delay) and the gateway as separate
processes, drives N requests at a fixed concurrency directly at the sim and
through the gateway, same machine, same run, and prints requests/s and the
p50/p99 latency each way, plus the latency the gateway adds (difference of
the percentiles), for unary and streamed requests.

    python tests/benchmarks/gateway_overhead.py --requests 2000 --concurrency 16

The gateway publishes its events to NATS (NEXUS_NATS_URL, default
nats://127.0.0.1:4222) under a throwaway stream prefix, deleted afterwards;
without NATS the events go to the outbox in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import msgspec

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from streams.keys import hash_key, new_key  # noqa: E402

SIM_MODEL = "sim-bench"
CHAT = {
    "model": "bench",
    "messages": [{"role": "user", "content": "Benchmark the gateway overhead, please."}],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise SystemExit(f"{what} did not start on port {port}")


def write_config(path: Path, gateway_port: int, sim_port: int, key_hash: str) -> None:
    cfg = {
        "version": 1,
        "gateway": {"host": "127.0.0.1", "port": gateway_port, "node_id": "bench", "max_inflight": 100_000},
        "orgs": [{"id": "bench-org"}],
        "projects": [{"id": "bench-project", "org": "bench-org"}],
        "virtual_keys": [
            {"id": "bench-key", "hash": key_hash, "org": "bench-org", "project": "bench-project"}
        ],
        "providers": [
            {"name": "sim", "base_url": f"http://127.0.0.1:{sim_port}/v1", "allow_private_network": True}
        ],
        "models": [
            {
                "name": "bench",
                "provider": "sim",
                "provider_model": SIM_MODEL,
                "price": {"input": 0.15, "output": 0.6},
            }
        ],
    }
    path.write_bytes(msgspec.yaml.encode(cfg))


async def one(http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]) -> float:
    t0 = time.perf_counter()
    async with http.post(url, data=body, headers=headers) as r:
        await r.read()
        if r.status != 200:
            raise RuntimeError(f"{url}: HTTP {r.status}")
    return time.perf_counter() - t0


async def drive(
    url: str, body: dict[str, object], headers: dict[str, str], n: int, concurrency: int, warmup: int
) -> tuple[float, list[float]]:
    raw = msgspec.json.encode(body)
    headers = {"Content-Type": "application/json", **headers}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        await asyncio.gather(*(one(http, url, raw, headers) for _ in range(warmup)))
        latencies: list[float] = []
        remaining = n

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                latencies.append(await one(http, url, raw, headers))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return n / elapsed, latencies


def cpu_seconds(pid: int) -> float:
    """User+system CPU time of a process (Linux /proc): the gateway's own cost
    per request, which a busy machine's wall-clock latencies blur."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000
        if q < 100
        else max(values) * 1000
    )


async def run(args: argparse.Namespace, sim_port: int, gateway_port: int, key: str, gateway_pid: int) -> None:
    direct = f"http://127.0.0.1:{sim_port}/v1/chat/completions"
    via = f"http://127.0.0.1:{gateway_port}/v1/chat/completions"
    auth = {"Authorization": f"Bearer {key}"}
    print(f"{args.requests} requests per row, concurrency {args.concurrency}, sim with zero delay\n")
    print(f"{'mode':<8} {'path':<8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'gw CPU us/req':>14}")
    for mode in ("unary", "stream"):
        body: dict[str, object] = dict(CHAT)
        if mode == "stream":
            body.update(stream=True, stream_options={"include_usage": True})
        sim_body = {**body, "model": SIM_MODEL}
        rows = {}
        for name, url, b, h in (("direct", direct, sim_body, {}), ("gateway", via, body, auth)):
            cpu0 = cpu_seconds(gateway_pid)
            rps, lat = await drive(url, b, h, args.requests, args.concurrency, args.warmup)
            cpu = (cpu_seconds(gateway_pid) - cpu0) / (args.requests + args.warmup) * 1e6
            rows[name] = (rps, pct(lat, 50), pct(lat, 99))
            shown = f"{cpu:>14.0f}" if name == "gateway" else ""
            print(f"{mode:<8} {name:<8} {rps:>9.0f} {rows[name][1]:>8.2f} {rows[name][2]:>8.2f} {shown}")
        added50 = rows["gateway"][1] - rows["direct"][1]
        added99 = rows["gateway"][2] - rows["direct"][2]
        print(f"{mode:<8} {'added':<8} {'':>9} {added50:>8.2f} {added99:>8.2f}\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--warmup", type=int, default=200)
    args = p.parse_args()

    secret = secrets.token_hex(16)
    key = new_key()
    sim_port, gateway_port = free_port(), free_port()
    prefix = f"BENCH{secrets.token_hex(4).upper()}"
    env = {**os.environ, "NEXUS_KEY_HMAC_SECRET": secret, "PYTHONPATH": str(REPO)}
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "bench.yaml"
        write_config(cfg, gateway_port, sim_port, hash_key(key, secret.encode()))
        log = open(Path(tmp) / "procs.log", "wb")  # noqa: SIM115
        try:
            sim = subprocess.Popen(
                [sys.executable, "-m", "nexus.sim.cli", "--port", str(sim_port)],
                env=env,
                stdout=log,
                stderr=log,
                cwd=REPO,
            )
            procs.append(sim)
            gw = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ingress.gateway.cli",
                    "--config",
                    str(cfg),
                    "--port",
                    str(gateway_port),
                    "--data-dir",
                    tmp,
                    "--stream-prefix",
                    prefix,
                ],
                env=env,
                stdout=log,
                stderr=log,
                cwd=REPO,
            )
            procs.append(gw)
            wait_port(sim_port, sim, "the sim")
            wait_port(gateway_port, gw, "the gateway")
            import uvloop

            uvloop.run(run(args, sim_port, gateway_port, key, gw.pid))
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            log.close()
            asyncio.run(_drop_streams(prefix))
    return 0


async def _drop_streams(prefix: str) -> None:
    from streams.jetstream import delete_streams
    from streams.topology import Topology

    with contextlib.suppress(Exception):
        import nats

        nc = await asyncio.wait_for(
            nats.connect(os.environ.get("NEXUS_NATS_URL", "nats://127.0.0.1:4222")), 3
        )
        js = nc.jetstream()
        await delete_streams(js, Topology(prefix=prefix))
        with contextlib.suppress(Exception):
            await js.delete_object_store(Topology(prefix=prefix).spill_bucket)
        await nc.close()


if __name__ == "__main__":
    raise SystemExit(main())
