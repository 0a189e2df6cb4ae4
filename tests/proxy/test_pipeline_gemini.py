"""Decrypted Gemini API calls run the gateway's pipeline too: the official
google-genai SDK, configured only with the proxy (HTTPS_PROXY) and the CA
(SSL_CERT_FILE), reaches a fake generativelanguage.googleapis.com (the
simulated provider, through the resolve override) with the caller's own
key; a card number is redacted before Google sees it, a blocked prompt
never reaches it, a leaking answer is withheld (451), all in Google's error
format; usage, cost and the gateway's events are recorded as proxy
traffic, and the projector's traffic_event rows carry the tokens.
Embeddings (embedContent, batchEmbedContents) are screened the same way,
and a key in the URL (``?key=``) is fingerprinted like a header key."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as gtypes

from ingress.proxy.node import ProxyNode
from nexus.sim.recorder import credential_fingerprint
from nexus.sim.server import SimServer
from streams.config import NexusConfig
from streams.events import RequestCompleted, RequestFailed, RequestReceived, UsageRecorded
from streams.events_compliance import StageDecision
from streams.events_proxy import ProxyRequest
from streams.publisher import Publisher
from streams.topology import Topology
from tests.proxy.conftest import Events, MakeProxy
from tests.proxy.llm import (
    CARD,
    FORBIDDEN,
    LEAK,
    answer_prompt,
    pipeline_config,
    projected,
    started,
    upstream_requests,
)
from tests.proxy.pki import Pki

GEMINI_MODEL = "gemini-2.5-flash"
EMBED_MODEL = "gemini-embedding-001"
HOST = "generativelanguage.googleapis.com"
CALLER_KEY = "AIza-personal-key-0001"
T = TypeVar("T")


def gemini_config(proxy_ca: tuple[Path, Path], upstream_pki: Pki, port: int) -> NexusConfig:
    raw: dict[str, Any] = msgspec.to_builtins(pipeline_config(proxy_ca, upstream_pki, port))
    raw["proxy"]["interception"] = [*raw["proxy"]["interception"], {"host": HOST, "adapter": "gemini"}]
    raw["providers"] = [
        *raw["providers"],
        {"name": "corp-gemini", "kind": "gemini", "base_url": f"https://{HOST}"},
    ]
    raw["models"] = [
        *raw["models"],
        {"name": GEMINI_MODEL, "provider": "corp-gemini", "price": {"input": 100.0, "output": 400.0}},
        {"name": EMBED_MODEL, "provider": "corp-gemini", "kind": "embedding", "price": {"input": 100.0}},
    ]
    return msgspec.convert(raw, NexusConfig)


@pytest.fixture
async def gemini_proxy(
    make_proxy: MakeProxy,
    upstream: SimServer,
    proxy_ca: tuple[Path, Path],
    upstream_pki: Pki,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[ProxyNode, Events]]:
    events = Events()
    cfg = gemini_config(proxy_ca, upstream_pki, upstream.port)
    async with started(make_proxy, cfg, proxy_ca, monkeypatch, events) as node:
        yield node, events


async def sdk(call: Callable[[genai.Client], T]) -> T:
    """A call of the SDK's sync client (httpx: it follows HTTPS_PROXY and
    SSL_CERT_FILE), off the loop the proxy runs on."""

    def run() -> T:
        client = genai.Client(api_key=CALLER_KEY)
        try:
            return call(client)
        finally:
            client.close()

    return await asyncio.to_thread(run)


async def test_sdk_unary_call_is_screened_redacted_and_recorded(
    gemini_proxy: tuple[ProxyNode, Events], upstream: SimServer
) -> None:
    _, events = gemini_proxy
    redacted = answer_prompt(
        GEMINI_MODEL, leaks=False, template="charge my card [REDACTED_CREDIT_CARD], take {}"
    )
    prompt = redacted.replace("[REDACTED_CREDIT_CARD]", CARD)
    resp = await sdk(lambda c: c.models.generate_content(model=GEMINI_MODEL, contents=prompt))
    assert resp.text and resp.model_version == GEMINI_MODEL
    assert resp.usage_metadata is not None and resp.usage_metadata.prompt_token_count
    # Google got the redacted prompt, with the caller's own key, at its own path.
    (seen,) = upstream_requests(upstream)
    assert seen.path.endswith(f"/models/{GEMINI_MODEL}:generateContent")  # the version the SDK chose
    assert seen.credential == credential_fingerprint(CALLER_KEY)
    sent = msgspec.json.encode(seen.body).decode()
    assert CARD not in sent and "[REDACTED_CREDIT_CARD]" in sent

    (received,) = events.of(RequestReceived)
    assert (received.ingress, received.endpoint, received.requested_model) == (
        "proxy",
        "generate_content",
        GEMINI_MODEL,
    )
    i = received.interception
    assert i is not None and i.bump_status == "bumped" and i.target_host == HOST
    assert received.body is not None and received.body.redacted
    assert received.body.inline is not None and CARD.encode() not in received.body.inline
    (usage,) = events.of(UsageRecorded)
    assert usage.usage.prompt_tokens == resp.usage_metadata.prompt_token_count and usage.priced
    (done,) = events.of(RequestCompleted)
    assert done.status == 200 and done.provider == "gemini"
    stages = {e.stage: e.decision for e in events.of(StageDecision)}
    assert stages == {"request": "redact", "response": "approve"}
    assert events.of(ProxyRequest) == []  # run by the pipeline, not relayed
    assert CALLER_KEY not in repr(events.items)


async def test_a_blocked_prompt_is_googles_403_and_never_reaches_it(
    gemini_proxy: tuple[ProxyNode, Events], upstream: SimServer
) -> None:
    _, events = gemini_proxy
    with pytest.raises(genai_errors.ClientError) as info:
        await sdk(lambda c: c.models.generate_content(model=GEMINI_MODEL, contents=f"status of {FORBIDDEN}?"))
    assert info.value.code == 403 and info.value.status == "PERMISSION_DENIED"
    assert "codename" in (info.value.message or "")
    assert upstream_requests(upstream) == []
    (failed,) = events.of(RequestFailed)
    assert (failed.status, failed.error_code, failed.stage) == (403, "content_blocked", "hooks_request")


async def test_a_leaking_answer_is_withheld_451_and_a_stream_is_cut(
    gemini_proxy: tuple[ProxyNode, Events], upstream: SimServer
) -> None:
    _, events = gemini_proxy
    leaky = answer_prompt(GEMINI_MODEL, leaks=True)
    with pytest.raises(genai_errors.APIError) as info:
        await sdk(lambda c: c.models.generate_content(model=GEMINI_MODEL, contents=leaky))
    assert info.value.code == 451 and "leaked-word" in (info.value.message or "")

    def stream(c: genai.Client) -> tuple[str, BaseException | None]:
        text = ""
        try:
            for chunk in c.models.generate_content_stream(model=GEMINI_MODEL, contents=leaky):
                text += chunk.text or ""
        except genai_errors.APIError as exc:
            return text, exc
        return text, None

    text, err = await sdk(stream)
    assert LEAK not in text.split()
    assert err is not None and "leaked-word" in str(err)
    clean = answer_prompt(GEMINI_MODEL, leaks=False)
    pieces = await sdk(
        lambda c: [
            ch.text or "" for ch in c.models.generate_content_stream(model=GEMINI_MODEL, contents=clean)
        ]
    )
    assert "".join(pieces).strip()
    received = events.of(RequestReceived)
    assert [(r.endpoint, r.stream) for r in received] == [
        ("generate_content", False),
        ("stream_generate_content", True),
        ("stream_generate_content", True),
    ]
    assert all(u.usage.prompt_tokens > 0 and u.priced for u in events.of(UsageRecorded))


async def test_count_tokens_and_a_key_in_the_url(
    gemini_proxy: tuple[ProxyNode, Events], upstream: SimServer, proxy_ca: tuple[Path, Path]
) -> None:
    node, events = gemini_proxy
    counted = await sdk(lambda c: c.models.count_tokens(model=GEMINI_MODEL, contents=f"card {CARD}"))
    assert counted.total_tokens and counted.total_tokens > 0
    (seen,) = upstream_requests(upstream)
    assert seen.path.endswith(f"/models/{GEMINI_MODEL}:countTokens") and CARD not in str(seen.body)
    assert "UsageRecorded" not in {type(e).__name__ for e in events.items}  # a count bills nothing

    # REST callers put the key in the URL: it reaches Google as x-goog-api-key.
    ctx = ssl.create_default_context(cafile=str(proxy_ca[0]))

    def post() -> httpx.Response:
        with httpx.Client(proxy=f"http://{node.host}:{node.port}", verify=ctx, trust_env=False) as h:
            return h.post(
                f"https://{HOST}/v1beta/models/{GEMINI_MODEL}:generateContent?key={CALLER_KEY}",
                json={"contents": [{"parts": [{"text": "hello"}]}]},
            )

    r = await asyncio.to_thread(post)
    assert r.status_code == 200, r.text
    assert upstream_requests(upstream)[-1].credential == credential_fingerprint(CALLER_KEY)
    # A stream Google would send as a JSON array: refused, not relayed unscreened.

    def bare_stream() -> httpx.Response:
        with httpx.Client(proxy=f"http://{node.host}:{node.port}", verify=ctx, trust_env=False) as h:
            return h.post(
                f"https://{HOST}/v1beta/models/{GEMINI_MODEL}:streamGenerateContent",
                json={"contents": [{"parts": [{"text": "hello"}]}]},
                headers={"x-goog-api-key": CALLER_KEY},
            )

    r = await asyncio.to_thread(bare_stream)
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert "alt=sse" in r.json()["error"]["message"] and len(upstream_requests(upstream)) == 2


def _texts(*texts: str) -> list[gtypes.ContentUnion]:
    return list(texts)


def _rest(node: ProxyNode, proxy_ca: tuple[Path, Path], path: str, body: Any) -> httpx.Response:
    """A REST caller's POST to Google through the proxy, the key in the URL."""
    ctx = ssl.create_default_context(cafile=str(proxy_ca[0]))
    with httpx.Client(proxy=f"http://{node.host}:{node.port}", verify=ctx, trust_env=False) as h:
        return h.post(f"https://{HOST}{path}?key={CALLER_KEY}", json=body)


