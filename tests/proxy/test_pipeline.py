"""Decrypted LLM API traffic runs the gateway's pipeline (must-show 1): the
official SDKs, configured only with the proxy (HTTPS_PROXY) and the CA
(SSL_CERT_FILE), reach fake api.openai.com / api.anthropic.com TLS
upstreams (the simulated provider, through the resolve override); the
request hooks redact and block, the response hooks block (451), in the
provider's own error format; usage, cost and the gateway's events are
recorded, marked as proxy traffic."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import msgspec
import openai
import pytest

from ingress.proxy.node import ProxyNode
from nexus.sim.recorder import credential_fingerprint
from nexus.sim.server import SimServer
from nexus.sim.text import completion_words
from streams.events import RequestCompleted, RequestFailed, RequestReceived, UpstreamResult, UsageRecorded
from streams.events_compliance import StageDecision
from streams.events_proxy import ProxyConnection, ProxyRequest
from streams.publisher import Publisher
from streams.topology import Topology
from tests.proxy.conftest import Events, MakeProxy, client_context, tls_through
from tests.proxy.llm import (
    CARD,
    CLAUDE_MODEL,
    FORBIDDEN,
    LEAK,
    OPENAI_MODEL,
    answer_prompt,
    monitored,
    pipeline_config,
    projected,
    started,
    upstream_requests,
)
from tests.proxy.pki import Pki


@pytest.fixture
async def llm_proxy(
    make_proxy: MakeProxy,
    upstream: SimServer,
    proxy_ca: tuple[Path, Path],
    upstream_pki: Pki,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[ProxyNode, Events]]:
    events = Events()
    cfg = pipeline_config(proxy_ca, upstream_pki, upstream.port)
    async with started(make_proxy, cfg, proxy_ca, monkeypatch, events) as node:
        yield node, events


def _user_text(body: Any) -> str:
    return "\n".join(str(m.get("content")) for m in body["messages"] if m.get("role") == "user")


async def _settled(events: Events, kind: type[Any], n: int) -> list[Any]:
    for _ in range(200):
        found = events.of(kind)
        if len(found) >= n:
            return found
        await asyncio.sleep(0.01)
    raise AssertionError(f"expected {n} {kind.__name__}, got {len(events.of(kind))}")


async def test_openai_sdk_unary_runs_the_pipeline_with_usage_and_cost(
    llm_proxy: tuple[ProxyNode, Events], upstream: SimServer
) -> None:
    node, events = llm_proxy
    client = openai.AsyncOpenAI(api_key="sk-personal-key-1234", max_retries=0)
    try:
        raw = await client.chat.completions.with_raw_response.create(
            model=OPENAI_MODEL,
            messages=[{"role": "user", "content": answer_prompt(OPENAI_MODEL, leaks=False)}],
        )
    finally:
        await client.close()
    chat = raw.parse()
    assert chat.choices[0].message.content and chat.usage is not None and chat.usage.prompt_tokens > 0
    rid = raw.headers["x-nexus-request-id"]
    # The provider got the caller's own key, at the path the SDK used.
    (seen,) = upstream_requests(upstream)
    assert seen.path == "/v1/chat/completions" and seen.credential
    assert seen.body["model"] == OPENAI_MODEL

    (received,) = [e for e in events.of(RequestReceived) if e.request_id == rid]
    assert (received.ingress, received.endpoint, received.requested_model) == ("proxy", "chat", OPENAI_MODEL)
    i = received.interception
    assert i is not None and i.bump_status == "bumped" and i.target_host == "api.openai.com"
    assert (
        i.ai_service == "openai" and i.credential_class == "unknown" and len(i.credential_fingerprint) == 16
    )
    assert received.body is not None and received.body.inline is not None  # captured
    (usage,) = [e for e in events.of(UsageRecorded) if e.request_id == rid]
    assert usage.usage.prompt_tokens == chat.usage.prompt_tokens and usage.priced
    expected = (chat.usage.prompt_tokens * 150.0 + chat.usage.completion_tokens * 600.0) / 1e6
    assert usage.cost_usd == pytest.approx(expected)
    (done,) = [e for e in events.of(RequestCompleted) if e.request_id == rid]
    assert done.status == 200 and done.provider == "openai"
    stages = {e.stage: e.decision for e in events.of(StageDecision) if e.request_id == rid}
    assert stages == {"request": "approve", "response": "approve"}
    # A pipeline call is not a relayed request: no proxy.request for it.
    assert events.of(ProxyRequest) == []
    await node.close()
    (conn,) = await _settled(events, ProxyConnection, 1)
    assert conn.bump_status == "bumped" and conn.requests == 1 and conn.bytes_down > 0
    assert i.connection_id == conn.request_id
    assert "sk-personal" not in repr(events.items)


async def test_a_card_number_reaches_the_provider_redacted(
    llm_proxy: tuple[ProxyNode, Events], upstream: SimServer
) -> None:
    _, events = llm_proxy
    # The answer is to the redacted prompt: one that does not trip the response block.
    redacted = answer_prompt(
        OPENAI_MODEL, leaks=False, template="charge my card [REDACTED_CREDIT_CARD], take {}"
    )
    prompt = redacted.replace("[REDACTED_CREDIT_CARD]", CARD)
    client = openai.AsyncOpenAI(api_key="sk-personal-key-1234", max_retries=0)
    try:
        raw = await client.chat.completions.with_raw_response.create(
            model=OPENAI_MODEL, messages=[{"role": "user", "content": prompt}]
        )
    finally:
        await client.close()
    assert raw.status_code == 200
    (seen,) = upstream_requests(upstream)
    text = _user_text(seen.body)
    assert CARD not in text and "[REDACTED_CREDIT_CARD]" in text
    (received,) = events.of(RequestReceived)
    assert received.body is not None and received.body.redacted
    assert received.body.inline is not None and CARD.encode() not in received.body.inline


async def test_a_request_block_is_the_providers_403_and_never_reaches_it(
    llm_proxy: tuple[ProxyNode, Events], upstream: SimServer
) -> None:
    _, events = llm_proxy
    client = openai.AsyncOpenAI(api_key="sk-personal-key-1234", max_retries=0)
    try:
        with pytest.raises(openai.PermissionDeniedError) as info:
            await client.chat.completions.create(
                model=OPENAI_MODEL, messages=[{"role": "user", "content": f"status of {FORBIDDEN}?"}]
            )
    finally:
        await client.close()
    assert info.value.status_code == 403
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "content_blocked" and "codename" in body["message"]
    assert upstream_requests(upstream) == []
    (failed,) = events.of(RequestFailed)
    assert (failed.status, failed.error_code, failed.stage) == (403, "content_blocked", "hooks_request")


async def test_a_response_block_is_451_in_anthropics_format(
    llm_proxy: tuple[ProxyNode, Events], upstream: SimServer
) -> None:
    _, events = llm_proxy
    client = anthropic.AsyncAnthropic(api_key="sk-ant-personal", max_retries=0)
    try:
        with pytest.raises(anthropic.APIStatusError) as info:
            await client.messages.create(
                model=CLAUDE_MODEL,
                max_tokens=256,
                messages=[{"role": "user", "content": answer_prompt(CLAUDE_MODEL, leaks=True)}],
            )
    finally:
        await client.close()
    assert info.value.status_code == 451
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert "leaked-word" in body["error"]["message"]
    assert len(upstream_requests(upstream)) == 1  # the provider answered; the caller never saw it
    (failed,) = events.of(RequestFailed)
    assert (failed.status, failed.stage) == (451, "hooks_response")
    (usage,) = events.of(UsageRecorded)  # billed by the provider all the same
    assert usage.usage.prompt_tokens > 0 and usage.cost_usd > 0
    (up,) = events.of(UpstreamResult)
    assert up.status == 200


async def test_streams_through_the_guard_in_both_sdks(
    llm_proxy: tuple[ProxyNode, Events], upstream: SimServer
) -> None:
    _, events = llm_proxy
    oai = openai.AsyncOpenAI(api_key="sk-personal-key-1234", max_retries=0)
    ant = anthropic.AsyncAnthropic(api_key="sk-ant-personal", max_retries=0)
    try:
        prompt = answer_prompt(OPENAI_MODEL, leaks=False)
        stream = await oai.chat.completions.create(
            model=OPENAI_MODEL, messages=[{"role": "user", "content": prompt}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == " ".join(completion_words(OPENAI_MODEL, prompt))
        prompt = answer_prompt(CLAUDE_MODEL, leaks=False)
        async with ant.messages.stream(
            model=CLAUDE_MODEL, max_tokens=256, messages=[{"role": "user", "content": prompt}]
        ) as s:
            text = "".join([t async for t in s.text_stream])
        assert text.strip()
        # A leak mid-stream: the guard cuts it with an error in OpenAI's stream format.
        stream = await oai.chat.completions.create(
            model=OPENAI_MODEL,
            messages=[{"role": "user", "content": answer_prompt(OPENAI_MODEL, leaks=True)}],
            stream=True,
        )
        seen = ""
        with pytest.raises(openai.APIError) as info:
            async for c in stream:
                seen += (c.choices[0].delta.content or "") if c.choices else ""
        assert "leaked-word" in str(info.value.message) and LEAK not in seen
    finally:
        await oai.close()
        await ant.close()
    received = events.of(RequestReceived)
    assert [(r.endpoint, r.stream) for r in received] == [("chat", True), ("messages", True), ("chat", True)]
    usage = await _settled(events, UsageRecorded, 3)
    # Billed, the cut stream included (its prompt at least: the pump's estimate).
    assert all(u.usage.prompt_tokens > 0 and u.cost_usd > 0 and u.priced for u in usage)
    assert all(u.usage.completion_tokens > 0 for u in usage[:2])
    modes = [e for e in events.of(StageDecision) if e.stage == "response"]
    assert [e.decision for e in modes] == ["approve", "approve", "block"]


TRAFFIC = """
SELECT endpoint, stream, status, bump_status, target_host, ai_service, credential_class,
       length(credential_fingerprint) AS fp, connection_id IS NOT NULL AS on_connection,
       prompt_tokens > 0 AS prompt, completion_tokens > 0 AS completion, cost_usd > 0 AS cost,
       provider, requested_model, request_hook_decision, response_hook_decision
