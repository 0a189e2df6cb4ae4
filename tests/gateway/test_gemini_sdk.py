"""The official google-genai SDK, pointed at the gateway's Gemini endpoints
(``/v1beta/models/{model}:generateContent``, ``:streamGenerateContent``,
``:countTokens``, ``:embedContent``, ``:batchEmbedContents``), on both HTTP
front ends: answers from an OpenAI-format and a Gemini-format provider,
usage, count_tokens, embeddings, the key as ``x-goog-api-key`` or
``?key=``, and every refusal in Google's error format."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as gtypes

from ingress.gateway import create_app, start_gateway
from nexus.sim import SimSettings, start_sim
from streams.config_validation import parse_config
from streams.events import RequestCompleted, RequestReceived, UsageRecorded
from tests.gateway.conftest import SECRET, EventRecorder, Stack, config_yaml, free_port, make_keys
from tests.inprocess import in_process_snapshot


@pytest.fixture(params=["http1", "aiohttp"])
async def stack(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    """The gateway test stack, plus a Gemini-format provider (the sim's
    /gemini API) and a model on it."""
    monkeypatch.setenv("NEXUS_GATEWAY_HTTP", request.param)
    sim = await start_sim(SimSettings(api_key="sk-sim-test"))
    keys = make_keys()
    config: dict[str, Any] = msgspec.yaml.decode(config_yaml(sim.port, free_port(), keys))
    config["providers"].append(
        {
            "name": "sim-gemini",
            "kind": "gemini",
            "base_url": f"http://127.0.0.1:{sim.port}/gemini",
            "allow_private_network": True,
            "api_key_env": "SIM_TEST_KEY",
        }
    )
    config["models"].append(
        {
            "name": "gem",
            "provider": "sim-gemini",
            "provider_model": "gemini-2.5-flash",
            "price": {"input": 1.0, "output": 2.0},
        }
    )
    config["models"].append(
        {
            "name": "gem-embed",
            "provider": "sim-gemini",
            "provider_model": "gemini-embedding-001",
            "kind": "embedding",
            "price": {"input": 0.5},
        }
    )
    snapshot = in_process_snapshot(parse_config(msgspec.yaml.encode(config)), SECRET)
    events = EventRecorder()
    app = create_app(snapshot, events, env={"SIM_TEST_KEY": "sk-sim-test"})
    gateway = await start_gateway(app)
    s = Stack(gateway=gateway, sim=sim, events=events, keys=keys, snapshot=snapshot)
    yield s
    while _CLIENTS:
        await _CLIENTS.pop().aio.aclose()
    await gateway.close()
    await sim.close()


def root(stack: Stack) -> str:
    return stack.url.removesuffix("/v1")


_CLIENTS: list[genai.Client] = []  # closed when the test's stack is


def client(stack: Stack, key: str | None = None) -> genai.Client:
    c = genai.Client(
        api_key=key or stack.keys.full,
        http_options=gtypes.HttpOptions(base_url=root(stack), api_version="v1beta"),
    )
    _CLIENTS.append(c)
    return c


def _request_id(stack: Stack, model: str) -> str:
    received = [
        e for e in stack.events.events if isinstance(e, RequestReceived) and e.requested_model == model
    ]
    assert received
    return received[-1].request_id


@pytest.mark.parametrize("model", ["sim-small", "gem"])
async def test_sdk_generate_content(stack: Stack, model: str) -> None:
    resp = await client(stack).aio.models.generate_content(
        model=model,
        contents="Say hello to Nexus",
        config=gtypes.GenerateContentConfig(
            system_instruction="Be brief.", max_output_tokens=64, temperature=0.1
        ),
    )
    assert resp.text
    assert resp.model_version == model  # the caller's name, not the provider's
    assert resp.candidates and resp.candidates[0].finish_reason == gtypes.FinishReason.STOP
    usage = resp.usage_metadata
    assert usage is not None and usage.prompt_token_count and usage.candidates_token_count
    rid = _request_id(stack, model)
    assert stack.events.types(rid) == [
        "RequestReceived",
        "UpstreamResult",
        "UsageRecorded",
        "RequestCompleted",
    ]
    received, _, recorded, done = stack.events.of(rid)
    assert isinstance(received, RequestReceived) and received.endpoint == "generate_content"
    assert received.stream is False and received.tenant.key_id == "k-full"
    assert isinstance(recorded, UsageRecorded)
    assert recorded.usage.prompt_tokens == usage.prompt_token_count
    assert isinstance(done, RequestCompleted) and done.status == 200
    # The provider got the provider's model id, with the gateway's credential
    # (the sim recognises it), never the caller's virtual key.
    seen = stack.sim.state.recorder.snapshot()["requests"][-1]
    assert "sim-small-v1" in str(seen.body) or "gemini-2.5-flash" in seen.path
    assert seen.credential and stack.keys.full not in str(seen.headers)


@pytest.mark.parametrize("model", ["sim-small", "gem"])
async def test_sdk_stream_with_usage_in_the_last_chunk(stack: Stack, model: str) -> None:
    pieces: list[str] = []
    chunks: list[gtypes.GenerateContentResponse] = []
    async for chunk in await client(stack).aio.models.generate_content_stream(
        model=model, contents="Stream something long enough to come in pieces"
    ):
        chunks.append(chunk)
        pieces.append(chunk.text or "")
    assert len(chunks) > 1 and "".join(pieces).strip()
    assert all(c.model_version == model for c in chunks)
    last = chunks[-1]
    assert last.candidates and last.candidates[0].finish_reason == gtypes.FinishReason.STOP
    assert last.usage_metadata is not None and last.usage_metadata.total_token_count
    rid = _request_id(stack, model)
    received = stack.events.of(rid)[0]
    assert isinstance(received, RequestReceived) and received.endpoint == "stream_generate_content"
    assert received.stream is True
    assert "UsageRecorded" in stack.events.types(rid)


async def test_sdk_function_calling_round_trip(stack: Stack) -> None:
    tool = gtypes.Tool(
        function_declarations=[
            gtypes.FunctionDeclaration(
                name="get_weather",
                description="Get the weather for a city",
                parameters=gtypes.Schema(
                    type=gtypes.Type.OBJECT,
                    properties={"city": gtypes.Schema(type=gtypes.Type.STRING)},
                    required=["city"],
                ),
            )
        ]
    )
    config = gtypes.GenerateContentConfig(
        tools=[tool],
        tool_config=gtypes.ToolConfig(
            function_calling_config=gtypes.FunctionCallingConfig(mode=gtypes.FunctionCallingConfigMode.ANY)
        ),
        automatic_function_calling=gtypes.AutomaticFunctionCallingConfig(disable=True),
    )
    c = client(stack)
    first = await c.aio.models.generate_content(
        model="sim-small", contents="Weather in Paris?", config=config
    )
    calls = first.function_calls
    assert calls and calls[0].name == "get_weather" and isinstance(calls[0].args, dict)
    assert first.candidates and first.candidates[0].content is not None
    second = await c.aio.models.generate_content(
        model="sim-small",
        contents=[
            gtypes.Content(role="user", parts=[gtypes.Part(text="Weather in Paris?")]),
            first.candidates[0].content,
            gtypes.Content(
                role="user",
                parts=[gtypes.Part.from_function_response(name="get_weather", response={"temp": "21C"})],
            ),
        ],
        config=gtypes.GenerateContentConfig(tools=[tool]),
    )
    assert second.text


@pytest.mark.parametrize(("model", "how"), [("sim-small", "estimated"), ("gem", "provider")])
async def test_sdk_count_tokens(stack: Stack, model: str, how: str) -> None:
    counted = await client(stack).aio.models.count_tokens(model=model, contents="How many tokens is this?")
    assert counted.total_tokens and counted.total_tokens > 0
    rid = _request_id(stack, model)
    # Not metered: no usage, no reservation; on record all the same.
    types = stack.events.types(rid)
    assert "UsageRecorded" not in types and types[-1] == "RequestCompleted"
    received = stack.events.of(rid)[0]
    assert isinstance(received, RequestReceived) and received.endpoint == "gemini_count_tokens"
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{root(stack)}/v1beta/models/{model}:countTokens",
            json={"contents": [{"parts": [{"text": "hi"}]}]},
            headers={"x-goog-api-key": stack.keys.full},
        ) as r,
    ):
        assert r.status == 200 and r.headers["X-Nexus-Token-Count"] == how
        assert set(await r.json()) >= {"totalTokens"}


async def _post(stack: Stack, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s:
        data = body if isinstance(body, bytes) else msgspec.json.encode(body)
        async with s.post(f"{root(stack)}{path}", data=data, headers=headers or {}) as r:
            return r.status, msgspec.json.decode(await r.read())


HELLO = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}


async def test_the_key_may_come_as_a_query_parameter(stack: Stack) -> None:
    status, body = await _post(
        stack, f"/v1beta/models/sim-small:generateContent?key={stack.keys.full}", HELLO
    )
    assert status == 200 and body["candidates"][0]["content"]["parts"][0]["text"]
    status, body = await _post(stack, "/v1beta/models/sim-small:generateContent?key=nvk_wrong", HELLO)
    assert status == 401 and body["error"]["status"] == "UNAUTHENTICATED"
    status, body = await _post(stack, "/v1beta/models/sim-small:generateContent", HELLO)
    assert status == 401 and body["error"]["status"] == "UNAUTHENTICATED" and body["error"]["code"] == 401


async def test_sdk_errors_are_googles(stack: Stack) -> None:
    with pytest.raises(genai_errors.ClientError) as info:
        await client(stack, key="nvk_not_a_key").aio.models.generate_content(model="sim-small", contents="hi")
    assert info.value.code == 401 and info.value.status == "UNAUTHENTICATED"
    with pytest.raises(genai_errors.ClientError) as info:
        await client(stack).aio.models.generate_content(model="no-such-model", contents="hi")
    assert info.value.code == 404 and info.value.status == "NOT_FOUND"


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        ("/v1beta/models/sim-small:generateContent", b"{not json", 400, "JSON"),
        ("/v1beta/models/sim-small:generateContent", [1], 400, "object"),
        (
            "/v1beta/models/sim-small:generateContent",
            {"contents": [{"parts": [{"text": 1}]}]},
            400,
            "contents[0].parts[0].text",
        ),
        ("/v1beta/models/sim-small:generateContent", {"contents": []}, 400, "contents"),
        (
            "/v1beta/models/sim-small:generateContent",
            {"contents": [{"parts": [{"codeExecutionResult": {}}]}]},
            400,
            "parts[0]",
        ),
        ("/v1beta/models/sim-small:streamGenerateContent", HELLO, 400, "alt=sse"),
        ("/v1beta/models/sim-small:predict", HELLO, 404, "Unknown request URL"),
        ("/v1beta/models/embedder:embedContent", {}, 400, "content"),
        ("/v1beta/models/embedder:embedContent", {"content": {"parts": []}}, 400, "content.parts"),
        (
            "/v1beta/models/embedder:embedContent",
            {"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": "AA=="}}]}},
            400,
            "content.parts[0] must be text",
        ),
        ("/v1beta/models/embedder:batchEmbedContents", {"requests": []}, 400, "requests"),
        (
            "/v1beta/models/embedder:batchEmbedContents",
            {
                "requests": [
                    {"content": {"parts": [{"text": "a"}]}, "taskType": "RETRIEVAL_QUERY"},
                    {"content": {"parts": [{"text": "b"}]}, "taskType": "CLUSTERING"},
                ]
            },
            400,
            "requests[1].taskType",
        ),
    ],
)
async def test_bad_requests_are_4xx_in_googles_format(
    stack: Stack, path: str, body: Any, status: int, needle: str
) -> None:
    got, answer = await _post(stack, path, body, {"x-goog-api-key": stack.keys.full})
    assert got == status, answer
    err = answer["error"]
    assert err["code"] == status and err["status"] in ("INVALID_ARGUMENT", "NOT_FOUND")
    assert needle in err["message"]


@pytest.mark.parametrize("model", ["embedder", "gem-embed"])
async def test_sdk_embed_content(stack: Stack, model: str) -> None:
    """embed_content, one text and several, from an OpenAI-format and a
    Gemini-format provider; metered as /v1/embeddings is."""
    c = client(stack)
    one = await c.aio.models.embed_content(model=model, contents="hello Nexus")
    assert one.embeddings and len(one.embeddings) == 1 and one.embeddings[0].values
    texts: list[gtypes.ContentUnion] = ["first", "second", "third"]
    many = await c.aio.models.embed_content(
        model=model,
        contents=texts,
        config=gtypes.EmbedContentConfig(output_dimensionality=8, task_type="RETRIEVAL_DOCUMENT"),
    )
    assert many.embeddings and [len(e.values or []) for e in many.embeddings] == [8, 8, 8]
    # Different texts, different vectors, in the callers' order.
    assert len({tuple(e.values or []) for e in many.embeddings}) == 3
    rid = _request_id(stack, model)
    received, _, recorded, done = stack.events.of(rid)
    assert isinstance(received, RequestReceived) and received.endpoint == "batch_embed_contents"
    assert isinstance(recorded, UsageRecorded) and recorded.usage.prompt_tokens > 0 and recorded.cost_usd > 0
    assert isinstance(done, RequestCompleted) and done.status == 200
    seen = stack.sim.state.recorder.snapshot()["requests"][-1]
    assert stack.keys.full not in str(seen.headers)
    if model == "gem-embed":
        # A Gemini provider is asked the method the caller used, with its
        # own model and the caller's task type.
        assert seen.path.endswith("/models/gemini-embedding-001:batchEmbedContents")
        assert "RETRIEVAL_DOCUMENT" in str(seen.body)


@pytest.mark.parametrize("model", ["embedder", "gem-embed"])
async def test_rest_embed_content(stack: Stack, model: str) -> None:
    """A REST caller's embedContent (the key as ?key=) is answered
    {"embedding": {"values": [...]}}, batchEmbedContents {"embeddings": [...]}."""
    body = {"content": {"parts": [{"text": "hello"}]}, "output_dimensionality": 4}
    status, answer = await _post(stack, f"/v1beta/models/{model}:embedContent?key={stack.keys.full}", body)
    assert status == 200, answer
    assert set(answer) == {"embedding"} and len(answer["embedding"]["values"]) == 4
    assert _request_id(stack, model)
    received = stack.events.of(_request_id(stack, model))[0]
    assert isinstance(received, RequestReceived) and received.endpoint == "embed_content"
    batch = {"requests": [{"model": f"models/{model}", "content": {"parts": [{"text": t}]}} for t in "ab"]}
    status, answer = await _post(
        stack, f"/v1/models/{model}:batchEmbedContents", batch, {"x-goog-api-key": stack.keys.full}
    )
    assert status == 200, answer
    assert set(answer) == {"embeddings"} and len(answer["embeddings"]) == 2
    assert all(e["values"] for e in answer["embeddings"])
