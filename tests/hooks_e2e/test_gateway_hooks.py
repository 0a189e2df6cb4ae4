"""Issue 4 through the gateway with the official SDKs: what the provider
receives (redacted), what a blocked caller gets (403 / 429 in its own
error format), a stream cut by a response-stage block, the audit events
of both stages, body capture, and emergency passthrough."""

from __future__ import annotations

from typing import Any

import anthropic
import msgspec
import openai
import pytest

from streams.config_base import ConfigError
from streams.config_validation import parse_config
from streams.events import RequestReceived, UpstreamResult, UsageRecorded
from streams.events_compliance import HookVerdict, StageDecision
from tests.hooks_e2e.conftest import (
    BEFORE_LEAK,
    CARD,
    INJECTION,
    LEAKY_PROMPT,
    SSN,
    HooksStack,
    Keys,
    hooks_config,
    make_hooks_stack,
    passthrough_rule,
)

pytestmark = pytest.mark.integration


def _oai(hx: HooksStack, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=hx.url, api_key=key, max_retries=0)


def _ant(hx: HooksStack, key: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=hx.root, api_key=key, max_retries=0)


def _stages(hx: HooksStack, request_id: str) -> dict[str, StageDecision]:
    return {e.stage: e for e in hx.events.of(request_id) if isinstance(e, StageDecision)}


def _one(hx: HooksStack, request_id: str, kind: type[Any]) -> Any:
    found = [e for e in hx.events.of(request_id) if isinstance(e, kind)]
    assert len(found) == 1, [type(e).__name__ for e in hx.events.of(request_id)]
    return found[0]


def _user_text(body: Any) -> str:
    return "\n".join(str(m.get("content")) for m in body["messages"] if m.get("role") == "user")


async def test_card_number_reaches_the_provider_redacted(hx: HooksStack) -> None:
    prompt = f"Please charge my card {CARD} and note my SSN {SSN} for the record."
    async with _oai(hx, hx.keys.full) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="sim-small", messages=[{"role": "user", "content": prompt}]
        )
    assert raw.parse().choices[0].message.content
    seen = _user_text(hx.received()[-1])
    assert "[REDACTED_CREDIT_CARD]" in seen and "[REDACTED_US_SSN]" in seen
    assert CARD not in seen and SSN not in seen and "Please charge my card" in seen

    rid = raw.headers["x-nexus-request-id"]
    stages = _stages(hx, rid)
    assert stages["request"].decision == "redact" and stages["request"].redacted
    assert stages["response"].decision == "approve"
    pii = next(e for e in hx.events.of(rid) if isinstance(e, HookVerdict) and e.hook == "pii")
    assert pii.verdict == "redact" and {s.entity for s in pii.spans} == {"CREDIT_CARD", "US_SSN"}
    # What is recorded is the redacted body, never the number itself.
    received = _one(hx, rid, RequestReceived)
    assert received.body is not None and received.body.redacted and received.body.inline is not None
    assert CARD.encode() not in received.body.inline and b"[REDACTED_CREDIT_CARD]" in received.body.inline
    assert not any(CARD.encode() in msgspec.json.encode(e) for e in hx.events.of(rid))


async def test_card_number_redacted_on_anthropic_ingress_too(hx: HooksStack) -> None:
    async with _ant(hx, hx.keys.full) as client:
        msg = await client.messages.create(
            model="sim-small",
            max_tokens=64,
            messages=[{"role": "user", "content": f"my card: {CARD}"}],
        )
    assert msg.content and msg.content[0].type == "text"
    seen = _user_text(hx.received()[-1])
    assert "[REDACTED_CREDIT_CARD]" in seen and CARD not in seen


async def test_blocked_prompt_gets_403_in_openai_format(hx: HooksStack) -> None:
    before = hx.sim.state.recorder.count
    async with _oai(hx, hx.keys.full) as client:
        with pytest.raises(openai.PermissionDeniedError) as info:
            await client.chat.completions.create(
                model="sim-small", messages=[{"role": "user", "content": INJECTION}]
            )
    exc = info.value
    assert exc.status_code == 403
    body = exc.body
    assert isinstance(body, dict) and body["code"] == "content_blocked"
    assert body["type"] == "permission_error"
    assert "prompt-injection/ignore-instructions" in body["message"]
    assert INJECTION not in body["message"]
    assert hx.sim.state.recorder.count == before  # the provider never saw it
    rid = exc.response.headers["x-nexus-request-id"]
    stages = _stages(hx, rid)
    assert stages["request"].decision == "block"
    assert stages["request"].blocking_rule == "prompt-injection/ignore-instructions"
    assert "response" not in stages