async def test_embeddings_are_screened_redacted_and_recorded(
    gemini_proxy: tuple[ProxyNode, Events], upstream: SimServer, proxy_ca: tuple[Path, Path]
) -> None:
    node, events = gemini_proxy
    resp = await sdk(
        lambda c: c.models.embed_content(
            model=EMBED_MODEL, contents=_texts("hello", f"charge my card {CARD}")
        )
    )
    assert resp.embeddings and len(resp.embeddings) == 2 and all(e.values for e in resp.embeddings)
    # Google got the redacted texts, with the caller's own key, at the
    # method the SDK called.
    (seen,) = upstream_requests(upstream)
    assert seen.path.endswith(f"/models/{EMBED_MODEL}:batchEmbedContents")
    assert seen.credential == credential_fingerprint(CALLER_KEY)
    sent = msgspec.json.encode(seen.body).decode()
    assert CARD not in sent and "[REDACTED_CREDIT_CARD]" in sent and "hello" in sent
    (received,) = events.of(RequestReceived)
    assert (received.ingress, received.endpoint, received.requested_model) == (
        "proxy",
        "batch_embed_contents",
        EMBED_MODEL,
    )
    i = received.interception
    assert i is not None and i.target_host == HOST and i.credential_class == "unknown"
    header_fp = i.credential_fingerprint
    assert header_fp and received.body is not None and received.body.redacted
    (usage,) = events.of(UsageRecorded)
    assert usage.usage.prompt_tokens > 0 and usage.priced and usage.cost_usd > 0
    (done,) = events.of(RequestCompleted)
    assert done.status == 200 and done.provider == "gemini"
    assert {e.stage: e.decision for e in events.of(StageDecision)}["request"] == "redact"
    assert events.of(ProxyRequest) == []  # run by the pipeline, not relayed

    # A blocked word: Google's 403, and Google never sees it.
    with pytest.raises(genai_errors.ClientError) as info:
        await sdk(lambda c: c.models.embed_content(model=EMBED_MODEL, contents=f"status of {FORBIDDEN}?"))
    assert info.value.code == 403 and info.value.status == "PERMISSION_DENIED"
    assert len(upstream_requests(upstream)) == 1
    (failed,) = events.of(RequestFailed)
    assert (failed.status, failed.error_code, failed.stage) == (403, "content_blocked", "hooks_request")

    # A REST embedContent with ?key=: screened, answered in its own shape,
    # and its key fingerprinted as the same credential as the header's.
    r = await asyncio.to_thread(
        _rest,
        node,
        proxy_ca,
        f"/v1beta/models/{EMBED_MODEL}:embedContent",
        {"content": {"parts": [{"text": f"card {CARD}"}]}, "taskType": "RETRIEVAL_QUERY"},
    )
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"embedding"} and r.json()["embedding"]["values"]
    seen = upstream_requests(upstream)[-1]
    assert seen.path.endswith(f"/models/{EMBED_MODEL}:embedContent") and CARD not in str(seen.body)
    assert seen.credential == credential_fingerprint(CALLER_KEY)
    last = events.of(RequestReceived)[-1]
    assert last.endpoint == "embed_content" and last.interception is not None
    assert (last.interception.credential_fingerprint, last.interception.credential_class) == (
        header_fp,
        "unknown",
    )
    assert CALLER_KEY not in repr(events.items)


