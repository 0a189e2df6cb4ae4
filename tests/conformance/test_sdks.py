"""The official SDKs against the gateway, served by simulated providers in
other formats: the ``anthropic`` SDK on /v1/messages served by OpenAI,
Gemini and Bedrock; the ``openai`` SDK on /v1/chat/completions and
/v1/responses served by Anthropic, Gemini, Bedrock and Cohere.  Tool use
and streaming both ways; the SDKs' own parsers are the judges."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from streams.events import UsageRecorded
from tests.conformance.stack import Stack, chat_model

WEATHER_ANTHROPIC: Any = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
WEATHER_OPENAI: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
WEATHER_RESPONSES: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": False,
}

ANTHROPIC_SERVED_BY = [pytest.param(p, id=f"anthropic-sdk->{p}") for p in ("openai", "gemini", "bedrock")]
OPENAI_SERVED_BY = [
    pytest.param(p, id=f"openai-sdk->{p}") for p in ("anthropic", "gemini", "bedrock", "cohere")
]


def anthropic_client(stack: Stack) -> anthropic.AsyncAnthropic:
    # The SDK sends the key as x-api-key, which /v1/messages accepts.
    return anthropic.AsyncAnthropic(base_url=stack.root, api_key=stack.key, max_retries=0)


def openai_client(stack: Stack) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=stack.url, api_key=stack.key, max_retries=0)


def usage_of(stack: Stack, request_id: str) -> UsageRecorded:
    found = [e for e in stack.events.of(request_id) if isinstance(e, UsageRecorded)]
    assert len(found) == 1
    return found[0]


@pytest.mark.parametrize("provider", ANTHROPIC_SERVED_BY)
async def test_anthropic_sdk_messages_tool_use_and_result(stack: Stack, provider: str) -> None:
    async with anthropic_client(stack) as client:
        raw = await client.messages.with_raw_response.create(
            model=chat_model(provider),
            max_tokens=512,
            tools=[WEATHER_ANTHROPIC],
            messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        )
        first = await raw.parse()
        assert raw.headers["x-nexus-routed-provider"] == provider
        assert first.type == "message" and first.role == "assistant"
        assert first.stop_reason == "tool_use"
        use = next(b for b in first.content if b.type == "tool_use")
        assert use.name == "get_weather" and use.input == {"city": "Paris"}
        assert first.usage.input_tokens > 0 and first.usage.output_tokens > 0
        ev = usage_of(stack, raw.headers["x-nexus-request-id"])
        assert ev.provider == provider and ev.usage.completion_tokens == first.usage.output_tokens

        turns: Any = [
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "21 degrees"}],
            },
        ]
        second = await client.messages.create(
            model=chat_model(provider), max_tokens=512, tools=[WEATHER_ANTHROPIC], messages=turns
        )
    assert second.stop_reason == "end_turn"
    text = "".join(b.text for b in second.content if b.type == "text")
    assert text.startswith("tool result received")


@pytest.mark.parametrize("provider", ANTHROPIC_SERVED_BY)
async def test_anthropic_sdk_streams_text_and_tool_use(stack: Stack, provider: str) -> None:
    async with anthropic_client(stack) as client:
        async with client.messages.stream(
            model=chat_model(provider),
            max_tokens=256,
            system="Be brief.",
            messages=[{"role": "user", "content": "Say something"}],
        ) as stream:
            pieces = [t async for t in stream.text_stream]
            message = await stream.get_final_message()
        assert len(pieces) > 2 and "".join(pieces) == message.content[0].text  # type: ignore[union-attr]
        assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0

        async with client.messages.stream(
            model=chat_model(provider),
            max_tokens=256,
            tools=[WEATHER_ANTHROPIC],
            messages=[{"role": "user", "content": "Weather in Paris?"}],
        ) as stream:
            message = await stream.get_final_message()
    use = next(b for b in message.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"city": "Paris"}
    assert message.stop_reason == "tool_use"


async def test_anthropic_sdk_errors_are_anthropic_shaped(stack: Stack) -> None:
    async with anthropic.AsyncAnthropic(base_url=stack.root, api_key="nvk_" + "0" * 64, max_retries=0) as bad:
        with pytest.raises(anthropic.AuthenticationError) as auth:
            await bad.messages.create(
                model=chat_model("openai"), max_tokens=10, messages=[{"role": "user", "content": "hi"}]
            )
    assert auth.value.body["type"] == "error"  # type: ignore[index]
    assert auth.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    async with anthropic_client(stack) as client:
        with pytest.raises(anthropic.RateLimitError) as limited:
            await client.messages.create(
                model=chat_model("gemini"),
                max_tokens=10,
                messages=[{"role": "user", "content": "sim:fail=429"}],
            )
        assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
        with pytest.raises(anthropic.BadRequestError):
            await client.messages.create(model=chat_model("openai"), max_tokens=10, messages=[])
        # A failure mid-stream arrives as Anthropic's `event: error` inside
        # the started 200 stream, after the text sent before it (an up-front
        # HTTP error would be a different status).
        pieces: list[str] = []
        with pytest.raises(anthropic.APIStatusError) as mid:
            async with client.messages.stream(
                model=chat_model("bedrock"),
                max_tokens=100,
                messages=[{"role": "user", "content": "sim:error_after=2 talk"}],
            ) as stream:
                async for piece in stream.text_stream:
                    pieces.append(piece)
        assert mid.value.status_code == 200 and pieces, (mid.value, pieces)
        frame: Any = mid.value.body
        assert frame["type"] == "error" and frame["error"]["type"] == "api_error", frame
        models = await client.models.list()
    assert chat_model("openai") in [m.id for m in models.data]
    assert all(m.type == "model" for m in models.data)


@pytest.mark.parametrize("provider", OPENAI_SERVED_BY)
async def test_openai_sdk_chat_tool_calls_and_streaming(stack: Stack, provider: str) -> None:
    async with openai_client(stack) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model=chat_model(provider),
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[WEATHER_OPENAI],
        )
        completion = raw.parse()
        call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
        assert completion.choices[0].finish_reason == "tool_calls"
        assert call.type == "function" and call.function.name == "get_weather"  # type: ignore[union-attr]
        assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
        assert completion.usage is not None and completion.usage.total_tokens > 0
        ev = usage_of(stack, raw.headers["x-nexus-request-id"])
        assert ev.usage.prompt_tokens == completion.usage.prompt_tokens

        after = await client.chat.completions.create(
            model=chat_model(provider),
            tools=[WEATHER_OPENAI],
            messages=[
                {"role": "user", "content": "Weather in Paris?"},
                completion.choices[0].message.model_dump(exclude_none=True),  # type: ignore[list-item]
                {"role": "tool", "tool_call_id": call.id, "content": "21 degrees"},
            ],
        )
        assert (after.choices[0].message.content or "").startswith("tool result received")

        stream = await client.chat.completions.create(
            model=chat_model(provider),
            messages=[{"role": "user", "content": "Tell me a story"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        text, usage = "", None
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for c in chunk.choices:
                text += c.delta.content or ""
        assert text and usage is not None and usage.completion_tokens > 0

        async with client.chat.completions.stream(
            model=chat_model(provider),
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[WEATHER_OPENAI],
        ) as helper:
            final = await helper.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert calls is not None
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}


@pytest.mark.parametrize("provider", OPENAI_SERVED_BY)
async def test_openai_sdk_responses_translated(stack: Stack, provider: str) -> None:
    async with openai_client(stack) as client:
        response = await client.responses.create(
            model=chat_model(provider), instructions="Be brief.", input="Say something", max_output_tokens=200
        )
        assert response.status == "completed" and response.output_text
        assert response.usage is not None and response.usage.output_tokens > 0

        called = await client.responses.create(
            model=chat_model(provider), input="Weather in Paris?", tools=[WEATHER_RESPONSES]
        )
        call = next(o for o in called.output if o.type == "function_call")
        assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
        after = await client.responses.create(
            model=chat_model(provider),
            tools=[WEATHER_RESPONSES],
            input=[
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "type": "function_call",
                    "call_id": call.call_id,
                    "name": call.name,
                    "arguments": call.arguments,
                },
                {"type": "function_call_output", "call_id": call.call_id, "output": "21 degrees"},
            ],
        )
        assert after.output_text.startswith("tool result received")

        async with client.responses.stream(
            model=chat_model(provider), input="Tell me a story", max_output_tokens=200
        ) as stream:
            deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
            final = await stream.get_final_response()
        assert len(deltas) > 2 and "".join(deltas) == final.output_text
        assert final.usage is not None and final.usage.output_tokens > 0

        async with client.responses.stream(
            model=chat_model(provider), input="Weather in Paris?", tools=[WEATHER_RESPONSES]
        ) as stream:
            final = await stream.get_final_response()
    call = next(o for o in final.output if o.type == "function_call")
    assert json.loads(call.arguments) == {"city": "Paris"}


async def test_openai_sdk_responses_native_passthrough(stack: Stack) -> None:
    async with openai_client(stack) as client:
        # OpenAI serves Responses itself: the body reaches it as sent
        # (store and previous_response_id included), model rewritten.
        raw = await client.responses.with_raw_response.create(
            model=chat_model("openai"), input="Say something", store=True, previous_response_id="resp_prev"
        )
        response = raw.parse()
        seen = stack.sim.state.recorder.snapshot()["requests"][-1]
        assert seen.path == "/v1/responses"
        assert seen.body["model"] == "gpt-4o" and seen.body["previous_response_id"] == "resp_prev"
        assert response.output_text
        ev = usage_of(stack, raw.headers["x-nexus-request-id"])
        assert response.usage is not None and ev.usage.prompt_tokens == response.usage.input_tokens
        async with client.responses.stream(model=chat_model("openai"), input="Tell me a story") as stream:
            final = await stream.get_final_response()
        assert final.output_text and final.usage is not None


@pytest.mark.parametrize(
    ("extra", "what"),
    [
        pytest.param({"previous_response_id": "resp_1"}, "previous_response_id", id="previous_response_id"),
        pytest.param({"store": True}, "store=true", id="store"),
        pytest.param({"tools": [{"type": "web_search_preview"}]}, "web_search_preview", id="builtin_tool"),
    ],
)
async def test_responses_untranslatable_is_a_clear_400(
    stack: Stack, extra: dict[str, Any], what: str
) -> None:
    async with openai_client(stack) as client:
        with pytest.raises(openai.BadRequestError) as exc:
            await client.responses.create(model=chat_model("anthropic"), input="hi", **extra)
    body: Any = exc.value.body
    assert body["code"] == "feature_requires_native_responses_target"
    assert what in body["message"]


async def test_openai_sdk_responses_mid_stream_error_is_response_failed(stack: Stack) -> None:
    async with openai_client(stack) as client:
        stream = await client.responses.create(
            model=chat_model("gemini"), input="sim:error_after=2 talk", stream=True
        )
        kinds = [event.type async for event in stream]
    assert kinds[0] == "response.created" and "response.output_text.delta" in kinds
    assert kinds[-1] == "response.failed" and "response.completed" not in kinds


@pytest.mark.parametrize("provider", ["gemini", "anthropic"])
async def test_openai_sdk_responses_reasoning_translated(stack: Stack, provider: str) -> None:
    async with openai_client(stack) as client:
        response = await client.responses.create(
            model=chat_model(provider),
            input="Think first",
            reasoning={"effort": "high"},
            max_output_tokens=20000,
        )
        reasoning = next(o for o in response.output if o.type == "reasoning")
        assert reasoning.summary[0].text.startswith("considering")
        assert response.output_text
        async with client.responses.stream(
            model=chat_model(provider),
            input="Think first",
            reasoning={"effort": "high"},
            max_output_tokens=20000,
        ) as stream:
            kinds = [e.type async for e in stream]
            final = await stream.get_final_response()
    assert "response.reasoning_summary_text.delta" in kinds
    assert [o.type for o in final.output] == ["reasoning", "message"]
    if provider == "gemini":  # Gemini counts thoughts apart; Anthropic inside output tokens
        assert final.usage is not None and final.usage.output_tokens_details.reasoning_tokens > 0