FROM traffic_event WHERE ingress = 'proxy' AND endpoint <> 'connect'
ORDER BY received_at
"""


@pytest.mark.integration
async def test_traffic_event_rows_are_proxy_traffic_with_tokens_and_cost(
    make_proxy: MakeProxy,
    upstream: SimServer,
    proxy_ca: tuple[Path, Path],
    upstream_pki: Pki,
    monkeypatch: pytest.MonkeyPatch,
    publisher: Publisher,
    nats_url: str,
    pg_dsn: str,
    topology: Topology,
    tmp_path: Path,
) -> None:
    """The real path: the proxy's events on JetStream, the projector folding
    them into Postgres."""
    async with started(
        make_proxy, pipeline_config(proxy_ca, upstream_pki, upstream.port), proxy_ca, monkeypatch, publisher
    ):
        oai = openai.AsyncOpenAI(api_key="sk-personal-key-1234", max_retries=0)
        ant = anthropic.AsyncAnthropic(api_key="sk-ant-personal", max_retries=0)
        try:
            await oai.chat.completions.create(
                model=OPENAI_MODEL,
                messages=[{"role": "user", "content": answer_prompt(OPENAI_MODEL, leaks=False)}],
            )
            stream = await oai.chat.completions.create(
                model=OPENAI_MODEL,
                messages=[{"role": "user", "content": answer_prompt(OPENAI_MODEL, leaks=False)}],
                stream=True,
            )
            async for _ in stream:
                pass
            await ant.messages.create(
                model=CLAUDE_MODEL,
                max_tokens=256,
                messages=[{"role": "user", "content": answer_prompt(CLAUDE_MODEL, leaks=False)}],
            )
            with pytest.raises(openai.PermissionDeniedError):
                await oai.chat.completions.create(
                    model=OPENAI_MODEL, messages=[{"role": "user", "content": f"about {FORBIDDEN}"}]
                )
        finally:
            await oai.close()
            await ant.close()
    await publisher.flush()
    common = ("bumped", "api.openai.com", "openai", "unknown", 16, True)
    expected = [
        ("chat", False, 200, *common, True, True, True, "openai", OPENAI_MODEL, "approve", "approve"),
        ("chat", True, 200, *common, True, True, True, "openai", OPENAI_MODEL, "approve", "approve"),
        (
            "messages",
            False,
            200,
            "bumped",
            "api.anthropic.com",
            "anthropic",
            "unknown",
            16,
            True,
            True,
            True,
            True,
            "anthropic",
            CLAUDE_MODEL,
            "approve",
            "approve",
        ),
        ("chat", False, 403, *common, None, None, None, "openai", OPENAI_MODEL, "block", None),
    ]
    rows = await projected(
        nats_url=nats_url,
        pg_dsn=pg_dsn,
        topology=topology,
        tmp_path=tmp_path,
        query=TRAFFIC,
        expected=expected,
    )
    assert rows == expected


async def test_monitor_mode_changes_nothing_and_is_recorded(
    make_proxy: MakeProxy,
    upstream: SimServer,
    proxy_ca: tuple[Path, Path],
    upstream_pki: Pki,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every hook in monitor mode: the card reaches the provider as sent, the
    codename is not blocked, the leaking answer is the provider's own; each
    verdict is recorded as what would have happened."""
    cfg = monitored(pipeline_config(proxy_ca, upstream_pki, upstream.port))
    events = Events()
    async with started(make_proxy, cfg, proxy_ca, monkeypatch, events):
        leaky = answer_prompt(OPENAI_MODEL, leaks=True)
        prompts = [f"charge my card {CARD} for {FORBIDDEN}", leaky]
        client = openai.AsyncOpenAI(api_key="sk-personal-key-1234", max_retries=0)
        try:
            answers = [
                await client.chat.completions.create(
                    model=OPENAI_MODEL, messages=[{"role": "user", "content": p}]
                )
                for p in prompts
            ]
            stream = await client.chat.completions.create(
                model=OPENAI_MODEL, messages=[{"role": "user", "content": leaky}], stream=True
            )
            streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        finally:
            await client.close()
    sent = [_user_text(r.body) for r in upstream_requests(upstream)]
    assert sent == [*prompts, leaky]  # as the caller wrote them
    assert answers[1].choices[0].message.content == " ".join(completion_words(OPENAI_MODEL, leaky))
    assert streamed == answers[1].choices[0].message.content
    assert [e.status for e in events.of(RequestCompleted)] == [200, 200, 200]
    stages = [(e.stage, e.decision, e.monitored_decision) for e in events.of(StageDecision)]
    assert ("request", "approve", "block") in stages  # the codename: would have blocked
    assert stages.count(("response", "approve", "block")) == 2  # the leak, unary and streamed


