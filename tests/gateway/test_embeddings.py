"""``/v1/embeddings`` through the gateway with the official SDK."""

from __future__ import annotations

import aiohttp
import openai
import pytest

from streams.events import RequestReceived, UsageRecorded
from tests.gateway.conftest import Stack


async def test_sdk_embeddings_are_forwarded_and_accounted(stack: Stack) -> None:
    async with openai.AsyncOpenAI(base_url=stack.url, api_key=stack.keys.full, max_retries=0) as c:
        raw = await c.embeddings.with_raw_response.create(
            model="embedder", input=["hello", "world"], dimensions=8
        )
    resp = raw.parse()
    assert len(resp.data) == 2 and len(resp.data[0].embedding) == 8
    assert raw.headers["x-nexus-routed-model"] == "sim-embed"
    forwarded = stack.sim.state.recorder.snapshot()["requests"][0]
    assert forwarded.path == "/v1/embeddings" and forwarded.body["model"] == "sim-embed"
    request_id = raw.headers["x-nexus-request-id"]
    assert stack.events.types(request_id) == [
        "RequestReceived",
        "UpstreamResult",
        "UsageRecorded",
        "RequestCompleted",
    ]
    received, usage = stack.events.of(request_id)[0], stack.events.of(request_id)[2]
    assert isinstance(received, RequestReceived) and received.endpoint == "embeddings"
    assert isinstance(usage, UsageRecorded) and not usage.estimated
    assert usage.usage.prompt_tokens == resp.usage.prompt_tokens == 4
    assert usage.cost_usd == pytest.approx(4 * 0.5 / 1e6)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        pytest.param({"model": "sim-small", "input": "x"}, 404, "model_not_found", id="chat_model->404"),
        pytest.param({"model": "embedder"}, 400, "invalid_request", id="missing_input->400"),
        pytest.param({"model": "embedder", "input": ""}, 400, "invalid_request", id="empty_input->400"),
        pytest.param(
            {"model": "embedder", "input": "x", "stream": True}, 400, "invalid_request", id="stream->400"
        ),
        pytest.param({"input": "x"}, 400, "missing_model", id="missing_model->400"),
    ],
)
async def test_bad_embedding_requests(stack: Stack, body: dict, status: int, code: str) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{stack.url}/embeddings", json=body, headers={"Authorization": f"Bearer {stack.keys.full}"}
        ) as r,
    ):
        err = await r.json()
        assert r.status == status and err["error"]["code"] == code and "x-nexus-request-id" in r.headers
