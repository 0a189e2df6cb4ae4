"""The sim's provider formats over real HTTP: requests shaped like the
providers' documented examples are served, answers have the documented
structure (compared with the golden fixtures from the providers' API
references under tests/fixtures/), and wrong encodings fail the way the
provider fails them, so a codec bug cannot pass the conformance suite."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from adapters.base import Target
from adapters.bedrock.sigv4 import Credentials, sign
from adapters.canonical import ChatRequest, Message
from adapters.registry import codec_for
from nexus.sim import SimServer, SimSettings, start_sim

KEY = "sk-sim-formats"
FIXTURES = Path(__file__).parent.parent / "fixtures"


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[SimServer]:
    s = await start_sim(SimSettings(api_key=KEY))
    yield s
    await s.close()


async def call(sim: SimServer, path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any, bytes]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with (
        aiohttp.ClientSession() as http,
        http.post(sim.root + path, data=raw, headers={"content-type": "application/json", **headers}) as r,
    ):
        data = await r.read()
        try:
            return r.status, json.loads(data), data
        except ValueError:
            return r.status, None, data


ANTHROPIC = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
GEMINI = {"x-goog-api-key": KEY}
BEARER = {"authorization": f"Bearer {KEY}"}

# Requests as the providers' API references show them.
DOCUMENTED = [
    pytest.param(
        "/anthropic/v1/messages",
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024,
            "messages": [{"role": "user", "content": "Hello, world"}],
        },
        ANTHROPIC,
        "anthropic/response_text.json",
        id="anthropic-messages",
    ),
    pytest.param(
        "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
        {"contents": [{"parts": [{"text": "Explain how AI works in a few words"}]}]},
        GEMINI,
        "gemini/response_text.json",
        id="gemini-generateContent",
    ),
    pytest.param(
        "/gemini/v1beta/models/gemini-embedding-001:embedContent",
        {
            "model": "models/gemini-embedding-001",
            "content": {"parts": [{"text": "What is the meaning of life?"}]},
        },
        GEMINI,
        "gemini/embed_single.json",
        id="gemini-embedContent",
    ),
    pytest.param(
        "/cohere/v2/chat",
        {"model": "command-a-03-2025", "messages": [{"role": "user", "content": "hello world!"}]},
        BEARER,
        "cohere/response_text.json",
        id="cohere-chat",
    ),
    pytest.param(
        "/cohere/v2/embed",
        {
            "model": "embed-v4.0",
            "texts": ["hello", "goodbye"],
            "input_type": "classification",
            "embedding_types": ["float"],
        },
        BEARER,
        "cohere/embed.json",
        id="cohere-embed",
    ),
    pytest.param(
        "/voyage/v1/embeddings",
        {"input": ["Sample text 1", "Sample text 2"], "model": "voyage-3.5"},
        BEARER,
        None,
        id="voyage-embeddings",
    ),
    pytest.param(
        "/azure/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
        {"messages": [{"role": "user", "content": "Hi"}], "model": "gpt-4o"},
        {"api-key": KEY},
        "azure/response.json",
        id="azure-chat",
    ),
    pytest.param(
        "/replicate/v1/models/meta/meta-llama-3-8b-instruct/predictions",
        {"input": {"prompt": "Tell me a joke", "max_tokens": 64}},
        {"authorization": f"Bearer {KEY}", "prefer": "wait"},
        "replicate/prediction_llm.json",
        id="replicate-prediction",
    ),
]


def _keys(fixture: str) -> set[str]:
    return set(json.loads((FIXTURES / fixture).read_text()).keys())


@pytest.mark.parametrize(("path", "body", "headers", "fixture"), DOCUMENTED)
async def test_documented_requests_get_documented_answers(
    sim: SimServer, path: str, body: Any, headers: dict[str, str], fixture: str | None
) -> None:
    status, answer, raw = await call(sim, path, body, headers)
    assert status in (200, 201), raw
    if fixture is not None:
        # Fields the documented example has and the sim may leave out.
        optional = {"data_removed", "started_at", "completed_at", "meta", "texts", "prompt_filter_results"}
        missing = _keys(fixture) - set(answer) - optional
        assert not missing, f"the sim's answer lacks documented fields {missing}"


WRONG = [
    pytest.param(
        "/anthropic/v1/messages",
        {"model": "c", "messages": [{"role": "user", "content": "x"}]},
        ANTHROPIC,
        400,
        "max_tokens",
        id="anthropic-missing-max_tokens",
    ),
    pytest.param(
        "/anthropic/v1/messages",
        {"model": "c", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
        ANTHROPIC,
        400,
        "role",
        id="anthropic-system-role-in-messages",
    ),
    pytest.param(
        "/anthropic/v1/messages",
        {
            "model": "c",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {},
        },
        ANTHROPIC,
        400,
        "response_format",
        id="anthropic-unknown-field",
    ),
    pytest.param(
        "/anthropic/v1/messages",
        {
            "model": "c",
            "max_tokens": 5,
            "messages": [
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "x"}]}
            ],
        },
        ANTHROPIC,
        400,
        "tool_use",
        id="anthropic-orphan-tool_result",
    ),
    pytest.param(
        "/anthropic/v1/messages",
        {"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
        {"x-api-key": KEY},
        400,
        "anthropic-version",
        id="anthropic-no-version-header",
    ),
    pytest.param(
        "/anthropic/v1/messages",
        {"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
        {"authorization": f"Bearer {KEY}", "anthropic-version": "2023-06-01"},
        401,
        "",
        id="anthropic-bearer-instead-of-x-api-key",
    ),
    pytest.param(
        "/gemini/v1beta/models/g:generateContent",
        {"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]},
        GEMINI,
        400,
        "",
        id="gemini-openai-role",
    ),
    pytest.param(
        "/gemini/v1beta/models/g:generateContent",
        {"contents": [{"parts": [{"text": "x"}]}], "generation_config": {}},
        GEMINI,
        400,
        "generation_config",
        id="gemini-snake-case-field",
    ),
    pytest.param(
        "/gemini/v1beta/models/g:generateContent",
        {"contents": [{"parts": [{"text": "x", "inlineData": {"mimeType": "image/png", "data": "AAAA"}}]}]},
        GEMINI,
        400,
        "one kind",
        id="gemini-two-kinds-in-a-part",
    ),
    pytest.param(
        "/gemini/v1beta/models/g:generateContent",
        {"contents": [{"role": "user", "parts": [{"functionResponse": {"name": "nope", "response": {}}}]}]},
        GEMINI,
        400,
        "undeclared",
        id="gemini-response-for-undeclared-function",
    ),
    pytest.param(
        "/gemini/v1beta/models/g:batchEmbedContents",
        {"requests": [{"content": {"parts": [{"text": "x"}]}}]},
        GEMINI,
        400,
        "models/g",
        id="gemini-batch-embed-without-model",
    ),
    pytest.param(
        "/vertex/v1/projects/p/locations/l/publishers/google/models/g:generateContent",
        {"contents": [{"parts": [{"text": "x"}]}]},
        BEARER,
        400,
        "role",
        id="vertex-content-without-role",
    ),
    pytest.param(
        "/cohere/v2/chat",
        {"model": "c", "messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 5},
        BEARER,
        400,
        "max_completion_tokens",
        id="cohere-openai-field",
    ),
    pytest.param(
        "/cohere/v2/chat",
        {"model": "c", "messages": [{"role": "tool", "tool_call_id": "a", "content": "x"}]},
        BEARER,
        400,
        "tool_call_id",
        id="cohere-orphan-tool-message",
    ),
    pytest.param(
        "/cohere/v2/embed",
        {"model": "e", "texts": ["x"]},
        BEARER,
        400,
        "input_type",
        id="cohere-embed-without-input_type",
    ),
    pytest.param(
        "/cohere/v2/embed",
        {"model": "e", "texts": ["x"], "input_type": "search_document"},
        BEARER,
        400,
        "embedding_types",
        id="cohere-embed-without-embedding_types",
    ),
    pytest.param(
        "/voyage/v1/embeddings",
        {"model": "v", "input": ["x"], "dimensions": 8},
        BEARER,
        400,
        "dimensions",
        id="voyage-openai-field",
    ),
    pytest.param(
        "/azure/openai/deployments/d/chat/completions",
        {"messages": [{"role": "user", "content": "x"}]},
        {"api-key": KEY},
        404,
        "api-version",
        id="azure-without-api-version",
    ),
    pytest.param(
        "/mistral/v1/chat/completions",
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        BEARER,
        400,
        "stream_options",
        id="mistral-stream_options",
    ),
    pytest.param(
        "/replicate/v1/models/a/b/predictions",
        {"input": {}},
        {"authorization": f"Bearer {KEY}", "prefer": "wait"},
        422,
        "prompt",
        id="replicate-without-prompt",
    ),
    pytest.param(
        "/v1/chat/completions",
        {"model": "m", "messages": [{"role": "wizard", "content": "x"}]},
        BEARER,
        400,
        "messages",
        id="openai-unknown-role",
    ),
    pytest.param(
        "/deepseek/v1/chat/completions",
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 5},
        BEARER,
        400,
        "max_completion_tokens",
        id="deepseek-openai-only-field",
    ),
    pytest.param(
        "/minimax/v1/chat/completions",
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 5},
        BEARER,
        400,
        "max_completion_tokens",
        id="minimax-openai-only-field",
    ),
    pytest.param(
        "/v1/responses",
        {"model": "m", "input": [{"type": "bogus_item"}]},
        BEARER,
        400,
        "bogus_item",
        id="responses-unknown-input-item",
    ),
    pytest.param(
        "/vertex/v1/projects/p/locations/l/publishers/anthropic/models/claude-sonnet-4-5:rawPredict",
        {"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
        BEARER,
        400,
        "anthropic_version",
        id="vertex-claude-without-anthropic_version",
    ),
]


@pytest.mark.parametrize(("path", "body", "headers", "status", "mentions"), WRONG)
async def test_wrong_encodings_fail_like_the_provider(
    sim: SimServer, path: str, body: Any, headers: dict[str, str], status: int, mentions: str
) -> None:
    got, _, raw = await call(sim, path, body, headers)
    assert got == status, raw
    assert mentions.lower() in raw.decode().lower()


async def _bedrock(
    sim: SimServer, secret: str, tamper: bool = False, stream: bool = False
) -> tuple[int, bytes]:
    """A Converse request encoded and SigV4-signed by the Bedrock codec."""
    target = Target(
        provider="bedrock",
        base_url=sim.root + "/bedrock",
        provider_model="anthropic.claude-sonnet-4-5-20250929-v1:0",
        api_key=f"AKIDSIM:{secret}",
        options={"region": "us-east-1"},
    )
    request = ChatRequest(model="x", messages=[Message(role="user", content="hi")], stream=stream)
    wire = codec_for("bedrock").encode_chat(request, target)
    body = wire.body + (b" " if tamper else b"")
    async with (
        aiohttp.ClientSession() as http,
        http.post(URL(wire.url, encoded=True), data=body, headers=dict(wire.headers)) as r,
    ):
        return r.status, await r.read()


async def test_bedrock_checks_the_sigv4_signature(sim: SimServer) -> None:
    status, raw = await _bedrock(sim, KEY)
    assert status == 200, raw
    assert json.loads(raw)["stopReason"] == "end_turn"
    status, raw = await _bedrock(sim, "wrong-secret")
    assert status == 403 and b"signature" in raw
    status, raw = await _bedrock(sim, KEY, tamper=True)  # the body no longer matches the signed hash
    assert status == 403


async def test_bedrock_rejects_a_wrong_converse_body(sim: SimServer) -> None:
    """A correctly signed Converse call whose body breaks Bedrock's rules."""
    url = sim.root + "/bedrock/model/anthropic.claude-sonnet-4-5-20250929-v1:0/converse"
    body = json.dumps({"messages": [{"role": "assistant", "content": [{"text": "x"}]}]}).encode()
    headers = sign(
        "POST",
        url,
        {"content-type": "application/json"},
        body,
        credentials=Credentials(access_key_id="AKIDSIM", secret_access_key=KEY),
        region="us-east-1",
        service="bedrock",
        now=datetime.now(UTC),
    )
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
        status, raw = r.status, await r.read()
    assert status == 400, raw
    assert b"must start with a user message" in raw, raw


async def test_bedrock_stream_is_aws_event_stream_framing(sim: SimServer) -> None:
    status, raw = await _bedrock(sim, KEY, stream=True)
    assert status == 200
    events = []
    while raw:
        total, headers_len = struct.unpack(">II", raw[:8])
        assert struct.unpack(">I", raw[8:12])[0] == zlib.crc32(raw[:8])
        message = raw[:total]
        assert struct.unpack(">I", message[-4:])[0] == zlib.crc32(message[:-4])
        headers = message[12 : 12 + headers_len]
        name_len = headers[0]
        assert headers[1 : 1 + name_len] == b":event-type"
        value_len = struct.unpack(">H", headers[2 + name_len : 4 + name_len])[0]
        events.append(headers[4 + name_len : 4 + name_len + value_len].decode())
        json.loads(message[12 + headers_len : -4])
        raw = raw[total:]
    assert events[0] == "messageStart" and events[-2:] == ["messageStop", "metadata"]
    assert "contentBlockDelta" in events
