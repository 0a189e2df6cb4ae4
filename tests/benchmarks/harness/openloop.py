"""Open-loop fixed-rate load: requests are sent on a fixed schedule whether or
not earlier ones have returned, so a slow server cannot slow the client down
and hide its own queueing (no coordinated omission).  Latency and time to
first token are measured from each request's *scheduled* send time.

Run as its own (pinned) process; prints one JSON object on stdout:

    python -m tests.benchmarks.harness.openloop --url URL --rate 500 --duration 10 \
        --body-file body.json [--header 'k: v' ...] [--stream]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from dataclasses import dataclass, field

import aiohttp
import uvloop

from tests.benchmarks.harness import rawhttp

# A stream's first token: the first SSE event whose delta carries non-empty
# content (the role-only opening chunk does not count).
_FIRST_TOKEN = re.compile(rb'"content":\s*"[^"]')


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    done_at: list[float] = field(default_factory=list)
    ok: int = 0
    status_errors: dict[str, int] = field(default_factory=dict)
    exceptions: dict[str, int] = field(default_factory=dict)
    shed_429: int = 0
    client_dropped: int = 0


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


async def _one(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    stream: bool,
    scheduled: float,
    stats: Stats | None,
    timeout: aiohttp.ClientTimeout,
) -> None:
    clock = time.perf_counter
    if stats is not None:
        stats.lags.append(clock() - scheduled)
    first: float | None = None
    try:
        async with session.post(url, data=body, headers=headers, timeout=timeout) as resp:
            if resp.status != 200:
                await resp.read()
                if stats is not None:
                    key = str(resp.status)
                    stats.status_errors[key] = stats.status_errors.get(key, 0) + 1
                    if resp.status == 429:
                        stats.shed_429 += 1
                return
            if stream:
                async for line in resp.content:
                    if first is None and _FIRST_TOKEN.search(line):
                        first = clock()
                if first is None:
                    raise ValueError("stream ended without a content token")
            else:
                await resp.read()
        done = clock()
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        if stats is not None:
            key = type(exc).__name__
            stats.exceptions[key] = stats.exceptions.get(key, 0) + 1
        return
    if stats is not None:
        stats.ok += 1
        stats.done_at.append(done)
        stats.latencies.append(done - scheduled)
        if first is not None:
            stats.ttfts.append(first - scheduled)


async def _one_raw(
    pool: rawhttp.Pool,
    payload: bytes,
    stream: bool,
    scheduled: float,
    stats: Stats | None,
    timeout_s: float,
) -> None:
    clock = time.perf_counter
    if stats is not None:
        stats.lags.append(clock() - scheduled)
    try:
        status, first = await rawhttp.request(pool, payload, stream, timeout_s)
        done = clock()
        if status == 200 and stream and first is None:
            raise ValueError("stream ended without a content token")
    except (rawhttp.HttpError, OSError, TimeoutError, ValueError) as exc:
        if stats is not None:
            key = type(exc).__name__
            stats.exceptions[key] = stats.exceptions.get(key, 0) + 1
        return
    if stats is None:
        return
    if status != 200:
        stats.status_errors[str(status)] = stats.status_errors.get(str(status), 0) + 1
        if status == 429:
            stats.shed_429 += 1
        return
    stats.ok += 1
    stats.done_at.append(done)
    stats.latencies.append(done - scheduled)
    if first is not None:
        stats.ttfts.append(first - scheduled)


async def run(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    rate: float,
    duration: float,
    warmup: float,
    stream: bool,
    max_inflight: int,
    timeout_s: float,
    connections: int = 256,
    client: str = "raw",
) -> dict[str, object]:
    stats = Stats()
    host, port, payload = rawhttp.build_request(url, headers, body)
    pool = rawhttp.Pool(host, port, connections)
    # A bounded keep-alive pool, like any real client: past it, requests wait
    # for a connection (and that wait counts in their latency, measured from
    # the schedule), instead of a connection storm that burns both sides'
    # CPU when the server hiccups.
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    # perf_counter, not loop.time(): uvloop's clock has 1 ms resolution.
    clock = time.perf_counter
    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        start = clock() + 0.05
        total = int(rate * (warmup + duration))
        measured_from = int(rate * warmup)
        i = 0
        while i < total:
            now = clock()
            # Launch every request whose time has come in one go: sleeping
            # once per request would cost more than the requests at 1000/s.
            while i < total and start + i / rate <= now:
                scheduled = start + i / rate
                measured = stats if i >= measured_from else None
                if len(tasks) >= max_inflight:
                    if measured is not None:
                        stats.client_dropped += 1
                else:
                    if client == "raw":
                        coro = _one_raw(pool, payload, stream, scheduled, measured, timeout_s)
                    else:
                        coro = _one(session, url, body, headers, stream, scheduled, measured, timeout)
                    t = asyncio.create_task(coro)
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                i += 1
            if i < total:
                await asyncio.sleep(max(0.0, start + i / rate - clock()))
        send_end = clock()
        if tasks:
            await asyncio.wait(set(tasks), timeout=timeout_s + 1)
        end = clock()
        pool.close()
    measured_start = start + measured_from / rate
    errors = sum(stats.status_errors.values()) + sum(stats.exceptions.values()) + stats.client_dropped
    ms = 1000.0
    return {
        "rate": rate,
        "duration_s": duration,
        "sent": total - measured_from,
        "ok": stats.ok,
        "errors": errors,
        "status_errors": stats.status_errors,
        "exceptions": stats.exceptions,
        "shed_429": stats.shed_429,
        "client_dropped": stats.client_dropped,
        "rps": _throughput(stats, measured_start, send_end),
        "tail_s": round(end - send_end, 3),
        "send_window_s": send_end - measured_start,
        "p50_ms": _ms(percentile(stats.latencies, 50), ms),
        "p90_ms": _ms(percentile(stats.latencies, 90), ms),
        "p99_ms": _ms(percentile(stats.latencies, 99), ms),
        "ttft_p50_ms": _ms(percentile(stats.ttfts, 50), ms),
        "ttft_p99_ms": _ms(percentile(stats.ttfts, 99), ms),
        # How late the client itself sent (a client that cannot keep up shows
        # here, not as server latency it did not cause).
        "client_lag_p99_ms": _ms(percentile(stats.lags, 99), ms),
    }


def _throughput(stats: Stats, window_start: float, window_end: float) -> float:
    """Responses completed per second over the send window shifted by the
    median latency: a server that keeps up shows the offered rate however
    slow each answer is, and an overloaded one shows what it really
    completed (late answers, after the window, do not count)."""
    shift = percentile(stats.latencies, 50) or 0.0
    lo, hi = window_start + shift, window_end + shift
    done = sum(1 for d in stats.done_at if lo <= d <= hi)
    return done / max(window_end - window_start, 1e-9)


def _ms(value: float | None, scale: float) -> float | None:
    return None if value is None else round(value * scale, 3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--body-file", required=True)
    p.add_argument("--header", action="append", default=[], help="'Name: value' (repeatable)")
    p.add_argument("--rate", type=float, required=True, help="requests per second")
    p.add_argument("--duration", type=float, required=True, help="measured seconds")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds at the same rate, not measured")
    p.add_argument("--stream", action="store_true")
    p.add_argument("--max-inflight", type=int, default=4000, help="requests in flight before dropping")
    p.add_argument("--connections", type=int, default=256, help="keep-alive connection pool size")
    p.add_argument(
        "--client",
        choices=("raw", "aiohttp"),
        default="raw",
        help="raw asyncio HTTP/1.1 (default) or aiohttp",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, seconds")
    args = p.parse_args(argv)
    if not args.url.startswith(("http://127.", "http://localhost")):
        p.error("only loopback targets are allowed")
    if args.rate <= 0 or args.duration <= 0 or args.connections < 1:
        p.error("--rate, --duration and --connections must be positive")
    headers = {}
    for h in args.header:
        name, _, value = h.partition(":")
        headers[name.strip()] = value.strip()
    with open(args.body_file, "rb") as f:
        body = f.read()
    t0 = time.monotonic()
    result = uvloop.run(
        run(
            args.url,
            body,
            headers,
            rate=args.rate,
            duration=args.duration,
            warmup=args.warmup,
            stream=args.stream,
            max_inflight=args.max_inflight,
            timeout_s=args.timeout,
            connections=args.connections,
            client=args.client,
        )
    )
    result["wall_s"] = round(time.monotonic() - t0, 3)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
