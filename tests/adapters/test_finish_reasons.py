"""Every provider's stop/finish vocabulary lands on OpenAI's, with
``unknown`` (never an exception) for values a provider adds later."""

from __future__ import annotations

import msgspec
import pytest

from adapters.registry import CODECS
from tests.adapters.conformance_samples import conformance_target


def anthropic(reason: str) -> bytes:
    return msgspec.json.encode(
        {
            "id": "m",
            "type": "message",
            "role": "assistant",
            "model": "c",
            "content": [{"type": "text", "text": "x"}],
            "stop_reason": reason,
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }
    )


def gemini(reason: str) -> bytes:
    return msgspec.json.encode(
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "x"}]}, "finishReason": reason}]}
    )


def bedrock(reason: str) -> bytes:
    return msgspec.json.encode(
        {"output": {"message": {"role": "assistant", "content": [{"text": "x"}]}}, "stopReason": reason}
    )


def cohere(reason: str) -> bytes:
    return msgspec.json.encode(
        {
            "id": "c",
            "finish_reason": reason,
            "message": {"role": "assistant", "content": [{"type": "text", "text": "x"}]},
        }
    )


CASES = [
    *(
        pytest.param("anthropic", anthropic(r), f, id=f"anthropic:{r}->{f}")
        for r, f in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("refusal", "content_filter"),
            ("pause_turn", "stop"),
            ("model_context_window_exceeded", "length"),
            ("tool_use", "tool_calls"),
            ("new_reason_2030", "unknown"),
        ]
    ),
    *(
        pytest.param("gemini", gemini(r), f, id=f"gemini:{r}->{f}")
        for r, f in [
            ("STOP", "stop"),
            ("MAX_TOKENS", "length"),
            ("SAFETY", "content_filter"),
            ("RECITATION", "content_filter"),
            ("PROHIBITED_CONTENT", "content_filter"),
            ("MALFORMED_FUNCTION_CALL", "unknown"),
            ("NEW_REASON", "unknown"),
        ]
    ),
    *(
        pytest.param("bedrock", bedrock(r), f, id=f"bedrock:{r}->{f}")
        for r, f in [
            ("end_turn", "stop"),
            ("max_tokens", "length"),
            ("guardrail_intervened", "content_filter"),
            ("content_filtered", "content_filter"),
            ("tool_use", "tool_calls"),
            ("new_reason", "unknown"),
        ]
    ),
    *(
        pytest.param("cohere", cohere(r), f, id=f"cohere:{r}->{f}")
        for r, f in [
            ("COMPLETE", "stop"),
            ("STOP_SEQUENCE", "stop"),
            ("MAX_TOKENS", "length"),
            ("ERROR", "unknown"),
            ("NEW_REASON", "unknown"),
        ]
    ),
]


@pytest.mark.parametrize(("provider", "wire", "finish"), CASES)
def test_finish_reason(provider: str, wire: bytes, finish: str) -> None:
    resp = CODECS[provider].decode_chat(wire, conformance_target(provider))
    assert resp.choices[0].finish_reason == finish