async def test_a_key_in_the_url_of_a_relayed_call_is_fingerprinted(
    gemini_proxy: tuple[ProxyNode, Events], upstream: SimServer, proxy_ca: tuple[Path, Path]
) -> None:
    """What the proxy still relays (here: a model listing) carries the
    credential of a ?key= in its ProxyRequest, as a header key would."""
    node, events = gemini_proxy

    def get() -> httpx.Response:
        ctx = ssl.create_default_context(cafile=str(proxy_ca[0]))
        with httpx.Client(proxy=f"http://{node.host}:{node.port}", verify=ctx, trust_env=False) as h:
            return h.get(f"https://{HOST}/v1beta/models?key={CALLER_KEY}")

    await asyncio.to_thread(get)
    (relayed,) = events.of(ProxyRequest)
    assert relayed.credential_fingerprint and relayed.credential_class == "unknown"
    assert CALLER_KEY not in repr(events.items)


TRAFFIC = """
SELECT endpoint, stream, status, target_host, prompt_tokens > 0, completion_tokens > 0, cost_usd > 0,
       provider, requested_model, request_hook_decision
FROM traffic_event WHERE ingress = 'proxy' AND endpoint <> 'connect'
ORDER BY received_at
"""


@pytest.mark.integration
async def test_traffic_event_rows_of_gemini_calls(
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
    cfg = gemini_config(proxy_ca, upstream_pki, upstream.port)
    async with started(make_proxy, cfg, proxy_ca, monkeypatch, publisher):
        await sdk(
            lambda c: c.models.generate_content(
                model=GEMINI_MODEL, contents=answer_prompt(GEMINI_MODEL, leaks=False)
            )
        )
        await sdk(
            lambda c: list(
                c.models.generate_content_stream(
                    model=GEMINI_MODEL, contents=answer_prompt(GEMINI_MODEL, leaks=False)
                )
            )
        )
        with pytest.raises(genai_errors.ClientError):
            await sdk(lambda c: c.models.generate_content(model=GEMINI_MODEL, contents=f"about {FORBIDDEN}"))
        await sdk(lambda c: c.models.embed_content(model=EMBED_MODEL, contents=_texts("one", "two")))
    await publisher.flush()
    expected = [
        ("generate_content", False, 200, HOST, True, True, True, "gemini", GEMINI_MODEL, "approve"),
        ("stream_generate_content", True, 200, HOST, True, True, True, "gemini", GEMINI_MODEL, "approve"),
        ("generate_content", False, 403, HOST, None, None, None, "gemini", GEMINI_MODEL, "block"),
        ("batch_embed_contents", False, 200, HOST, True, False, True, "gemini", EMBED_MODEL, "approve"),
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
