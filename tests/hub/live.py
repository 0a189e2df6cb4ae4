"""Helpers for the live-config tests: real gateway nodes (``nexus gateway
--hub`` processes) fed by a Hub, and an open-loop load generator.

The load is open loop (a request leaves every 1/rate s whatever the answers
do), so a slow swap shows as latency, not as fewer requests; each request's
start, latency and status are kept for the analysis.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.services import free_port


@dataclass
class GatewayNode:
    node_id: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start_gateway_node(
    node_id: str,
    *,
    nats_url: str,
    prefix: str,
    valkey_url: str,
    valkey_prefix: str,
    data_dir: Path,
    extra_env: Mapping[str, str] | None = None,
) -> GatewayNode:
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / f"{node_id}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
    env.update(
        NEXUS_NATS_URL=nats_url,
        NEXUS_VALKEY_URL=valkey_url,
        NEXUS_VALKEY_PREFIX=valkey_prefix,
        NEXUS_LOG_LEVEL="WARNING",
    )
    env.update(extra_env or {})
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nexus.cli",
            "gateway",
            "--hub",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--node-id",
            node_id,
            "--data-dir",
            str(data_dir),
            "--stream-prefix",
            prefix,
            "--workers",
            "1",
        ],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    return GatewayNode(node_id, port, proc, log)


async def wait_listening(node: GatewayNode, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            if node.proc.poll() is not None:
                raise AssertionError(f"gateway {node.node_id} exited:\n{node.log.read_text()[-3000:]}")
            try:
                async with s.get(node.url + "/healthz", timeout=aiohttp.ClientTimeout(total=1)) as r:
                    if r.status in (200, 503):
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"gateway {node.node_id} did not listen:\n{node.log.read_text()[-3000:]}")


CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}


async def chat_status(
    session: aiohttp.ClientSession, node: GatewayNode, key: str, body: dict[str, Any] | None = None
) -> int:
    async with session.post(
        node.url + "/v1/chat/completions", json=body or CHAT, headers={"Authorization": f"Bearer {key}"}
    ) as r:
        await r.read()
        return r.status


async def time_until(
    session: aiohttp.ClientSession,
    nodes: list[GatewayNode],
    key: str,
    status: int,
    timeout: float = 10.0,
    body: dict[str, Any] | None = None,
) -> float:
    """Seconds until every node answers ``status`` for ``key`` (and
    ``body``, default ``CHAT``), polled every 20 ms."""
    start = time.monotonic()
    pending = set(range(len(nodes)))
    last: dict[int, int] = {}
    while pending:
        for i in list(pending):
            last[i] = await chat_status(session, nodes[i], key, body)
            if last[i] == status:
                pending.discard(i)
        if not pending:
            break
        if time.monotonic() - start > timeout:
            raise AssertionError(
                f"nodes {sorted(pending)} never answered {status} within {timeout} s (last: {last})"
            )
        await asyncio.sleep(0.02)
    return time.monotonic() - start


@dataclass
class Shot:
    started: float  # monotonic
    latency: float  # seconds
    status: int  # 0: no answer (connection error, timeout)
    error: str = ""


@dataclass
class Load:
    rate: float
    nodes: list[GatewayNode]
    key: str
    shots: list[Shot] = field(default_factory=list)
    started: float = 0.0  # monotonic, when the first request left
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, duration: float) -> None:
        """Send ``rate`` requests a second for ``duration`` s, spread over the
        nodes in turn, without waiting for answers."""
        timeout = aiohttp.ClientTimeout(total=30)
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(timeout=timeout, connector=conn) as session:
            tasks: set[asyncio.Task[None]] = set()
            start = self.started = time.monotonic()
            n = 0
            while not self._stop.is_set():
                due = start + n / self.rate
                now = time.monotonic()
                if due - start >= duration:
                    break
                if due > now:
                    await asyncio.sleep(due - now)
                node = self.nodes[n % len(self.nodes)]
                t = asyncio.create_task(self._one(session, node))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                n += 1
            if tasks:
                await asyncio.gather(*tasks)

    def stop(self) -> None:
        self._stop.set()

    async def _one(self, session: aiohttp.ClientSession, node: GatewayNode) -> None:
        t0 = time.monotonic()
        try:
            async with session.post(
                node.url + "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {self.key}"}
            ) as r:
                body = await r.read()
                status, err = r.status, ""
            if status != 200:  # the error's code: which refusal it was
                err = body[:200].decode(errors="replace")
        except (aiohttp.ClientError, TimeoutError) as exc:
            status, err = 0, type(exc).__name__
        self.shots.append(Shot(t0, time.monotonic() - t0, status, err))

    def failures(self) -> list[Shot]:
        return [s for s in self.shots if s.status != 200]


def p99(latencies: list[float]) -> float:
    if not latencies:
        return 0.0
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