async def test_blocked_prompt_gets_403_in_anthropic_format(hx: HooksStack) -> None:
    async with _ant(hx, hx.keys.full) as client:
        with pytest.raises(anthropic.PermissionDeniedError) as info:
            await client.messages.create(
                model="sim-small", max_tokens=64, messages=[{"role": "user", "content": INJECTION}]
            )
    exc = info.value
    assert exc.status_code == 403
    assert isinstance(exc.body, dict) and exc.body["type"] == "error"
    assert exc.body["error"]["type"] == "permission_error"
    assert "compliance policy" in exc.body["error"]["message"]


async def test_count_tokens_runs_the_request_hooks(hx: HooksStack) -> None:
    # A count may send the prompt to a provider: what the gateway would not
    # forward is not counted either.
    async with _ant(hx, hx.keys.full) as client:
        with pytest.raises(anthropic.PermissionDeniedError) as info:
            await client.messages.count_tokens(
                model="sim-small", messages=[{"role": "user", "content": INJECTION}]
            )
        assert isinstance(info.value.body, dict) and info.value.body["type"] == "error"
        assert info.value.body["error"]["type"] == "permission_error"
        counted = await client.messages.count_tokens(
            model="sim-small", messages=[{"role": "user", "content": f"my card: {CARD}"}]
        )
    assert counted.input_tokens > 0
    stages = _stages(hx, info.value.response.headers["x-nexus-request-id"])
    assert stages["request"].decision == "block"


async def test_rate_limiter_answers_429_with_retry_after(hx: HooksStack) -> None:
    async with _oai(hx, hx.keys.rate) as client:
        await client.chat.completions.create(model="sim-small", messages=[{"role": "user", "content": "one"}])
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(
                model="sim-small", messages=[{"role": "user", "content": "two"}]
            )
    exc = info.value
    assert exc.status_code == 429
    assert isinstance(exc.body, dict) and exc.body["code"] == "rate_limited"
    assert 1 <= int(exc.response.headers["retry-after"]) <= 60
    # Another key is not limited by k-rate's window.
    async with _oai(hx, hx.keys.full) as client:
        await client.chat.completions.create(
            model="sim-small", messages=[{"role": "user", "content": "three"}]
        )


async def test_response_block_cuts_an_openai_stream_with_its_error_frame(hx: HooksStack) -> None:
    text = ""
    async with _oai(hx, hx.keys.resp) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="sim-small", messages=[{"role": "user", "content": LEAKY_PROMPT}], stream=True
        )
        stream = raw.parse()
        with pytest.raises(openai.APIError) as info:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    text += chunk.choices[0].delta.content
    assert "compliance policy" in info.value.message
    # Text before the finding went out (chunked windows); the finding did not.
    assert text and BEFORE_LEAK.startswith(text) and "secret" not in text
    rid = raw.headers["x-nexus-request-id"]
    stages = _stages(hx, rid)
    resp = stages["response"]
    assert resp.decision == "block" and resp.blocking_rule == "leaked-word"
    assert resp.streaming_mode == "chunked" and resp.enforced
    upstream = _one(hx, rid, UpstreamResult)
    assert upstream.body is not None and upstream.body.inline is not None
    assert b"secret" not in upstream.body.inline  # the capture is what the caller got
    # Billed for what the provider wrote up to the cut, held text included
    # (the guard's rewrite of the deltas is not what the provider made).
    usage = _one(hx, rid, UsageRecorded)
    assert usage.usage.completion_tokens >= len(BEFORE_LEAK.split()), usage


async def test_response_block_cuts_an_anthropic_stream_with_its_error_event(hx: HooksStack) -> None:
    text = ""
    async with _ant(hx, hx.keys.resp) as client:
        with pytest.raises(anthropic.APIStatusError) as info:
            async with client.messages.stream(
                model="sim-small", max_tokens=256, messages=[{"role": "user", "content": LEAKY_PROMPT}]
            ) as stream:
                async for delta in stream.text_stream:
                    text += delta
    assert "compliance policy" in str(info.value.message)
    body = info.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "permission_error"
    assert "secret" not in text


