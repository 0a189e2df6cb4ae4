"""Render -> decode round trips: a canonical answer rendered in a
provider's wire format (Anthropic: the gateway's own encoder for its
callers; the others: tests/adapters/reverse) and read back by that
provider's decoder is the same answer (unary and streamed, streams fed in awkward pieces).  What a format
cannot carry is named per provider and left out of the comparison."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from adapters.anthropic import AnthropicCodec
from adapters.base import Codec
from adapters.bedrock import BedrockCodec
from adapters.canonical import ChatChunk, ChatResponse
from adapters.cohere import CohereCodec
from adapters.gemini import GeminiCodec
from adapters.wirekit.fold import fold
from ingress.translate import anthropic_messages as anthropic_ingress
from tests.adapters.helpers import feed_in_pieces, plain, target
from tests.adapters.reverse import bedrock as bedrock_render
from tests.adapters.reverse import cohere as cohere_render
from tests.adapters.reverse import gemini as gemini_render
from tests.adapters.roundtrip_cases import RESPONSES, STREAMS


def _streamer(make: Callable[[], Any]) -> Callable[[list[ChatChunk]], bytes]:
    def render(chunks: list[ChatChunk]) -> bytes:
        r = make()
        return b"".join(r.feed(c) for c in chunks) + r.finish()

    return render


@dataclass(frozen=True)
class Format:
    codec: Codec
    unary: Callable[[ChatResponse], bytes]
    stream: Callable[[list[ChatChunk]], bytes]
    lossy: tuple[str, ...] = ()  # what the format cannot carry


FORMATS = {
    "gemini": Format(GeminiCodec(), gemini_render.render_response, _streamer(gemini_render.StreamRenderer)),
    "anthropic": Format(
        AnthropicCodec(),
        anthropic_ingress.encode_response,
        _streamer(lambda: anthropic_ingress.MessagesStreamEncoder(model="model-x")),
        lossy=("reasoning_tokens",),
    ),
    "bedrock": Format(
        BedrockCodec(),
        bedrock_render.render_response,
        _streamer(bedrock_render.StreamRenderer),
        lossy=("reasoning_tokens", "id"),
    ),
    "cohere": Format(
        CohereCodec(),
        cohere_render.render_response,
        _streamer(cohere_render.StreamRenderer),
        lossy=("reasoning_tokens",),
    ),
}


def comparable(resp: ChatResponse, lossy: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = plain(resp)
    if "id" in lossy:
        out.pop("id", None)
    if "reasoning_tokens" in lossy and out.get("usage"):
        out["usage"].pop("completion_tokens_details", None)
    return out


def _target(provider: str) -> Any:
    return target(provider, "", "model-x", region="us-east-1")


@pytest.mark.parametrize("provider", list(FORMATS))
@pytest.mark.parametrize("resp", RESPONSES)
def test_unary_round_trip(provider: str, resp: ChatResponse) -> None:
    f = FORMATS[provider]
    got = f.codec.decode_chat(f.unary(resp), _target(provider))
    assert comparable(got, f.lossy) == comparable(resp, f.lossy)


@pytest.mark.parametrize("provider", list(FORMATS))
@pytest.mark.parametrize("chunks", STREAMS)
def test_stream_round_trip(provider: str, chunks: list[ChatChunk]) -> None:
    f = FORMATS[provider]
    data = f.stream(chunks)
    got = fold(feed_in_pieces(f.codec.stream_decoder(_target(provider)), data, [3, 17]))
    assert comparable(got, f.lossy) == comparable(fold(chunks), f.lossy)
