"""The demo `nexus up` serves, on every endpoint, with the official SDKs: the
demo config (nexus/demo/config.yaml) as shipped, its hooks and quotas, in
front of the simulated provider started as `nexus up` starts it (no
credential configured).  Only the sim's address differs (a free port, not
3051); tests/e2e/test_up.py runs the real `nexus up`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import anthropic
import msgspec
import openai
import pytest
import valkey.asyncio as avalkey

from ingress.gateway import GatewayServer, create_app, start_gateway
from nexus.sim import SimServer, start_sim
from nexus.up import DEMO_KEY, demo_config_path
from streams.config_snapshot import resolve_secret
from streams.config_validation import parse_config
from tests.gateway.conftest import EventRecorder
from tests.inprocess import in_process_snapshot

pytestmark = pytest.mark.integration

MESSAGES: list[Any] = [{"role": "user", "content": "Hello, Nexus!"}]


@dataclass
class Demo:
    gateway: GatewayServer
    sim: SimServer

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def root(self) -> str:
        return self.gateway.url.removesuffix("/v1")

    def openai(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.url, api_key=DEMO_KEY, max_retries=0)

    def anthropic(self) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(base_url=self.root, api_key=DEMO_KEY, max_retries=0)


@pytest.fixture
async def demo(valkey_url: str, valkey_prefix: str) -> AsyncIterator[Demo]:
    sim = await start_sim(host="127.0.0.1", port=0)  # as nexus up starts it, but for the port
    doc = msgspec.yaml.decode(demo_config_path().read_bytes())
    for provider in doc["providers"]:
        provider["base_url"] = sim.url
    config = parse_config(msgspec.yaml.encode(doc))
    client = avalkey.from_url(valkey_url)  # type: ignore[no-untyped-call]
    app = create_app(
        in_process_snapshot(config, resolve_secret(config, {})),
        EventRecorder(),
        env={},
        valkey=client,
        valkey_prefix=valkey_prefix,
    )
    gateway = await start_gateway(app)
    try:
        yield Demo(gateway, sim)
    finally:
        await gateway.close()
        await sim.close()
        await client.aclose()


async def test_chat_unary_and_streamed(demo: Demo) -> None:
    async with demo.openai() as client:
        answer = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert answer.choices[0].message.content and answer.model == "gpt-4o-mini"
        stream = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text


async def test_responses_native_unary_streamed_and_stored(demo: Demo) -> None:
    async with demo.openai() as client:
        answer = await client.responses.create(model="gpt-4o-mini", input="Hello, Nexus!")
        assert answer.output_text and answer.model == "gpt-4o-mini"
        # Stored state needs the provider's own Responses API (the demo's
        # misleading 502 was there: the sim wanted a credential).
        stored = await client.responses.create(model="gpt-4o-mini", input="Hello again", store=True)
        assert stored.output_text and stored.model == "gpt-4o-mini"
        assert demo.sim.state.recorder.snapshot()["requests"][-1].path == "/v1/responses"
        events = [
            e.type async for e in await client.responses.create(model="gpt-4o", input="hi", stream=True)
        ]
        assert events[0] == "response.created" and events[-1] == "response.completed"


async def test_messages_unary_and_streamed(demo: Demo) -> None:
    async with demo.anthropic() as client:
        msg = await client.messages.create(model="gpt-4o-mini", max_tokens=64, messages=MESSAGES)
        assert msg.content and msg.content[0].type == "text" and msg.model == "gpt-4o-mini"
        async with client.messages.stream(model="gpt-4o-mini", max_tokens=64, messages=MESSAGES) as stream:
            assert await stream.get_final_text()


async def test_embeddings_models_usage_and_the_router(demo: Demo) -> None:
    async with demo.openai() as client:
        emb = await client.embeddings.create(model="text-embedding-3-small", input=["one", "two"])
        assert len(emb.data) == 2 and emb.model == "text-embedding-3-small"
        listed = {m.id async for m in client.models.list()}
        assert {"gpt-4o-mini", "gpt-4o", "text-embedding-3-small"} <= listed
        routed = await client.chat.completions.create(model="auto", messages=MESSAGES)
        assert routed.choices[0].message.content and routed.model == "auto"
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{demo.url}/usage", headers={"Authorization": f"Bearer {DEMO_KEY}"}) as r,
    ):
        usage = await r.json()
    assert r.status == 200 and usage["key_id"] == "demo-key"
    assert {lim["id"] for lim in usage["limits"]} >= {"key-daily-soft", "key-daily-hard", "key-rpm.rpm"}
