"""A caller who hangs up (issue 12 item 6): its request stops at once —
the upstream call is cut, its slot is free — and is recorded as a 499 with
the usage it really cost (an estimate of the prompt the provider was
given, or what a stream had produced), never as a 200."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from ingress.gateway.front import NODE
from nexus.sim import SimSettings
from streams.events import RequestCompleted, RequestFailed, UpstreamResult, UsageRecorded
from tests.gateway.conftest import Stack

SLOW_MS = 4000
PROMPT = [{"role": "user", "content": "a question the provider takes its time over " * 4}]


async def _until(cond: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def _hang_up(stack: Stack, body: dict[str, Any], after_s: float) -> str:
    """Send ``body`` and close the connection after ``after_s`` (a caller
    giving up); returns the request id the gateway gave it."""
    rid = ""

    async def send() -> None:
        nonlocal rid
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{stack.url}/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {stack.keys.full}"},
            ) as r,
        ):
            rid = r.headers["x-nexus-request-id"]
            async for _ in r.content.iter_any():
                pass

    task = asyncio.create_task(send())
    await asyncio.sleep(after_s)
    task.cancel()  # the session closes: the connection goes away
    with pytest.raises(asyncio.CancelledError):
        await task
    return rid


def _of(stack: Stack, kind: type[Any]) -> list[Any]:
    return [e for e in stack.events.events if isinstance(e, kind)]


async def test_a_unary_request_whose_caller_hangs_up_stops_and_is_recorded_499(stack: Stack) -> None:
    state = stack.gateway.runner.app[NODE]
    stack.sim.state.settings = SimSettings(latency_ms=SLOW_MS, api_key="sk-sim-test")
    started = time.monotonic()
    await _hang_up(stack, {"model": "sim-small", "messages": PROMPT}, after_s=0.5)
    # The slot is free long before the provider would have answered.
    await _until(lambda: state.inflight == 0, timeout_s=2.0)
    await _until(lambda: bool(_of(stack, RequestFailed)), timeout_s=2.0)
    assert time.monotonic() - started < SLOW_MS / 1000
    failed = _of(stack, RequestFailed)
    assert [(e.status, e.error_code, e.model) for e in failed] == [(499, "client_closed", "sim-small")]
    rid = failed[0].request_id
    assert not _of(stack, RequestCompleted)
    attempts = [e for e in _of(stack, UpstreamResult) if e.request_id == rid]
    assert [a.error_code for a in attempts] == ["client_closed"]  # the call was cut, not answered
    usage = [e for e in _of(stack, UsageRecorded) if e.request_id == rid]
    # The provider had the prompt: it is billed, as an estimate; no answer was.
    assert len(usage) == 1 and usage[0].estimated
    assert usage[0].usage.prompt_tokens > 0 and usage[0].usage.completion_tokens == 0
    assert usage[0].cost_usd > 0


async def test_a_stream_whose_caller_hangs_up_before_the_first_byte_is_recorded_499(stack: Stack) -> None:
    stack.sim.state.settings = SimSettings(latency_ms=SLOW_MS, api_key="sk-sim-test")
    await _hang_up(stack, {"model": "sim-small", "messages": PROMPT, "stream": True}, after_s=0.5)
    await _until(lambda: bool(_of(stack, RequestFailed)), timeout_s=2.0)
    assert [(e.status, e.error_code) for e in _of(stack, RequestFailed)] == [(499, "client_closed")]
    assert not _of(stack, RequestCompleted)
    usage = _of(stack, UsageRecorded)  # the prompt the provider had, estimated
    assert len(usage) == 1 and usage[0].estimated and usage[0].usage.completion_tokens == 0


async def test_a_stream_whose_caller_hangs_up_midway_records_what_was_produced(stack: Stack) -> None:
    state = stack.gateway.runner.app[NODE]
    # A token every two seconds: the gateway is waiting on the provider, not
    # writing, when the caller leaves (a write would notice anyway).
    stack.sim.state.settings = SimSettings(tokens_per_s=0.5, api_key="sk-sim-test")
    got = bytearray()

    async def read() -> None:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{stack.url}/chat/completions",
                json={"model": "sim-small", "messages": PROMPT, "stream": True},
                headers={"Authorization": f"Bearer {stack.keys.full}"},
            ) as r,
        ):
            async for data in r.content.iter_any():
                got.extend(data)

    task = asyncio.create_task(read())
    await _until(lambda: got.count(b'"content":') >= 2, timeout_s=10.0)  # a token came
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The gateway stops reading the provider at once (it was waiting on it).
    await _until(lambda: state.inflight == 0, timeout_s=1.0)
    await _until(lambda: bool(_of(stack, RequestFailed)), timeout_s=1.0)
    assert [(e.status, e.error_code) for e in _of(stack, RequestFailed)] == [(499, "client_closed")]
    usage = _of(stack, UsageRecorded)
    assert len(usage) == 1 and usage[0].usage.completion_tokens >= 1  # what the provider had produced
    assert not _of(stack, RequestCompleted)