async def test_an_invalid_upstream_certificate_is_a_502_naming_the_reason_to_the_sdk(
    make_proxy: MakeProxy,
    expired_upstream: SimServer,
    proxy_ca: tuple[Path, Path],
    upstream_pki: Pki,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = pipeline_config(proxy_ca, upstream_pki, expired_upstream.port)
    events = Events()
    node = await make_proxy(config=cfg, events=events)
    monkeypatch.setenv("HTTPS_PROXY", f"http://{node.host}:{node.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(proxy_ca[0]))
    client = openai.AsyncOpenAI(api_key="sk-personal-key-1234", max_retries=0)
    try:
        with pytest.raises(openai.InternalServerError) as info:
            await client.chat.completions.create(
                model=OPENAI_MODEL, messages=[{"role": "user", "content": "hi"}]
            )
    finally:
        await client.close()
    assert info.value.status_code == 502 and "certificate has expired" in info.value.message
    assert upstream_requests(expired_upstream) == []  # never a silent downgrade
    await node.close()
    (conn,) = await _settled(events, ProxyConnection, 1)
    assert conn.bump_status == "upstream_cert_error" and "expired" in conn.reason


async def test_responses_and_embeddings_through_the_pipeline(
    llm_proxy: tuple[ProxyNode, Events], upstream: SimServer
) -> None:
    """The other OpenAI endpoints the adapter recognises: the Responses API
    (native: the caller's body to the provider's own /v1/responses, the
    response hooks on its output) and embeddings."""
    _, events = llm_proxy
    client = openai.AsyncOpenAI(api_key="sk-personal-key-1234", max_retries=0)
    try:
        resp = await client.responses.create(
            model=OPENAI_MODEL, input=answer_prompt(OPENAI_MODEL, leaks=False)
        )
        assert resp.output_text
        with pytest.raises(openai.APIStatusError) as info:
            await client.responses.create(model=OPENAI_MODEL, input=answer_prompt(OPENAI_MODEL, leaks=True))
        assert info.value.status_code == 451
        emb = await client.embeddings.create(model="text-embedding-3-small", input="hello")
        assert len(emb.data[0].embedding) > 0
    finally:
        await client.close()
    assert [s.path for s in upstream_requests(upstream)] == [
        "/v1/responses",
        "/v1/responses",
        "/v1/embeddings",
    ]
    received = events.of(RequestReceived)
    assert [(r.endpoint, r.ingress) for r in received] == [
        ("responses", "proxy"),
        ("responses", "proxy"),
        ("embeddings", "proxy"),
    ]
    assert [e.status for e in events.of(RequestFailed)] == [451]


async def test_anthropic_count_tokens_passes_the_request_hooks(
    llm_proxy: tuple[ProxyNode, Events], upstream: SimServer
) -> None:
    """A count sends the prompt to the provider: it runs the pipeline like
    a Messages call (the request hooks block it in Anthropic's format and it
    never leaves; a clean one is counted by the provider, with the caller's
    key), billing nothing."""
    _, events = llm_proxy
    client = anthropic.AsyncAnthropic(api_key="sk-ant-personal", max_retries=0)
    try:
        counted = await client.messages.count_tokens(
            model=CLAUDE_MODEL, messages=[{"role": "user", "content": "how long is this prompt?"}]
        )
        assert counted.input_tokens > 0
        with pytest.raises(anthropic.PermissionDeniedError) as info:
            await client.messages.count_tokens(
                model=CLAUDE_MODEL, messages=[{"role": "user", "content": f"count {FORBIDDEN}"}]
            )
    finally:
        await client.close()
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "error" and "codename" in body["error"]["message"]
    (seen,) = upstream_requests(upstream)  # the blocked one never reached the provider
    assert seen.path == "/v1/messages/count_tokens"
    assert seen.credential == credential_fingerprint("sk-ant-personal")  # the caller's own key
    received = events.of(RequestReceived)
    assert [(r.endpoint, r.ingress) for r in received] == [("count_tokens", "proxy")] * 2
    (failed,) = events.of(RequestFailed)
    assert (failed.status, failed.stage) == (403, "hooks_request")
    assert events.of(UsageRecorded) == []
    assert events.of(ProxyRequest) == []  # not relayed outside the pipeline


async def test_a_client_that_hangs_up_cuts_the_call_and_is_a_499(
    llm_proxy: tuple[ProxyNode, Events], upstream: SimServer, proxy_ca: tuple[Path, Path]
) -> None:
    node, events = llm_proxy
    reader, writer = await tls_through(node, "api.openai.com", client_context(proxy_ca[0]))
    body = msgspec.json.encode(
        {"model": OPENAI_MODEL, "messages": [{"role": "user", "content": "a question never answered"}]}
    )
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nAuthorization: Bearer sk-own\r\n"
        b"x-sim-hang: 1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    await writer.drain()
    await asyncio.sleep(0.3)  # the provider is working on it
    writer.close()
    (failed,) = await _settled(events, RequestFailed, 1)
    assert (failed.status, failed.error_code) == (499, "client_closed")
    (usage,) = events.of(UsageRecorded)  # the prompt the provider was working on, estimated
    assert usage.estimated and usage.usage.prompt_tokens > 0
    del reader


@pytest.mark.integration
async def test_a_large_body_is_spilled_with_a_reference(
    make_proxy: MakeProxy,
    upstream: SimServer,
    proxy_ca: tuple[Path, Path],
    upstream_pki: Pki,
    monkeypatch: pytest.MonkeyPatch,
    nats_url: str,
    topology: Topology,
) -> None:
    """Body capture as at the gateway: over the events' inline limit, the
    body goes to the spill store and the event carries its reference."""
    from ingress.proxy.service import open_spill

    spill, nc = await open_spill(nats_url, topology, "px-1")
    assert spill is not None and nc is not None
    try:
        cfg = pipeline_config(proxy_ca, upstream_pki, upstream.port)
        events = Events()
        node = await make_proxy(config=cfg, events=events, spill=spill)
        monkeypatch.setenv("HTTPS_PROXY", f"http://{node.host}:{node.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.setenv("SSL_CERT_FILE", str(proxy_ca[0]))
        client = openai.AsyncOpenAI(api_key="sk-personal-key-1234", max_retries=0)
        try:
            await client.chat.completions.create(
                model=OPENAI_MODEL, messages=[{"role": "user", "content": "y" * 300_000}]
            )
        finally:
            await client.close()
        await node.close()  # waits for the background spill
        (received,) = events.of(RequestReceived)
        assert received.body is not None and received.body.inline is None and received.body.ref is not None
        data = await spill.get(received.body.ref)
        assert len(data) == received.body.size > 300_000 and b"y" * 1000 in data
    finally:
        js = nc.jetstream()
        with contextlib.suppress(Exception):
            await js.delete_object_store(topology.spill_bucket)
        await nc.close()
