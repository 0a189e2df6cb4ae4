"""Compliance proxy benchmark (a script, not a pytest test): the proxy side
by side with a direct connection to the same upstream, same run.

    python tests/benchmarks/proxy_bench.py            # the full run (issue 16 must-show 5)
    python tests/benchmarks/proxy_bench.py --quick    # a small, fast pass (the smoke test)

Processes: a TLS upstream (this script in ``--serve-upstream`` mode), the
proxy (``nexus proxy``, with a connection-stage hook on, events published to
NATS when it answers on NEXUS_NATS_URL, under a throwaway prefix) pinned to
CPU 0, and the load generator (this process, uvloop) with the upstream on
CPU 1 when the machine has two cores.  Figures:

- keep-alive bumped requests/s (16 connections, GET of a 2-byte body);
- keep-alive LLM API calls/s through the pipeline (POST /v1/chat/completions
  with the request and response hooks on, usage and cost recorded), and
  the p50 they add at 200 req/s, against the same calls direct;
- the latency the proxy adds at p50 at 200 req/s (open loop, keep-alive);
- a new bumped connection (TCP, CONNECT, TLS with a fresh client session,
  one request) p50, against a new direct TLS connection;
- a 100 MB download through a spliced tunnel, against direct (the median
  of 7 of each, taking turns);
- the proxy's RSS with 1,000 idle tunnels open.

Timing figures mean something only on a quiet machine; the last line
printed is the JSON of every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

BUMPED = "bench-bumped.example"  # listed for interception
SPLICED = "bench-spliced.example"  # not listed
BIG_CHUNK = b"x" * (1024 * 1024)

CHAT_BODY = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello to the benchmark."}]}'
CHAT_ANSWER = (
    b'{"id":"chatcmpl-bench","object":"chat.completion","created":1,"model":"gpt-4o-mini",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"Hello, benchmark! How can I help?"},'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":14,"completion_tokens":9,"total_tokens":23}}'
)

TARGETS = {
    "keepalive_bumped_rps": ">= 800",
    "keepalive_llm_rps": ">= 800",
    "llm_added_p50_ms_at_200rps": "<= 1.5",
    "added_p50_ms_at_200rps": "<= 1.5",
    "new_bumped_connection_p50_ms": "<= 6",
    "spliced_100mb_vs_direct": ">= 0.90",
    "rss_1000_idle_tunnels_mb": "<= 100",
}


# --- the upstream (its own process) ----------------------------------------------


class _Upstream(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = b""
        # uvloop's transports are not asyncio.Transport subclasses.
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, _, rest = self.buf.partition(b"\r\n\r\n")
            lower = head.lower()
            length = (
                int(lower.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
                if b"content-length:" in lower
                else 0
            )
            if len(rest) < length:
                return  # the body is still coming
            self.buf = rest[length:]
            path = head.split(b" ", 2)[1]
            assert self.transport is not None
            if path.endswith(b"/chat/completions"):
                self.transport.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(CHAT_ANSWER), CHAT_ANSWER)
                )
            elif path.startswith(b"/big"):
                mb = int(path.split(b"=")[1])
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (mb * len(BIG_CHUNK)))
                asyncio.get_running_loop().create_task(self._big(mb))
            else:
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    async def _big(self, mb: int) -> None:
        assert self.transport is not None
        for _ in range(mb):
            self.transport.write(BIG_CHUNK)
            while self.transport.get_write_buffer_size() > 4 * len(BIG_CHUNK):
                await asyncio.sleep(0.001)


def serve_upstream(cert: str, key: str) -> None:
    import uvloop

    async def main() -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.set_alpn_protocols(["http/1.1"])
        server = await asyncio.get_running_loop().create_server(
            _Upstream, "127.0.0.1", 0, ssl=ctx, backlog=4096
        )
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


# --- set-up ---------------------------------------------------------------------


def _pin(cpus: set[int]) -> list[str]:
    if len(os.sched_getaffinity(0)) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", ",".join(map(str, sorted(cpus)))]
    return []


def _nats_up(url: str) -> bool:
    host, port = url.rsplit("//", 1)[-1].rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


class Setup:
    def __init__(self, tmp: Path) -> None:
        from tests.proxy.pki import Pki

        self.tmp = tmp
        self.pki = Pki(tmp / "upstream-pki")
        ctx_dir = tmp / "upstream-pki"
        self.pki.server_context([BUMPED, SPLICED])
        self.cert, self.key = str(ctx_dir / "server-1.pem"), str(ctx_dir / "server-1-key.pem")
        self.procs: list[subprocess.Popen[bytes]] = []
        self.prefix = f"BENCHPX{os.getpid()}"

    def start_upstream(self) -> int:
        proc = subprocess.Popen(
            [*_pin({1}), sys.executable, __file__, "--serve-upstream", self.cert, self.key],
            stdout=subprocess.PIPE,
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        return int(proc.stdout.readline())

    def start_proxy(self, upstream_port: int) -> tuple[int, int, Path]:
        port, admin = _free_port(), _free_port()
        config = self.tmp / "proxy.yaml"
        config.write_text(
            f"""
