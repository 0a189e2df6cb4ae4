"""Overload, end to end with the official SDKs (retries off: they retry
429s by default).  The gateway's event loop is saturated deliberately and
deterministically: a test-only hog holds the loop for 150 ms on every
iteration, so every lag probe fires late, as on a gateway offered more than
its core can serve.  New requests then get 429 + Retry-After in the
caller's format before auth or body parsing; a request admitted before
keeps going and completes; once the hog stops, the gateway admits again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
import anthropic
import openai
import pytest
from prometheus_client import REGISTRY

from ingress.gateway.front import NODE
from ingress.pipeline.admission import LOOP_LAG_REASON
from nexus.sim import SimSettings
from streams.events import RequestFailed
from tests.gateway.conftest import Stack, make_stack

MESSAGES: list[dict[str, str]] = [{"role": "user", "content": "hi"}]


class Hog:
    """Holds the running loop ``block_s`` on every iteration until stopped."""

    def __init__(self, block_s: float) -> None:
        self.block_s = block_s
        self.on = False
        self.loop = asyncio.get_running_loop()

    def start(self) -> None:
        self.on = True
        self.loop.call_soon(self._run)

    def stop(self) -> None:
        self.on = False

    def _run(self) -> None:
        if self.on:
            time.sleep(self.block_s)
            self.loop.call_soon(self._run)


def _shed(reason: str) -> float:
    return REGISTRY.get_sample_value("nexus_gateway_shed_total", {"reason": reason}) or 0.0


async def _until(cond: Callable[[], bool | Awaitable[bool]], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = cond()
        if not isinstance(got, bool):
            got = await got
        if got:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


def _clients(stack: Stack) -> tuple[openai.AsyncOpenAI, anthropic.AsyncAnthropic]:
    oai = openai.AsyncOpenAI(base_url=stack.url, api_key=stack.keys.full, max_retries=0, timeout=60)
    ant = anthropic.AsyncAnthropic(
        base_url=stack.url.removesuffix("/v1"), api_key=stack.keys.full, max_retries=0, timeout=60
    )
    return oai, ant


async def test_a_saturated_gateway_sheds_new_requests_keeps_admitted_ones_and_recovers() -> None:
    stack = await make_stack(lag_shedding=True)
    state = stack.gateway.runner.app[NODE]
    oai, ant = _clients(stack)
    hog = Hog(0.15)
    try:
        # Normal load: both formats are served.
        ok = await oai.chat.completions.create(model="sim-small", messages=MESSAGES)
        assert ok.choices[0].message.content
        msg = await ant.messages.create(model="sim-small", max_tokens=16, messages=MESSAGES)
        assert msg.content
        assert state.admission.check(0) is None

        # One request admitted, held by the upstream for a while...
        stack.sim.state.settings = SimSettings(latency_ms=1500, api_key="sk-sim-test")
        admitted = asyncio.create_task(oai.chat.completions.create(model="sim-small", messages=MESSAGES))
        await _until(lambda: state.inflight == 1)
        # ...then the loop saturates.
        shed_before = _shed(LOOP_LAG_REASON)
        hog.start()
        await _until(lambda: state.admission.check(0) == LOOP_LAG_REASON)

        with pytest.raises(openai.RateLimitError) as oe:
            await oai.chat.completions.create(model="sim-small", messages=MESSAGES)
        assert oe.value.status_code == 429
        assert oe.value.response.headers["retry-after"] == "1"
        assert oe.value.code == "overloaded" and oe.value.type == "rate_limit_error"

        with pytest.raises(anthropic.RateLimitError) as ae:
            await ant.messages.create(model="sim-small", max_tokens=16, messages=MESSAGES)
        assert ae.value.status_code == 429
        assert ae.value.response.headers["retry-after"] == "1"
        assert ae.value.body == {
            "type": "error",
            "error": {"type": "rate_limit_error", "message": "The gateway is at capacity; retry shortly."},
        }

        # Shed before auth and before the body is read: no key, no JSON, still a 429.
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{stack.url}/chat/completions", data=b"not json") as r,
        ):
            assert r.status == 429 and r.headers["Retry-After"] == "1"
            assert (await r.json())["error"]["code"] == "overloaded"
            assert r.headers["x-nexus-request-id"]

        # The admitted request was not dropped: it completes.
        done = await admitted
        assert done.choices[0].message.content

        # Load gone: the gateway admits again.
        hog.stop()
        stack.sim.state.settings = SimSettings(api_key="sk-sim-test")

        async def served() -> bool:
            try:
                await oai.chat.completions.create(model="sim-small", messages=MESSAGES)
            except openai.RateLimitError:
                return False
            return True

        await _until(served)
        assert state.admission.check(0) is None
        msg = await ant.messages.create(model="sim-small", max_tokens=16, messages=MESSAGES)
        assert msg.content

        # Counted, and an event per shed request (see ingress/pipeline/admission.py).
        shed_now = _shed(LOOP_LAG_REASON) - shed_before
        assert shed_now >= 3
        shed_events = [
            e for e in stack.events.events if isinstance(e, RequestFailed) and e.reason == LOOP_LAG_REASON
        ]
        assert len(shed_events) == shed_now
        assert {(e.status, e.error_code, e.stage) for e in shed_events} == {(429, "overloaded", "admission")}
    finally:
        hog.stop()
        await oai.close()
        await ant.close()
        await stack.gateway.close()
        await stack.sim.close()


async def test_the_inflight_cap_answers_anthropic_callers_in_their_format() -> None:
    stack = await make_stack(max_inflight=1)
    state = stack.gateway.runner.app[NODE]
    oai, ant = _clients(stack)
    try:
        stack.sim.state.settings = SimSettings(latency_ms=1000, api_key="sk-sim-test")
        busy = asyncio.create_task(oai.chat.completions.create(model="sim-small", messages=MESSAGES))
        await _until(lambda: state.inflight == 1)
        shed_before = _shed("inflight")
        with pytest.raises(anthropic.RateLimitError) as ae:
            await ant.messages.create(model="sim-small", max_tokens=16, messages=MESSAGES)
        assert ae.value.response.headers["retry-after"] == "1"
        assert isinstance(ae.value.body, dict) and ae.value.body["type"] == "error"
        assert ae.value.body["error"]["type"] == "rate_limit_error"
        assert _shed("inflight") == shed_before + 1
        assert (await busy).choices[0].message.content
    finally:
        await oai.close()
        await ant.close()
        await stack.gateway.close()
        await stack.sim.close()


async def test_an_in_process_stack_serves_through_loop_lag_its_own_clients_cause() -> None:
    # The clients of an in-process test gateway run on its loop: their work
    # is lag the gate would read as overload (a busy machine shed test
    # requests so).  Every such stack has the lag gate off (tests/inprocess.py).
    stack = await make_stack()
    state = stack.gateway.runner.app[NODE]
    oai, _ant = _clients(stack)
    hog = Hog(0.15)
    try:
        hog.start()
        await asyncio.sleep(0.5)  # what would be several probes, each 150 ms late
        assert state.admission.check(0) is None
        ok = await oai.chat.completions.create(model="sim-small", messages=MESSAGES)
        assert ok.choices[0].message.content
    finally:
        hog.stop()
        await oai.close()
        await _ant.close()
        await stack.gateway.close()
        await stack.sim.close()
