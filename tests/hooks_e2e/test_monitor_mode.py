"""Monitor mode through the gateway with the official SDKs: the same hooks
that redact and block in test_gateway_hooks, in ``mode: monitor``, change
nothing a caller or the provider sees (the prompt arrives as sent, the
answer and the stream come back whole), and the events say what they
would have done.  The proxy's side of it is in tests/proxy/test_pipeline.py."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from streams.events_compliance import HookVerdict, StageDecision
from tests.hooks_e2e.conftest import CARD, INJECTION, LEAKED_WORD, LEAKY_PROMPT, HooksStack, make_hooks_stack

pytestmark = pytest.mark.integration

MONITORED = {
    "pipeline": [
        {
            "id": "pii",
            "type": "pii-detector",
            "stage": "request",
            "mode": "monitor",
            "settings": {"entities": ["CREDIT_CARD"], "action": "redact"},
        },
        {
            "id": "injection",
            "type": "rulepack-engine",
            "stage": "request",
            "mode": "monitor",
            "settings": {"packs": ["prompt-injection"]},
        },
        {
            "id": "no-secrets-out",
            "type": "keyword-filter",
            "stage": "response",
            "mode": "monitor",
            "settings": {"patterns": [rf"\b{LEAKED_WORD}\b"], "rule": "leaked-word", "action": "block"},
        },
    ]
}


@pytest.fixture
async def mon(valkey_client: Any, valkey_prefix: str) -> Any:
    stack = await make_hooks_stack(valkey=valkey_client, valkey_prefix=valkey_prefix, extra=MONITORED)
    yield stack
    await stack.close()


def _stages(hx: HooksStack, rid: str) -> dict[str, StageDecision]:
    return {e.stage: e for e in hx.events.of(rid) if isinstance(e, StageDecision)}


async def test_monitored_request_hooks_forward_the_prompt_as_sent(mon: HooksStack) -> None:
    prompt = f"{INJECTION} My card is {CARD}."
    async with openai.AsyncOpenAI(base_url=mon.url, api_key=mon.keys.full, max_retries=0) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="sim-small", messages=[{"role": "user", "content": prompt}]
        )
    assert raw.status_code == 200
    sent = mon.received()[-1]["messages"][-1]["content"]
    assert sent == prompt  # neither redacted nor blocked
    rid = raw.headers["x-nexus-request-id"]
    request = _stages(mon, rid)["request"]
    assert request.decision == "approve" and not request.redacted
    assert (request.monitored_decision, request.monitored_hook) == ("block", "injection")
    assert request.monitored_rule == "prompt-injection/ignore-instructions"
    verdicts = {e.hook: e for e in mon.events.of(rid) if isinstance(e, HookVerdict)}
    assert (verdicts["pii"].verdict, verdicts["pii"].effective, verdicts["pii"].enforcement) == (
        "redact",
        "approve",
        "monitor",
    )
    assert "monitor:block" in request.tags


async def test_a_monitored_response_block_leaves_answer_and_stream_whole(mon: HooksStack) -> None:
    async with openai.AsyncOpenAI(base_url=mon.url, api_key=mon.keys.full, max_retries=0) as client:
        unary = await client.chat.completions.with_raw_response.create(
            model="sim-small", messages=[{"role": "user", "content": LEAKY_PROMPT}]
        )
        stream = await client.chat.completions.with_raw_response.create(
            model="sim-small", messages=[{"role": "user", "content": LEAKY_PROMPT}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream.parse() if c.choices])
    answer = unary.parse().choices[0].message.content or ""
    assert LEAKED_WORD in answer and text == answer  # enforced, both would have been cut
    for raw, mode in ((unary, ""), (stream, "chunked")):
        response = _stages(mon, raw.headers["x-nexus-request-id"])["response"]
        assert response.decision == "approve" and response.streaming_mode == mode
        assert (response.monitored_decision, response.monitored_rule) == ("block", "leaked-word")