auth:
  secret: proxy-benchmark-secret-0123456789
providers:
  - {{name: bench-openai, kind: openai, base_url: "https://{BUMPED}/v1"}}
models:
  - {{name: gpt-4o-mini, provider: bench-openai, price: {{input: 0.15, output: 0.6}}}}
hooks:
  pipeline:
    - id: loopback-only
      type: ip-access-filter
      stage: connection
      ingress: [proxy]
      settings: {{mode: allow, cidrs: ["127.0.0.0/8"]}}
    - id: codenames
      type: keyword-filter
      stage: request
      settings: {{patterns: ["project-nightingale"], rule: codename, action: block}}
    - id: no-secrets-out
      type: keyword-filter
      stage: response
      settings: {{patterns: ["\\bsecret\\b"], rule: leaked-word, action: block}}
proxy:
  resolve:
    "{BUMPED}:443": "127.0.0.1:{upstream_port}"
    "{SPLICED}:443": "127.0.0.1:{upstream_port}"
  tls:
    upstream_ca_files: ["{self.pki.ca_path}"]
  limits:
    max_tunnels: 20000
  interception:
    - host: {BUMPED}
      adapter: openai
"""
        )
        env = {**os.environ, "NEXUS_STREAM_PREFIX": self.prefix, "NEXUS_LOG_LEVEL": "WARNING"}
        env.setdefault("NEXUS_NATS_URL", "nats://127.0.0.1:4222")
        proc = subprocess.Popen(
            [
                *_pin({0}),
                sys.executable,
                "-m",
                "nexus.cli",
                "proxy",
                "--config",
                str(config),
                "--port",
                str(port),
                "--admin-port",
                str(admin),
                "--data-dir",
                str(self.tmp / "data"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            cwd=REPO,
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if "listening" not in line:
            raise SystemExit(f"the proxy did not start: {line}")
        return port, proc.pid, self.tmp / "data" / "proxy-ca" / "ca.pem"

    def close(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()

    async def drop_streams(self) -> None:
        url = os.environ.get("NEXUS_NATS_URL", "nats://127.0.0.1:4222")
        if _nats_up(url):
            with contextlib.suppress(Exception):
                await _drop_streams(url, self.prefix)


async def _drop_streams(url: str, prefix: str) -> None:
    import nats

    nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            if info.config.name and prefix in info.config.name:
                await js.delete_stream(info.config.name)
    finally:
        await nc.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# --- clients ------------------------------------------------------------------------

Opener = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


def opener(host: str, upstream_port: int, ca: Path, proxy_port: int | None) -> Opener:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.set_alpn_protocols(["http/1.1"])

    async def open_() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if proxy_port is None:
            r, w = await asyncio.open_connection("127.0.0.1", upstream_port, ssl=ctx, server_hostname=host)
            return r, w
        r, w = await asyncio.open_connection("127.0.0.1", proxy_port)
        w.write(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode())
        head = await r.readuntil(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(head.decode(errors="replace"))
        await w.start_tls(ctx, server_hostname=host)
        return r, w

    return open_


async def get_small(r: asyncio.StreamReader, w: asyncio.StreamWriter, host: str) -> None:
    w.write(f"GET /small HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    head = await r.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
    await r.readexactly(length)


async def post_chat(r: asyncio.StreamReader, w: asyncio.StreamWriter, host: str) -> None:
    """An OpenAI chat call with the caller's own key: through the proxy it
    runs the pipeline (hooks, usage, cost, events)."""
    w.write(
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer sk-bench-own-key\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(CHAT_BODY)}\r\n\r\n".encode()
        + CHAT_BODY
    )
    head = await r.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.decode(errors="replace"))
    length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
    await r.readexactly(length)


Call = Callable[[asyncio.StreamReader, asyncio.StreamWriter, str], Awaitable[None]]


async def keepalive_rps(
    open_: Opener, host: str, seconds: float, conns: int = 16, call: Call | None = None
) -> float:
    streams = [await open_() for _ in range(conns)]
    done = 0
    stop = time.perf_counter() + seconds

    one = call or get_small

    async def worker(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await one(r, w, host)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(r, w) for r, w in streams))
    elapsed = time.perf_counter() - started
    for _, w in streams:
        w.close()
    return done / elapsed


async def open_loop_p50(
    open_: Opener, host: str, rate: float, seconds: float, conns: int = 8, call: Call | None = None
) -> float:
    request = call or get_small
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(conns):
        idle.put_nowait(await open_())
    latencies: list[float] = []
    tasks = []

    async def one(scheduled: float) -> None:
        r, w = await idle.get()
        try:
            await request(r, w, host)
        finally:
            idle.put_nowait((r, w))
        latencies.append(time.perf_counter() - scheduled)

    start = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        at = start + i / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(at)))
    await asyncio.gather(*tasks)
    while not idle.empty():
        idle.get_nowait()[1].close()
    return statistics.median(latencies) * 1000


async def new_connection_p50(open_: Opener, host: str, count: int) -> float:
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        r, w = await open_()
        await get_small(r, w, host)
        times.append(time.perf_counter() - t0)
        w.close()
    return statistics.median(times[count // 10 :]) * 1000  # the first ones warm caches


async def transfer_mb_s(open_: Opener, host: str, mb: int) -> float:
    r, w = await open_()
    t0 = time.perf_counter()
    w.write(f"GET /big?mb={mb} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await r.readuntil(b"\r\n\r\n")
    left = mb * len(BIG_CHUNK)
    while left:
        chunk = await r.read(min(left, 1 << 20))
        if not chunk:
            raise RuntimeError("cut")
        left -= len(chunk)
    elapsed = time.perf_counter() - t0
    w.close()
    return mb / elapsed


async def idle_tunnels_rss(proxy_port: int, pid: int, count: int) -> tuple[float, float]:
    before = _rss_mb(pid)
    held = []
    for _ in range(count):
        r, w = await asyncio.open_connection("127.0.0.1", proxy_port)
        w.write(f"CONNECT {SPLICED}:443 HTTP/1.1\r\nHost: {SPLICED}:443\r\n\r\n".encode())
        await r.readuntil(b"\r\n\r\n")
        held.append(w)
    await asyncio.sleep(1.0)
    after = _rss_mb(pid)
    for w in held:
        w.close()
    return before, after


# --- the run ------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, object]:
    quick = args.quick
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with contextlib.suppress(OSError):
        if len(os.sched_getaffinity(0)) >= 2:
            os.sched_setaffinity(0, {1})
    tmp = Path(tempfile.mkdtemp(prefix="nexus-proxy-bench-"))
    setup = Setup(tmp)
    try:
        up_port = setup.start_upstream()
        proxy_port, pid, ca = setup.start_proxy(up_port)
        bumped = opener(BUMPED, up_port, ca, proxy_port)
        direct_b = opener(BUMPED, up_port, setup.pki.ca_path, None)
        spliced = opener(SPLICED, up_port, setup.pki.ca_path, proxy_port)
        direct_s = opener(SPLICED, up_port, setup.pki.ca_path, None)
        secs = 1.0 if quick else args.seconds
        out: dict[str, object] = {"quick": quick}
        await keepalive_rps(bumped, BUMPED, 0.5)  # warm-up: leaves, pools
        out["keepalive_bumped_rps"] = round(await keepalive_rps(bumped, BUMPED, secs))
        out["keepalive_direct_rps"] = round(await keepalive_rps(direct_b, BUMPED, secs))
        rate = 50.0 if quick else 200.0
        p_direct = await open_loop_p50(direct_b, BUMPED, rate, secs)
        p_proxy = await open_loop_p50(bumped, BUMPED, rate, secs)
        out["p50_ms_at_rate_direct"] = round(p_direct, 3)
        out["p50_ms_at_rate_proxy"] = round(p_proxy, 3)
        out["added_p50_ms_at_200rps"] = round(p_proxy - p_direct, 3)
        # LLM API calls through the pipeline, hooks on (request and response
        # keyword filters, the connection-stage IP filter), against direct.
        await keepalive_rps(bumped, BUMPED, 0.5, call=post_chat)  # warm-up: engine, sessions
        out["keepalive_llm_rps"] = round(await keepalive_rps(bumped, BUMPED, secs, call=post_chat))
        out["keepalive_llm_direct_rps"] = round(await keepalive_rps(direct_b, BUMPED, secs, call=post_chat))
        lp_direct = await open_loop_p50(direct_b, BUMPED, rate, secs, call=post_chat)
        lp_proxy = await open_loop_p50(bumped, BUMPED, rate, secs, call=post_chat)
        out["llm_p50_ms_at_rate_direct"] = round(lp_direct, 3)
        out["llm_p50_ms_at_rate_proxy"] = round(lp_proxy, 3)
        out["llm_added_p50_ms_at_200rps"] = round(lp_proxy - lp_direct, 3)
        n = 30 if quick else 300
        nd = await new_connection_p50(direct_b, BUMPED, n)
        nb = await new_connection_p50(bumped, BUMPED, n)
        out["new_direct_connection_p50_ms"] = round(nd, 3)
        out["new_bumped_connection_p50_ms"] = round(nb, 3)
        mb = 10 if quick else 100
        # One 100 MB transfer takes ~0.25 s here, and one pass of each moved
        # the ratio between 0.6 and 1.0 from run to run: the median of
        # several, direct and spliced taking turns so both see the same
        # machine.
        passes = 1 if quick else 7
        ds: list[float] = []
        ss: list[float] = []
        for _ in range(passes):
            ds.append(await transfer_mb_s(direct_s, SPLICED, mb))
            ss.append(await transfer_mb_s(spliced, SPLICED, mb))
        d, s = statistics.median(ds), statistics.median(ss)
        out["transfer_mb"] = mb
        out["transfer_passes"] = passes
        out["direct_mb_s"] = round(d, 1)
        out["spliced_mb_s"] = round(s, 1)
        out["direct_mb_s_range"] = [round(min(ds)), round(max(ds))]
        out["spliced_mb_s_range"] = [round(min(ss)), round(max(ss))]
        out["spliced_100mb_vs_direct"] = round(s / d, 3)
        tunnels = 100 if quick else 1000
        before, after = await idle_tunnels_rss(proxy_port, pid, tunnels)
        out["idle_tunnels"] = tunnels
        out["rss_mb_before_tunnels"] = round(before, 1)
        out["rss_1000_idle_tunnels_mb"] = round(after, 1)
        out["load_average"] = os.getloadavg()[0]
        return out
    finally:
        setup.close()
        await setup.drop_streams()
        shutil.rmtree(tmp, ignore_errors=True)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def report(figures: dict[str, object]) -> str:
    lines = ["| figure | proxy | direct | target |", "|---|---|---|---|"]
    rows = [
        ("keep-alive bumped req/s", "keepalive_bumped_rps", "keepalive_direct_rps", "keepalive_bumped_rps"),
        (
            "keep-alive LLM calls/s, pipeline + hooks",
            "keepalive_llm_rps",
            "keepalive_llm_direct_rps",
            "keepalive_llm_rps",
        ),
        (
            "LLM call p50 ms at 200 req/s (added)",
            "llm_added_p50_ms_at_200rps",
            "llm_p50_ms_at_rate_direct",
            "llm_added_p50_ms_at_200rps",
        ),
        (
            "p50 ms at 200 req/s (added)",
            "added_p50_ms_at_200rps",
            "p50_ms_at_rate_direct",
            "added_p50_ms_at_200rps",
        ),
        (
            "new connection p50 ms",
            "new_bumped_connection_p50_ms",
            "new_direct_connection_p50_ms",
            "new_bumped_connection_p50_ms",
        ),
        ("spliced transfer MB/s (ratio)", "spliced_mb_s", "direct_mb_s", "spliced_100mb_vs_direct"),
        (
            "RSS MB with idle tunnels",
            "rss_1000_idle_tunnels_mb",
            "rss_mb_before_tunnels",
            "rss_1000_idle_tunnels_mb",
        ),
    ]
    for label, mine, base, target in rows:
        lines.append(f"| {label} | {figures.get(mine)} | {figures.get(base)} | {TARGETS[target]} |")
    ratio = figures.get("spliced_100mb_vs_direct")
    lines.append(
        f"\nspliced/direct ratio: {ratio} (MB/s ranges over {figures.get('transfer_passes')} passes: "
        f"spliced {figures.get('spliced_mb_s_range')}, direct {figures.get('direct_mb_s_range')}); "
        f"load average at the end: {figures.get('load_average')}"
    )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve-upstream":
        serve_upstream(sys.argv[2], sys.argv[3])
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each timed phase")
    args = p.parse_args()
    import uvloop

    figures = uvloop.run(run(args))
    print(report(figures))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