async def test_response_block_on_a_unary_answer_is_a_403(hx: HooksStack) -> None:
    async with _oai(hx, hx.keys.resp) as client:
        with pytest.raises(openai.PermissionDeniedError) as info:
            await client.chat.completions.create(
                model="sim-small", messages=[{"role": "user", "content": LEAKY_PROMPT}]
            )
    assert "The response was blocked" in info.value.message
    # The same prompt from a key the response hook is not scoped to passes.
    async with _oai(hx, hx.keys.full) as client:
        ok = await client.chat.completions.create(
            model="sim-small", messages=[{"role": "user", "content": LEAKY_PROMPT}]
        )
    assert "secret" in (ok.choices[0].message.content or "")


async def test_clean_stream_is_released_whole_in_order(hx: HooksStack) -> None:
    async with _oai(hx, hx.keys.resp) as client:
        unary = await client.chat.completions.create(
            model="sim-small", messages=[{"role": "user", "content": "a harmless question"}]
        )
        stream = await client.chat.completions.create(
            model="sim-small", messages=[{"role": "user", "content": "a harmless question"}], stream=True
        )
        chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == unary.choices[0].message.content
    # The caller gets the role chunk, then the text, and no empty delta for
    # a provider chunk whose text was held back.
    deltas = [c.choices[0] for c in chunks if c.choices]
    assert deltas[0].delta.role == "assistant"
    assert all(d.delta.content or d.delta.role or d.finish_reason for d in deltas), deltas


async def test_a_guarded_stream_is_billed_from_the_providers_own_usage(hx: HooksStack) -> None:
    """A stream the response hooks read goes out with include_usage forced
    on (the caller's body otherwise as sent): its usage is the provider's,
    not an estimate, and the caller who did not ask for usage sees no
    usage chunk.  (Before the one pump, this path sent the caller's body
    without include_usage and billed every guarded OpenAI stream from an
    estimate.)"""
    async with _oai(hx, hx.keys.resp) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="sim-small", messages=[{"role": "user", "content": "a harmless question"}], stream=True
        )
        chunks = [c async for c in raw.parse()]
    assert chunks and all(c.usage is None for c in chunks)
    usage = _one(hx, raw.headers["x-nexus-request-id"], UsageRecorded)
    assert not usage.estimated, usage
    assert hx.received()[-1]["stream_options"] == {"include_usage": True}


async def test_a_guarded_stream_arrives_as_the_provider_speaks(
    valkey_client: Any, valkey_prefix: str
) -> None:
    """With a response hook screening the stream (chunked mode), text goes
    out token by token as the provider sends it (a word is held only while
    it could still become the blocked one), not in windows or whole at the
    end: the caller gets about as many text deltas as the provider sent."""
    hx = await make_hooks_stack(valkey=valkey_client, valkey_prefix=valkey_prefix, tokens_per_s=50)
    try:
        async with _oai(hx, hx.keys.resp) as client:
            stream = await client.chat.completions.create(
                model="sim-small", messages=[{"role": "user", "content": "a harmless question"}], stream=True
            )
            texts = [
                c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content
            ]
    finally:
        await hx.close()
    words = "".join(texts).split()
    assert len(words) >= 8
    assert len(texts) >= 0.8 * len(words), texts


async def test_body_capture_off_for_an_org(hx: HooksStack) -> None:
    async with _oai(hx, hx.keys.globex) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="sim-small", messages=[{"role": "user", "content": "nothing to keep"}]
        )
    rid = raw.headers["x-nexus-request-id"]
    received = _one(hx, rid, RequestReceived)
    upstream = _one(hx, rid, UpstreamResult)
    for body in (received.body, upstream.body):
        assert body is not None and body.size > 0 and body.inline is None and body.ref is None
    # acme's bodies are captured: request inline, response as the caller got it.
    async with _oai(hx, hx.keys.full) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="sim-small", messages=[{"role": "user", "content": "keep this"}]
        )
    rid = raw.headers["x-nexus-request-id"]
    upstream = _one(hx, rid, UpstreamResult)
    assert upstream.body is not None and upstream.body.inline is not None
    answer = raw.parse().choices[0].message.content
    assert answer and answer.encode() in upstream.body.inline


