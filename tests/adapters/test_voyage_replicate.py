"""Golden tests for Voyage (embeddings only) and Replicate (predictions)."""

from __future__ import annotations

import pytest

from adapters.base import CodecError, StreamError
from adapters.canonical import ChatRequest, EmbeddingRequest, Message
from adapters.replicate import ReplicateCodec
from adapters.replicate.codec import stream_url
from adapters.voyage import VoyageCodec
from adapters.wirekit.fold import fold
from tests.adapters.helpers import body, feed_in_pieces, fixture, plain, split_plans, target

VOYAGE = VoyageCodec()
REPLICATE = ReplicateCodec()


def test_voyage_request_maps_ext_and_dimensions() -> None:
    wire = VOYAGE.encode_embeddings(
        EmbeddingRequest(
            model="v",
            input=["a", "b"],
            dimensions=512,
            nexus_ext={"voyage": {"input_type": "document", "output_dtype": "int8", "truncation": False}},
        ),
        target("voyage", "", "voyage-3.5"),
    )
    assert wire.url == "https://api.voyageai.com/v1/embeddings"
    assert wire.headers["authorization"] == "Bearer sk-test"
    assert body(wire.body) == {
        "input": ["a", "b"],
        "model": "voyage-3.5",
        "input_type": "document",
        "truncation": False,
        "output_dimension": 512,
        "output_dtype": "int8",
    }


@pytest.mark.parametrize(
    ("request_", "needle"),
    [
        pytest.param(
            EmbeddingRequest(model="v", input="a", nexus_ext={"voyage": {"input_type": "passage"}}),
            "input_type",
            id="bad_input_type",
        ),
        pytest.param(
            EmbeddingRequest(model="v", input="a", nexus_ext={"voyage": {"output_dtype": "f16"}}),
            "output_dtype",
            id="bad_dtype",
        ),
        pytest.param(EmbeddingRequest(model="v", input=[1, 2]), "token-array", id="tokens"),
    ],
)
def test_voyage_refusals(request_: EmbeddingRequest, needle: str) -> None:
    with pytest.raises(CodecError) as exc:
        VOYAGE.encode_embeddings(request_, target("voyage"))
    assert exc.value.error.status == 400 and needle in exc.value.error.message


def test_voyage_decode_and_no_chat() -> None:
    assert plain(VOYAGE.decode_embeddings(fixture("voyage", "embeddings.json"), target("voyage"))) == {
        "data": [
            {"index": 0, "embedding": [-0.013131560757756233, 0.02854064293205738]},
            {"index": 1, "embedding": [0.04107862338423729, -0.0024014497175812721]},
        ],
        "model": "voyage-3.5",
        "usage": {"prompt_tokens": 10, "total_tokens": 10},
    }
    with pytest.raises(CodecError) as exc:
        VOYAGE.encode_chat(ChatRequest(model="v", messages=[]), target("voyage"))
    assert exc.value.error.code == "endpoint_unsupported"


CHAT = ChatRequest(
    model="r",
    messages=[
        Message(role="system", content="Be poetic."),
        Message(role="user", content="Write a haiku about llamas"),
    ],
    max_tokens=64,
    temperature=0.7,
    nexus_ext={"replicate": {"input": {"top_k": 50}}},
)


def test_replicate_official_model_request() -> None:
    wire = REPLICATE.encode_chat(CHAT, target("replicate", "", "meta/meta-llama-3-70b-instruct"))
    assert wire.url == "https://api.replicate.com/v1/models/meta/meta-llama-3-70b-instruct/predictions"
    assert dict(wire.headers) == {
        "content-type": "application/json",
        "prefer": "wait",
        "authorization": "Token sk-test",
    }
    assert body(wire.body) == {
        "input": {
            "prompt": "Write a haiku about llamas",
            "system_prompt": "Be poetic.",
            "max_tokens": 64,
            "temperature": 0.7,
            "top_k": 50,
        }
    }


def test_replicate_versioned_stream_request_and_transcript() -> None:
    req = ChatRequest(
        model="r",
        stream=True,
        messages=[
            Message(role="user", content="Hi"),
            Message(role="assistant", content="Hello!"),
            Message(role="user", content="Joke?"),
        ],
    )
    wire = REPLICATE.encode_chat(req, target("replicate", "", "someone/llm:abc123"))
    assert wire.url == "https://api.replicate.com/v1/predictions"
    assert "prefer" not in wire.headers
    assert body(wire.body) == {
        "version": "abc123",
        "stream": True,
        "input": {"prompt": "user: Hi\nassistant: Hello!\nuser: Joke?\nassistant:"},
    }


def test_replicate_decode_prediction_and_stream_url() -> None:
    pred = fixture("replicate", "prediction_llm.json")
    assert plain(REPLICATE.decode_chat(pred, target("replicate"))) == {
        "id": "rrr4z55ocneqzikepnug6xezpe",
        "model": "meta/meta-llama-3-70b-instruct",
        "choices": [{"index": 0, "message": {"content": "Soft wool on the hills"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    }
    assert stream_url(pred).startswith("https://streaming-api.svc.us.c.replicate.net/v1/streams/")


@pytest.mark.parametrize(
    ("status", "code"),
    [
        pytest.param("processing", "timeout", id="still_processing"),
        pytest.param("failed", "upstream_error", id="failed"),
    ],
)
def test_replicate_unfinished_predictions(status: str, code: str) -> None:
    with pytest.raises(CodecError) as exc:
        REPLICATE.decode_chat(
            b'{"id":"p","status":"%s","output":null}' % status.encode(), target("replicate")
        )
    assert exc.value.error.code == code


STREAM = fixture("replicate", "stream.sse")


@pytest.mark.parametrize("plan", list(split_plans(STREAM)))
def test_replicate_stream(plan: str) -> None:
    chunks = feed_in_pieces(
        REPLICATE.stream_decoder(target("replicate", model="m")), STREAM, split_plans(STREAM)[plan]
    )
    assert plain(fold(chunks)) == {
        "id": "",
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"content": "Once upon a timein a land\nfar away"},
                "finish_reason": "stop",
            }
        ],
    }


def test_replicate_stream_error_event() -> None:
    with pytest.raises(StreamError) as exc:
        REPLICATE.stream_decoder(target("replicate")).feed(
            b'event: output\ndata: x\n\nevent: error\ndata: {"detail": "CUDA out of memory"}\n\n'
        )
    assert "CUDA" not in exc.value.error.message and len(exc.value.chunks) == 2


def test_replicate_refuses_tools() -> None:
    from adapters.canonical import FunctionCall, ToolCall

    req = ChatRequest(
        model="r",
        messages=[
            Message(
                role="assistant",
                tool_calls=[ToolCall(id="1", function=FunctionCall(name="f", arguments="{}"))],
            )
        ],
    )
    with pytest.raises(CodecError):
        REPLICATE.encode_chat(req, target("replicate", "", "a/b"))
