"""Translation overhead benchmark (a script, not a pytest test).

What an OpenAI client pays for being served by an Anthropic provider: the
same streamed chat request, through the same gateway, in the same run, to
two providers played by the same simulated upstream:

- ``passthrough``: OpenAI -> OpenAI, the caller's JSON forwarded with the
  model rewritten and the provider's SSE relayed event by event;
- ``translated``: OpenAI -> Anthropic, canonical decode, Anthropic encode,
  Anthropic SSE decoded to canonical chunks and re-encoded as OpenAI SSE.

The sim runs in its own process and the gateway in another (both on
uvloop); this process is the client, sending requests one at a time
(alternating the two routes, so drift on a busy machine hits both alike)
and timing each to the last byte and to the first content token.

    python tests/benchmarks/translation_overhead.py --requests 400

Prints per-route p50/p90/mean and the added latency per request (translated
minus passthrough).  The gateway's events go to an in-memory sink: this
measures translation, not publishing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

SIM_KEY = "sk-sim-bench"


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


async def serve_gateway(sim_port: int, port: int, key: str) -> None:
    """The gateway process: both routes in one config, events kept in memory."""
    import msgspec

    from ingress.gateway import create_app, start_gateway
    from streams.config_snapshot import ConfigSnapshot
    from streams.config_validation import parse_config
    from streams.keys import hash_key

    secret = b"bench-secret-0123456789abcdef"
    sim = f"http://127.0.0.1:{sim_port}"
    common = {"allow_private_network": True, "api_key_env": "SIM_KEY"}
    config = {
        "version": 1,
        "gateway": {"port": port, "node_id": "gw-bench"},
        "orgs": [{"id": "bench"}],
        "projects": [{"id": "p", "org": "bench"}],
        "virtual_keys": [{"id": "k", "hash": hash_key(key, secret), "org": "bench", "project": "p"}],
        "providers": [
            {"name": "openai", "kind": "openai", "base_url": f"{sim}/v1", **common},
            {"name": "anthropic", "kind": "anthropic", "base_url": f"{sim}/anthropic", **common},
        ],
        "models": [
            {"name": "passthrough", "provider": "openai", "provider_model": "gpt-4o"},
            {"name": "translated", "provider": "anthropic", "provider_model": "claude-sonnet-4-5"},
        ],
    }
    snapshot = ConfigSnapshot(parse_config(msgspec.yaml.encode(config)), secret)

    class Sink:
        def emit(self, event: object) -> None:
            pass

    app = create_app(snapshot, Sink(), env={"SIM_KEY": SIM_KEY})
    server = await start_gateway(app, port=port)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()


async def one(http: aiohttp.ClientSession, url: str, model: str, i: int) -> tuple[float, float]:
    body = {
        "model": model,
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": f"Benchmark request {i}: tell me something."}],
    }
    start = time.perf_counter()
    first = 0.0
    async with http.post(url, json=body) as r:
        assert r.status == 200, await r.text()
        async for line in r.content:
            if (
                not first
                and line.startswith(b"data: {")
                and b'"content":"' in line
                and b'"content":""' not in line
            ):
                first = time.perf_counter()
        end = time.perf_counter()
    return (end - start) * 1000, ((first or end) - start) * 1000


def summary(xs: list[float]) -> str:
    q = statistics.quantiles(xs, n=10)
    return f"p50 {statistics.median(xs):7.3f} ms  p90 {q[8]:7.3f} ms  mean {statistics.fmean(xs):7.3f} ms"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def cpu_per_request(http: aiohttp.ClientSession, url: str, model: str, n: int, pid: int) -> float:
    before = cpu_seconds(pid)
    for i in range(n):
        await one(http, url, model, i)
    return (cpu_seconds(pid) - before) / n * 1000


async def drive(port: int, key: str, n: int, gateway_pid: int) -> None:
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    timings: dict[str, list[tuple[float, float]]] = {"passthrough": [], "translated": []}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
        for i in range(20):  # warm up both routes (connections, caches)
            await one(http, url, "passthrough", i)
            await one(http, url, "translated", i)
        for i in range(n):
            for model in ("passthrough", "translated") if i % 2 == 0 else ("translated", "passthrough"):
                timings[model].append(await one(http, url, model, i))
        # CPU time the gateway process spends per request, route by route:
        # robust to other load on the machine, unlike wall time.
        cpu = {m: await cpu_per_request(http, url, m, n, gateway_pid) for m in ("passthrough", "translated")}
    total = {m: [t for t, _ in v] for m, v in timings.items()}
    ttft = {m: [f for _, f in v] for m, v in timings.items()}
    print(f"streamed chat, {n} requests per route, one at a time (same gateway, same sim, same run)")
    for m in ("passthrough", "translated"):
        print(f"  {m:<12} total  {summary(total[m])}")
        print(f"  {m:<12} ttft   {summary(ttft[m])}")
    added = [t - p for t, p in zip(total["translated"], total["passthrough"], strict=True)]
    p50_total = statistics.median(total["translated"]) - statistics.median(total["passthrough"])
    p50_ttft = statistics.median(ttft["translated"]) - statistics.median(ttft["passthrough"])
    print(
        "added latency per request, OpenAI->Anthropic vs OpenAI passthrough: "
        f"median {statistics.median(added):.3f} ms, mean {statistics.fmean(added):.3f} ms "
        f"(p50 difference {p50_total:.3f} ms; ttft p50 difference {p50_ttft:.3f} ms)"
    )
    print(
        f"gateway CPU per request: passthrough {cpu['passthrough']:.3f} ms, "
        f"translated {cpu['translated']:.3f} ms, added {cpu['translated'] - cpu['passthrough']:.3f} ms"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=300, help="requests per route")
    p.add_argument("--serve-gateway", nargs=3, metavar=("SIM_PORT", "PORT", "KEY"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_gateway:
        import uvloop

        sim_port, port, key = args.serve_gateway
        uvloop.run(serve_gateway(int(sim_port), int(port), key))
        return 0

    from streams.keys import new_key

    key = new_key()
    sim_port, gw_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    sim = subprocess.Popen(
        [sys.executable, "-m", "nexus.sim.cli", "--port", str(sim_port), "--api-key", SIM_KEY],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    gateway = subprocess.Popen(
        [sys.executable, __file__, "--serve-gateway", str(sim_port), str(gw_port), key],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(sim_port, sim, "sim")
        wait_port(gw_port, gateway, "gateway")
        asyncio.run(drive(gw_port, key, args.requests, gateway.pid))
    finally:
        for proc in (gateway, sim):
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
