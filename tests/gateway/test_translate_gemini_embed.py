"""The Gemini embeddings grammar (ingress.translate.gemini_embed): bodies
in either spelling -> canonical EmbeddingRequest, answers read by the
google-genai SDK's own types, what it cannot carry refused naming the
field, and every text where the request hooks read it."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from google.genai import types as gtypes

from adapters.base import CodecError
from adapters.canonical import Embedding, EmbeddingResponse
from adapters.gemini.request import build_embed
from ingress.translate.gemini_embed import batch_response, decode_batch, decode_embed, embed_response
from ingress.translate.native_text import request_text


def _b(body: Any) -> bytes:
    return msgspec.json.encode(body)


def test_embed_content_is_one_text() -> None:
    req = decode_embed(
        _b(
            {
                "content": {"parts": [{"text": "hello"}, {"text": "world"}]},
                "taskType": "RETRIEVAL_DOCUMENT",
                "title": "Greeting",
                "outputDimensionality": 16,
            }
        )
    )
    assert req.input == "hello\nworld" and req.dimensions == 16
    assert req.nexus_ext == {"gemini": {"task_type": "RETRIEVAL_DOCUMENT", "title": "Greeting"}}
    # A Gemini target is asked embedContent, with the caller's options.
    action, body = build_embed(req, "gemini-embedding-001")
    assert action == "embedContent"
    assert msgspec.to_builtins(body) == {
        "content": {"parts": [{"text": "hello\nworld"}]},
        "taskType": "RETRIEVAL_DOCUMENT",
        "title": "Greeting",
        "outputDimensionality": 16,
    }


def test_batch_is_a_list_even_of_one_and_snake_case_is_read() -> None:
    one = decode_batch(_b({"requests": [{"model": "models/m", "content": {"parts": [{"text": "a"}]}}]}))
    assert one.input == ["a"] and one.dimensions is None and one.nexus_ext is None
    assert build_embed(one, "m")[0] == "batchEmbedContents"
    two = decode_batch(
        _b(
            {
                "requests": [
                    {
                        "content": {"parts": [{"text": t}]},
                        "task_type": "CLUSTERING",
                        "output_dimensionality": 8,
                    }
                    for t in ("a", "b")
                ]
            }
        )
    )
    assert two.input == ["a", "b"] and two.dimensions == 8
    assert two.nexus_ext == {"gemini": {"task_type": "CLUSTERING"}}


@pytest.mark.parametrize(
    ("decode", "body", "needle"),
    [
        (decode_embed, b"{nope", "not JSON"),
        (decode_embed, [], "JSON object"),
        (decode_embed, {}, "content"),
        (decode_embed, {"content": {"parts": []}}, "content.parts must not be empty"),
        (decode_embed, {"content": {"parts": [{"text": "  "}]}}, "content.parts must carry text"),
        (decode_embed, {"content": {"parts": [{"text": 3}]}}, "content.parts[0].text"),
        (
            decode_embed,
            {"content": {"parts": [{"text": "a"}, {"fileData": {"fileUri": "gs://x"}}]}},
            "content.parts[1] must be text",
        ),
        (
            decode_embed,
            {"content": {"parts": [{"text": "a"}]}, "outputDimensionality": 0},
            "outputDimensionality",
        ),
        (decode_batch, {"requests": []}, "requests must not be empty"),
        (decode_batch, {"content": {"parts": [{"text": "a"}]}}, "requests"),
        (
            decode_batch,
            {"requests": [{"content": {"parts": [{"videoMetadata": {}}]}}]},
            "requests[0].content.parts[0]",
        ),
        (
            decode_batch,
            {
                "requests": [
                    {"content": {"parts": [{"text": "a"}]}},
                    {"content": {"parts": [{"text": "b"}]}, "title": "T"},
                ]
            },
            "requests[1].title",
        ),
        (
            decode_batch,
            {
                "requests": [
                    {"content": {"parts": [{"text": "a"}]}, "outputDimensionality": 8},
                    {"content": {"parts": [{"text": "b"}]}, "outputDimensionality": 16},
                ]
            },
            "requests[1].outputDimensionality",
        ),
    ],
)
def test_what_it_cannot_carry_is_a_400_naming_the_field(decode: Any, body: Any, needle: str) -> None:
    with pytest.raises(CodecError) as info:
        decode(body if isinstance(body, bytes) else _b(body))
    assert info.value.error.status == 400 and info.value.error.code == "invalid_request"
    assert needle in info.value.error.message


def _resp(*vectors: list[float]) -> EmbeddingResponse:
    # Out of order on purpose: the answer follows the indexes.
    data = [Embedding(index=i, embedding=v) for i, v in enumerate(vectors)]
    return EmbeddingResponse(data=list(reversed(data)), model="m")


def test_answers_are_read_by_the_sdk_types() -> None:
    raw = msgspec.json.decode(embed_response(_resp([0.5, -1.0]), "m"))
    assert raw == {"embedding": {"values": [0.5, -1.0]}}  # embedContent's own shape
    assert gtypes.ContentEmbedding.model_validate(raw["embedding"]).values == [0.5, -1.0]
    batch = gtypes.EmbedContentResponse.model_validate_json(batch_response(_resp([1.0], [2.0], [3.0]), "m"))
    assert [e.values for e in batch.embeddings or []] == [[1.0], [2.0], [3.0]]


def test_an_answer_that_does_not_fit_is_the_providers_fault() -> None:
    with pytest.raises(CodecError) as info:
        embed_response(_resp([1.0], [2.0]), "m")
    assert info.value.error.code == "upstream_error"
    with pytest.raises(CodecError):
        batch_response(EmbeddingResponse(data=[Embedding(index=0, embedding="AAAA")], model="m"), "m")


def test_hooks_read_every_text_and_title_but_not_the_fields() -> None:
    body = {
        "requests": [
            {
                "model": "models/m",
                "taskType": "RETRIEVAL_DOCUMENT",
                "title": "card 4111",
                "content": {"role": "user", "parts": [{"text": "one"}, {"text": "two"}]},
            },
            {
                "model": "models/m",
                "taskType": "RETRIEVAL_DOCUMENT",
                "title": "card 4111",
                "content": {"parts": [{"text": "three"}]},
            },
        ]
    }
    text = request_text("batch_embed_contents", body)
    assert text.segments == ["one", "two", "card 4111", "three", "card 4111"] and text.messages == 2
    # Redacted in place: the body the provider is sent carries the new text.
    assert text.write(["one", "[X]", "card [X]", "three", "card [X]"])
    assert body["requests"][0]["content"]["parts"][1] == {"text": "[X]"}  # type: ignore[index]
    req = decode_batch(_b(body))
    assert req.input == ["one\n[X]", "three"] and req.nexus_ext == {
        "gemini": {"task_type": "RETRIEVAL_DOCUMENT", "title": "card [X]"}
    }
    single = {"content": {"parts": [{"text": "hello"}]}, "title": "t"}
    assert request_text("embed_content", single).segments == ["hello", "t"]
