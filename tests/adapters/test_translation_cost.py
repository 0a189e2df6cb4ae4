"""What translation costs per request at the codec layer: an OpenAI-shaped
streamed request served by Anthropic (encode to /v1/messages, decode the
Anthropic SSE into canonical chunks) against the OpenAI passthrough path
(encode, decode OpenAI SSE) for the same answer.  The gateway-level
benchmark adds the HTTP hop; this isolates the codecs."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from adapters.canonical import ChatRequest, FunctionDef, Message, Tool
from adapters.registry import CODECS
from adapters.wirekit.fold import fold
from tests.adapters.conformance_samples import OPENAI
from tests.adapters.helpers import fixture, target

REQUEST = ChatRequest(
    model="x",
    stream=True,
    max_tokens=512,
    messages=[
        Message(role="system", content="You are a weather bot."),
        Message(role="user", content="What's the weather in San Francisco? " * 10),
    ],
    tools=[Tool(function=FunctionDef(name="get_weather", parameters={"type": "object", "properties": {}}))],
)
ANTHROPIC_STREAM = fixture("anthropic", "stream_tool_use.sse")  # 24 events
OPENAI_STREAM = (OPENAI.stream_tool or (b"", ""))[0] * 4  # a comparable number of SSE events


def _per_request(fn: Callable[[], None], n: int = 400) -> float:
    best = float("inf")
    for _ in range(3):  # best of three: the machine is shared
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best


@pytest.mark.slow
def test_openai_to_anthropic_streamed_translation_cost() -> None:
    anthropic, openai = CODECS["anthropic"], CODECS["openai"]
    ta, to = (
        target("anthropic", "", "claude-sonnet-4"),
        target("openai", "https://api.openai.com/v1", "gpt-4o"),
    )

    def translated() -> None:
        anthropic.encode_chat(REQUEST, ta)
        dec = anthropic.stream_decoder(ta)
        fold(dec.feed(ANTHROPIC_STREAM) + dec.close())

    def passthrough() -> None:
        openai.encode_chat(REQUEST, to)
        dec = openai.stream_decoder(to)
        fold(dec.feed(OPENAI_STREAM) + dec.close())

    t_translated, t_pass = _per_request(translated), _per_request(passthrough)
    print(
        f"\ncodec cost per streamed request: OpenAI->Anthropic {t_translated * 1e6:.0f} µs, "
        f"OpenAI passthrough {t_pass * 1e6:.0f} µs, added {(t_translated - t_pass) * 1e6:.0f} µs"
    )
    # Generous ceiling: an order of magnitude above what this machine measures.
    assert t_translated < 0.005
