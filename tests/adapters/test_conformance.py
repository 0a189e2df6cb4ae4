"""One conformance suite for every codec in the registry: each capability
case runs against every provider that claims it (and a provider that does
not claim embeddings must refuse them).  The capability x provider matrix is
printed at the end of the run (tests/adapters/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest

from adapters.base import Capability, Codec, CodecError
from adapters.canonical import (
    ChatRequest,
    EmbeddingRequest,
    FunctionCall,
    FunctionDef,
    ImagePart,
    ImageURL,
    JSONSchemaSpec,
    Message,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
)
from adapters.registry import CODECS
from adapters.wirekit.fold import fold
from tests.adapters.conformance_samples import conformance_target, samples
from tests.adapters.helpers import feed_in_pieces

RESULTS: dict[tuple[str, str], str] = {}

USER = Message(role="user", content="What is the weather in Paris?")
TOOL = Tool(
    function=FunctionDef(
        name="probe_tool_name",
        description="d",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}},
    )
)
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


def _text(codec: Codec) -> None:
    t = conformance_target(codec.name)
    wire = codec.encode_chat(ChatRequest(model="x", messages=[USER], max_tokens=20), t)
    assert wire.method == "POST" and wire.url.startswith("https://")
    msgspec.json.decode(wire.body)
    resp = codec.decode_chat(samples(codec.name).text or b"", t)
    assert resp.choices[0].message.content
    assert resp.usage is not None and resp.usage.total_tokens > 0


def _stream(codec: Codec) -> None:
    t = conformance_target(codec.name)
    codec.encode_chat(ChatRequest(model="x", messages=[USER], stream=True), t)
    folded = fold(feed_in_pieces(codec.stream_decoder(t), samples(codec.name).stream_text or b"", [7]))
    assert folded.choices[0].message.content and folded.choices[0].finish_reason


def _tools(codec: Codec) -> None:
    t = conformance_target(codec.name)
    history = [
        USER,
        Message(
            role="assistant",
            tool_calls=[
                ToolCall(
                    id="call_9", function=FunctionCall(name="probe_tool_name", arguments='{"city":"Paris"}')
                )
            ],
        ),
        Message(role="tool", tool_call_id="call_9", content="20C"),
    ]
    wire = codec.encode_chat(ChatRequest(model="x", messages=history, tools=[TOOL], tool_choice="auto"), t)
    assert b"probe_tool_name" in wire.body
    body, name = samples(codec.name).tool or (b"", "")
    call = (codec.decode_chat(body, t).choices[0].message.tool_calls or [])[0]
    assert call.function.name == name and call.id
    assert isinstance(msgspec.json.decode(call.function.arguments), dict)


def _tools_stream(codec: Codec) -> None:
    t = conformance_target(codec.name)
    data, name = samples(codec.name).stream_tool or (b"", "")
    folded = fold(feed_in_pieces(codec.stream_decoder(t), data, [5, 11]))
    calls = folded.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == [name]
    assert isinstance(msgspec.json.decode(calls[0].function.arguments), dict)
    assert folded.choices[0].finish_reason == "tool_calls"


def _vision(codec: Codec) -> None:
    msg = Message(
        role="user",
        content=[
            TextPart(text="What is this?"),
            ImagePart(image_url=ImageURL(url=f"data:image/png;base64,{PIXEL}")),
        ],
    )
    wire = codec.encode_chat(ChatRequest(model="x", messages=[msg]), conformance_target(codec.name))
    assert PIXEL.encode() in wire.body


def _json_schema(codec: Codec) -> None:
    rf = ResponseFormat(
        type="json_schema",
        json_schema=JSONSchemaSpec(
            name="probe", schema={"type": "object", "properties": {"probe_schema_field": {"type": "string"}}}
        ),
    )
    wire = codec.encode_chat(
        ChatRequest(model="x", messages=[USER], response_format=rf), conformance_target(codec.name)
    )
    assert b"probe_schema_field" in wire.body


def _reasoning(codec: Codec) -> None:
    resp = codec.decode_chat(samples(codec.name).reasoning or b"", conformance_target(codec.name))
    assert resp.choices[0].message.reasoning_content


def _embeddings(codec: Codec) -> None:
    t = conformance_target(codec.name, embeddings=True)
    codec.encode_embeddings(EmbeddingRequest(model="e", input=["a", "b"]), t)
    resp = codec.decode_embeddings(samples(codec.name).embeddings or b"", t)
    assert resp.data and all(isinstance(x, float) for x in resp.data[0].embedding)


CASES: dict[Capability, Callable[[Codec], None]] = {
    Capability.TEXT: _text,
    Capability.STREAM: _stream,
    Capability.TOOLS: _tools,
    Capability.TOOLS_STREAM: _tools_stream,
    Capability.VISION: _vision,
    Capability.JSON_SCHEMA: _json_schema,
    Capability.REASONING: _reasoning,
    Capability.EMBEDDINGS: _embeddings,
}

CLAIMED = [
    pytest.param(name, cap, id=f"{cap.value}->{name}")
    for name, codec in sorted(CODECS.items())
    for cap in CASES
    if cap in codec.capabilities
]


def test_every_codec_claims_something_and_the_suite_covers_every_claim() -> None:
    assert len(CODECS) == 20
    for codec in CODECS.values():
        assert codec.capabilities
        assert codec.capabilities - {Capability.RESPONSES} <= set(CASES)


@pytest.mark.parametrize(("provider", "capability"), CLAIMED)
def test_claimed_capability(provider: str, capability: Capability) -> None:
    RESULTS[(provider, capability.value)] = "FAIL"
    CASES[capability](CODECS[provider])
    RESULTS[(provider, capability.value)] = "ok"


@pytest.mark.parametrize("provider", sorted(CODECS))
def test_errors_normalise_to_canonical_codes(provider: str) -> None:
    codec = CODECS[provider]
    RESULTS[(provider, "errors")] = "FAIL"
    got = [(e.code, e.retryable) for e in (codec.normalise_error(s, b"{}", {}) for s in (429, 401, 500, 400))]
    assert got == [
        ("rate_limited", True),
        ("auth_failed", False),
        ("upstream_error", True),
        ("invalid_request", False),
    ]
    RESULTS[(provider, "errors")] = "ok"


@pytest.mark.parametrize(
    "provider", [n for n, c in sorted(CODECS.items()) if Capability.EMBEDDINGS not in c.capabilities]
)
def test_unclaimed_embeddings_are_refused(provider: str) -> None:
    with pytest.raises(CodecError) as exc:
        CODECS[provider].encode_embeddings(
            EmbeddingRequest(model="e", input="a"), conformance_target(provider)
        )
    assert exc.value.error.code == "endpoint_unsupported"