async def test_emergency_passthrough_skips_hooks_and_is_stamped(valkey_client: Any) -> None:
    stack = await make_hooks_stack(valkey=valkey_client, extra={"passthrough": [passthrough_rule()]})
    try:
        async with _oai(stack, stack.keys.full) as client:
            raw = await client.chat.completions.with_raw_response.create(
                model="sim-small", messages=[{"role": "user", "content": f"card {CARD}"}]
            )
        assert CARD in _user_text(stack.received()[-1])  # bypassed: not redacted
        rid = raw.headers["x-nexus-request-id"]
        received = _one(stack, rid, RequestReceived)
        assert received.passthrough_flags == ["bypass_hooks"]
        assert "incident 4711" in received.passthrough_reason
        stages = _stages(stack, rid)
        for stage in ("request", "response"):
            assert stages[stage].decision == "bypassed"
            assert stages[stage].passthrough_flags == ["bypass_hooks"]
    finally:
        await stack.close()


async def test_fleet_kill_switch_takes_the_engine_out_of_the_path(valkey_client: Any) -> None:
    reason = "vendor outage, compliance engine off per CISO"
    stack = await make_hooks_stack(
        valkey=valkey_client, extra={"kill_switch": {"engaged": True, "reason": reason}}
    )
    try:
        async with _oai(stack, stack.keys.full) as client:
            raw = await client.chat.completions.with_raw_response.create(
                model="sim-small", messages=[{"role": "user", "content": INJECTION}]
            )
        rid = raw.headers["x-nexus-request-id"]
        assert _stages(stack, rid)["request"].kill_switch
        assert _one(stack, rid, RequestReceived).passthrough_flags == ["bypass_hooks", "kill_switch"]
    finally:
        await stack.close()


async def test_a_rate_limiter_without_valkey_is_a_clear_start_up_error() -> None:
    with pytest.raises(ConfigError, match=r"rate-limiter needs a Valkey connection \(set NEXUS_VALKEY_URL\)"):
        await make_hooks_stack()


async def test_responses_api_forwards_the_redacted_prompt(hx: HooksStack) -> None:
    # An OpenAI provider serves /v1/responses natively, which relays the
    # caller's own bytes: with a redaction the call goes through chat.
    async with _oai(hx, hx.keys.full) as client:
        resp = await client.responses.create(model="sim-small", input=f"my card is {CARD}")
    assert resp.output_text
    last = hx.sim.state.recorder.snapshot()["requests"][-1]
    assert CARD not in msgspec.json.encode(last.body).decode()
    assert "[REDACTED_CREDIT_CARD]" in msgspec.json.encode(last.body).decode()
    # Without a finding the native passthrough is kept.
    async with _oai(hx, hx.keys.full) as client:
        await client.responses.create(model="sim-small", input="nothing to hide")
    assert hx.sim.state.recorder.snapshot()["requests"][-1].path.endswith("/responses")


async def test_responses_api_answer_goes_through_the_response_hooks(hx: HooksStack) -> None:
    async with _oai(hx, hx.keys.resp) as client:
        with pytest.raises(openai.PermissionDeniedError) as info:
            await client.responses.create(model="sim-small", input=LEAKY_PROMPT)
    assert "The response was blocked" in info.value.message


async def test_connection_stage_ip_block_never_reaches_the_provider(hx: HooksStack) -> None:
    before = hx.sim.state.recorder.count
    async with _oai(hx, hx.keys.local) as client:
        with pytest.raises(openai.PermissionDeniedError) as info:
            await client.chat.completions.create(
                model="sim-small", messages=[{"role": "user", "content": "hi"}]
            )
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "content_blocked"
    assert hx.sim.state.recorder.count == before
    stages = _stages(hx, info.value.response.headers["x-nexus-request-id"])
    assert stages["connection"].decision == "block" and stages["connection"].blocking_hook == "no-loopback"
    assert "request" not in stages


def test_capture_policy_naming_an_unknown_org_is_refused_at_load() -> None:
    text = hooks_config(1, Keys(), extra={"capture": {"off_for_orgs": ["initech"]}})
    with pytest.raises(ConfigError, match=r"hooks\.capture\.off_for_orgs\[0\]: unknown org 'initech'"):
        parse_config(text)


async def test_embeddings_inputs_are_screened_too(hx: HooksStack) -> None:
    async with _oai(hx, hx.keys.full) as client:
        raw = await client.embeddings.with_raw_response.create(
            model="embedder", input=["plain text", f"card {CARD} on file"]
        )
        assert len(raw.parse().data) == 2
        sent = hx.received()[-1]["input"]
        assert sent == ["plain text", "card [REDACTED_CREDIT_CARD] on file"]
        stages = _stages(hx, raw.headers["x-nexus-request-id"])
        assert stages["request"].decision == "redact"
        with pytest.raises(openai.PermissionDeniedError):
            await client.embeddings.create(model="embedder", input=INJECTION)
