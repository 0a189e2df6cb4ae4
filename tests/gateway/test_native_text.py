"""What the request hooks read of a caller's own body
(ingress/translate/native_text.py): every prose string of the parts that
carry the conversation, whatever the item or block type, and never media,
identifiers or encrypted reasoning; a redaction lands where it was read."""

from __future__ import annotations

from typing import Any

import pytest

from ingress.translate.native_text import request_text, responses_output_text

B64 = "iVBORw0KGgo" * 20


@pytest.mark.parametrize(
    ("endpoint", "body", "segments"),
    [
        pytest.param(
            "chat",
            {
                "model": "m",
                "metadata": {"note": "not conversation"},
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {
                        "role": "user",
                        "name": "alice",
                        "content": [
                            {"type": "text", "text": "look"},
                            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{B64}"}},
                            {"type": "input_audio", "input_audio": {"data": B64, "format": "wav"}},
                        ],
                    },
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                        ],
                    },
                    {"role": "tool", "tool_call_id": "c1", "content": "42"},
                ],
                "prediction": {"type": "content", "content": "draft"},
            },
            ["be brief", "look", "{}", "42", "draft"],
            id="chat",
        ),
        pytest.param(
            "messages",
            {
                "model": "m",
                "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {"type": "base64", "media_type": "image/png", "data": B64},
                            },
                            {
                                "type": "document",
                                "source": {"type": "text", "media_type": "text/plain", "data": "doc"},
                            },
                            {"type": "document", "source": {"type": "base64", "data": B64}, "title": "t"},
                        ],
                    },
                    {
                        "role": "assistant",
                        "content": [
                            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                            {"type": "redacted_thinking", "data": "opaque"},
                            {"type": "tool_use", "id": "t1", "name": "f", "input": {"type": "x", "id": "y"}},
                        ],
                    },
                    {
                        "role": "user",
                        "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}],
                    },
                ],
            },
            ["sys", "doc", "t", "hmm", "x", "y", "ok"],
            id="messages",
        ),
        pytest.param(
            "responses",
            {
                "model": "m",
                "instructions": "inst",
                "tools": [{"type": "function", "name": "f", "description": "not conversation"}],
                "input": [
                    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
                    {"type": "input_image", "image_url": f"data:image/png;base64,{B64}"},
                    {"type": "reasoning", "id": "rs", "summary": [{"type": "summary_text", "text": "why"}]},
                    {"type": "reasoning", "id": "rs2", "encrypted_content": "opaque"},
                    {"type": "function_call", "call_id": "c", "name": "f", "arguments": '{"a":1}'},
                    {"type": "function_call_output", "call_id": "c", "output": "res"},
                    {"type": "a_future_item", "id": "x", "payload": {"words": ["new", "kind"]}},
                    {"type": "item_reference", "id": "msg_1"},
                ],
            },
            ["inst", "hi", "why", '{"a":1}', "res", "new", "kind"],
            id="responses",
        ),
        pytest.param("embeddings", {"model": "m", "input": ["a", [1, 2], "b"]}, ["a", "b"], id="embeddings"),
    ],
)
def test_what_is_read(endpoint: str, body: dict[str, Any], segments: list[str]) -> None:
    assert request_text(endpoint, body).segments == segments


def test_a_redaction_is_written_where_it_was_read() -> None:
    body: dict[str, Any] = {
        "model": "m",
        "input": [{"type": "function_call_output", "call_id": "c", "output": "card 4111"}, "keep"],
    }
    text = request_text("responses", body)
    assert text.write(["card [X]", "keep"]) is True
    assert body["input"] == [{"type": "function_call_output", "call_id": "c", "output": "card [X]"}, "keep"]
    assert text.write(["card [X]", "keep"]) is False


def test_an_answers_output_items() -> None:
    answer = {
        "id": "resp_1",
        "model": "m",
        "output": [
            {"type": "reasoning", "id": "rs", "summary": []},
            {
                "type": "message",
                "id": "msg",
                "content": [{"type": "output_text", "text": "hello", "annotations": []}],
            },
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        ],
    }
    assert responses_output_text(answer).segments == ["hello", "{}"]
