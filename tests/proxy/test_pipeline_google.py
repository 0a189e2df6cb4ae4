"""What the proxy relayed unscreened before (issue 16) runs the pipeline
too: Vertex AI's generateContent / streamGenerateContent / countTokens
(the google-genai SDK in Vertex mode, an OAuth access token of the
caller's own), a tuned model's calls, and Gemini cached contents (a prompt
stored at Google that later calls use by name) on either API.  The SDK is
configured only with the proxy (HTTPS_PROXY) and the CA (SSL_CERT_FILE)
and reaches the simulated provider as the real hosts.  Each: a card number
redacted before Google sees it, a blocked prompt answered in Google's
error format and never sent, a part the hooks cannot read refused with a
400 and never sent, the caller's token only as a fingerprint, and
traffic_event rows marked as proxy traffic."""

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
from google.oauth2.credentials import Credentials

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
    answer_prompt,
    monitored,
    projected,
    started,
    upstream_requests,
)
from tests.proxy.pki import Pki
from tests.proxy.test_pipeline_gemini import CALLER_KEY, GEMINI_MODEL, HOST, gemini_config

PROJECT = "p-1"
LOCATION = "us-central1"
VERTEX_HOST = f"{LOCATION}-aiplatform.googleapis.com"
CALLER_TOKEN = "ya29.caller-own-access-token"
TUNED = "tunedModels/mine-7"
EMBED_MODEL = "text-embedding-005"
GEMINI_EMBED = "gemini-embedding-001"
PDF = gtypes.Part.from_uri(file_uri="gs://bucket/contract.pdf", mime_type="application/pdf")
T = TypeVar("T")


def google_config(proxy_ca: tuple[Path, Path], upstream_pki: Pki, port: int) -> NexusConfig:
    raw: dict[str, Any] = msgspec.to_builtins(gemini_config(proxy_ca, upstream_pki, port))
    raw["proxy"]["interception"] = [
        *raw["proxy"]["interception"],
        {"host": "*aiplatform.googleapis.com", "match": "glob", "adapter": "vertex"},
    ]
    # A Vertex call is priced by a configured Vertex model serving that id.
    raw["providers"] = [
        *raw["providers"],
        {
            "name": "corp-vertex",
            "kind": "vertex",
            "base_url": f"https://{VERTEX_HOST}",
            "options": {"project": "corp"},
        },
    ]
    vertex_model = {
        "provider": "corp-vertex",
        "provider_model": GEMINI_MODEL,
        "price": {"input": 100.0, "output": 400.0},
    }
    raw["models"] = [*raw["models"], {"name": "vertex-flash", **vertex_model}]
    return msgspec.convert(raw, NexusConfig)


@pytest.fixture
async def google_proxy(
    make_proxy: MakeProxy,
    upstream: SimServer,
    proxy_ca: tuple[Path, Path],
    upstream_pki: Pki,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[ProxyNode, Events]]:
    events = Events()
    cfg = google_config(proxy_ca, upstream_pki, upstream.port)
    async with started(make_proxy, cfg, proxy_ca, monkeypatch, events) as node:
        yield node, events


def _vertex() -> genai.Client:
    return genai.Client(
        vertexai=True, project=PROJECT, location=LOCATION, credentials=Credentials(token=CALLER_TOKEN)
    )


def _gemini() -> genai.Client:
    return genai.Client(api_key=CALLER_KEY)


async def sdk(make: Callable[[], genai.Client], call: Callable[[genai.Client], T]) -> T:
    """A call of the SDK's sync client (httpx: it follows HTTPS_PROXY and
    SSL_CERT_FILE), off the loop the proxy runs on."""

    def run() -> T:
        client = make()
        try:
            return call(client)
        finally:
            client.close()

    return await asyncio.to_thread(run)


def _sent(seen: Any) -> str:
    return msgspec.json.encode(seen.body).decode()


def _card_prompt(model: str = GEMINI_MODEL) -> str:
    """A prompt with a card number whose answer, once redacted, leaks nothing
    (``model``: the model the simulated provider answers as)."""
    template = "charge my card [REDACTED_CREDIT_CARD], take {}"
    return answer_prompt(model, leaks=False, template=template).replace("[REDACTED_CREDIT_CARD]", CARD)


async def test_vertex_sdk_calls_are_screened_redacted_and_recorded(
    google_proxy: tuple[ProxyNode, Events], upstream: SimServer
) -> None:
    _, events = google_proxy
    resp = await sdk(
        _vertex, lambda c: c.models.generate_content(model=GEMINI_MODEL, contents=_card_prompt())
    )
    assert resp.text and resp.usage_metadata is not None and resp.usage_metadata.prompt_token_count
    # Vertex got the redacted prompt at the path the SDK used, with the caller's own token.
    (seen,) = upstream_requests(upstream)
    path = f"/v1beta1/projects/{PROJECT}/locations/{LOCATION}/publishers/google/models/{GEMINI_MODEL}"
    assert seen.path == f"{path}:generateContent"
    assert seen.credential == credential_fingerprint(CALLER_TOKEN)
    assert CARD not in _sent(seen) and "[REDACTED_CREDIT_CARD]" in _sent(seen)
    (received,) = events.of(RequestReceived)
    assert (received.ingress, received.endpoint, received.requested_model) == (
        "proxy",
        "generate_content",
        GEMINI_MODEL,
    )
    i = received.interception
    assert i is not None and i.target_host == VERTEX_HOST and i.ai_service == "vertex-ai"
    assert i.credential_class == "unknown" and len(i.credential_fingerprint) == 16  # the token, fingerprinted
    (usage,) = events.of(UsageRecorded)
    assert usage.usage.prompt_tokens == resp.usage_metadata.prompt_token_count and usage.priced
    (done,) = events.of(RequestCompleted)
    assert done.status == 200 and done.provider == "vertex"
    assert {e.stage: e.decision for e in events.of(StageDecision)}["request"] == "redact"
    assert events.of(ProxyRequest) == []

    # A stream, as server-sent events.
    pieces = await sdk(
        _vertex,
        lambda c: [
            ch.text or ""
            for ch in c.models.generate_content_stream(
                model=GEMINI_MODEL, contents=answer_prompt(GEMINI_MODEL, leaks=False)
            )
        ],
    )
    assert "".join(pieces).strip()
    assert upstream_requests(upstream)[-1].path == f"{path}:streamGenerateContent?alt=sse"

    # A blocked prompt: Google's 403, and Vertex never sees it.
    with pytest.raises(genai_errors.ClientError) as info:
        await sdk(
            _vertex, lambda c: c.models.generate_content(model=GEMINI_MODEL, contents=f"on {FORBIDDEN}")
        )
    assert info.value.code == 403 and info.value.status == "PERMISSION_DENIED"
    assert "codename" in (info.value.message or "")
    # A part the hooks cannot read: a 400 in Google's format, never sent.
    with pytest.raises(genai_errors.ClientError) as info:
        await sdk(_vertex, lambda c: c.models.generate_content(model=GEMINI_MODEL, contents=[PDF, "sum up"]))
    assert info.value.code == 400 and info.value.status == "INVALID_ARGUMENT"
    assert "fileData" in (info.value.message or "")
    # A count: the request hooks first; counted by the proxy (Vertex's
    # countTokens differs per publisher), so nothing leaves.
    counted = await sdk(_vertex, lambda c: c.models.count_tokens(model=GEMINI_MODEL, contents=f"card {CARD}"))
    assert counted.total_tokens and counted.total_tokens > 0
    assert len(upstream_requests(upstream)) == 2
    failed = events.of(RequestFailed)
    assert [(f.status, f.stage) for f in failed] == [(403, "hooks_request"), (400, "validate")]
    endpoints = [r.endpoint for r in events.of(RequestReceived)]
    assert endpoints == [
        "generate_content",
        "stream_generate_content",
        "generate_content",
        "generate_content",
        "gemini_count_tokens",
    ]
    assert CALLER_TOKEN not in repr(events.items)


async def test_vertex_text_embeddings_are_screened(
    google_proxy: tuple[ProxyNode, Events], upstream: SimServer, proxy_ca: tuple[Path, Path]
) -> None:
    """``:predict`` of a text embedding model (what the SDK calls for one on
    Vertex): each instance's text through the hooks, answered in Vertex's shape."""
    node, events = google_proxy
    resp = await sdk(
        _vertex,
        lambda c: c.models.embed_content(
            model=EMBED_MODEL,
            contents=["hello", f"charge my card {CARD}"],
            config=gtypes.EmbedContentConfig(task_type="RETRIEVAL_DOCUMENT", output_dimensionality=8),
        ),
    )
    assert resp.embeddings and [len(e.values or []) for e in resp.embeddings] == [8, 8]
    (seen,) = upstream_requests(upstream)
    assert seen.path.endswith(f"/publishers/google/models/{EMBED_MODEL}:predict")
    assert seen.credential == credential_fingerprint(CALLER_TOKEN)
    assert [i["content"] for i in seen.body["instances"]] == [
        "hello",
        "charge my card [REDACTED_CREDIT_CARD]",
    ]
    assert {i["task_type"] for i in seen.body["instances"]} == {"RETRIEVAL_DOCUMENT"}
    assert seen.body["parameters"]["outputDimensionality"] == 8
    (received,) = events.of(RequestReceived)
    assert (received.endpoint, received.requested_model) == ("vertex_predict", EMBED_MODEL)
    (usage,) = events.of(UsageRecorded)
    assert usage.usage.prompt_tokens > 0 and not usage.estimated  # Vertex's own token counts

    with pytest.raises(genai_errors.ClientError) as info:
        await sdk(_vertex, lambda c: c.models.embed_content(model=EMBED_MODEL, contents=f"on {FORBIDDEN}"))
    assert info.value.code == 403 and info.value.status == "PERMISSION_DENIED"

    # An instance the hooks cannot read (an image: a multimodal model's): 400, never sent.
    def image() -> httpx.Response:
        ctx = ssl.create_default_context(cafile=str(proxy_ca[0]))
        scope = f"v1/projects/{PROJECT}/locations/{LOCATION}/publishers/google/models"
        with httpx.Client(proxy=f"http://{node.host}:{node.port}", verify=ctx, trust_env=False) as h:
            return h.post(
                f"https://{VERTEX_HOST}/{scope}/multimodalembedding@001:predict",
                json={"instances": [{"content": "a cat", "image": {"bytesBase64Encoded": "AAAA"}}]},
                headers={"Authorization": f"Bearer {CALLER_TOKEN}"},
            )

    r = await asyncio.to_thread(image)
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert "text content only" in r.json()["error"]["message"]
    assert len(upstream_requests(upstream)) == 1
    assert CALLER_TOKEN not in repr(events.items)


async def test_vertex_gemini_embeddings_are_screened_and_forwarded_as_sent(
    google_proxy: tuple[ProxyNode, Events], upstream: SimServer
) -> None:
    """A Gemini embedding model on Vertex (the SDK calls embedContent for
    one text, batchEmbedContents for several): the texts through the hooks,
    the body otherwise as sent, the answer Vertex's, its tokens billed."""
    _, events = google_proxy
    config = gtypes.EmbedContentConfig(task_type="RETRIEVAL_QUERY", output_dimensionality=8)
    resp = await sdk(
        _vertex,
        lambda c: c.models.embed_content(
            model=GEMINI_EMBED, contents=["hello", f"card {CARD}"], config=config
        ),
    )
    assert resp.embeddings and [len(e.values or []) for e in resp.embeddings] == [8, 8]
    one = await sdk(_vertex, lambda c: c.models.embed_content(model=GEMINI_EMBED, contents=f"my card {CARD}"))
    assert one.embeddings and len(one.embeddings) == 1
    batch, single = upstream_requests(upstream)
    assert batch.path.endswith(f"/models/{GEMINI_EMBED}:batchEmbedContents")
    assert single.path.endswith(f"/models/{GEMINI_EMBED}:embedContent")
    assert all(r.credential == credential_fingerprint(CALLER_TOKEN) for r in (batch, single))
    assert CARD not in _sent(batch) + _sent(single) and "[REDACTED_CREDIT_CARD]" in _sent(single)
    # The config as the SDK sent it.
    assert batch.body["requests"][0]["embedContentConfig"] == {
        "taskType": "RETRIEVAL_QUERY",
        "outputDimensionality": 8,
    }
    assert [r.endpoint for r in events.of(RequestReceived)] == [
        "vertex_batch_embed_contents",
        "vertex_embed_content",
    ]
    usages = events.of(UsageRecorded)
    assert len(usages) == 2 and all(u.usage.prompt_tokens > 0 and not u.estimated for u in usages)

    with pytest.raises(genai_errors.ClientError) as info:
        await sdk(_vertex, lambda c: c.models.embed_content(model=GEMINI_EMBED, contents=f"on {FORBIDDEN}"))
    assert info.value.code == 403 and info.value.status == "PERMISSION_DENIED"
    # A multimodal part (a PDF): the hooks cannot read it, so it never leaves.
    with pytest.raises(genai_errors.ClientError) as info:
        await sdk(
            _vertex,
            lambda c: c.models.embed_content(
                model=GEMINI_EMBED, contents=gtypes.Content(role="user", parts=[PDF])
            ),
        )
    assert info.value.code == 400 and "must be text" in (info.value.message or "")
    assert len(upstream_requests(upstream)) == 2
    assert CALLER_TOKEN not in repr(events.items)


async def test_a_tuned_models_calls_are_screened(
    google_proxy: tuple[ProxyNode, Events], upstream: SimServer
) -> None:
    _, events = google_proxy
    resp = await sdk(
        _gemini, lambda c: c.models.generate_content(model=TUNED, contents=_card_prompt("mine-7"))
    )
    assert resp.text
    (seen,) = upstream_requests(upstream)
    version = seen.path.split("/")[1]  # the API version the SDK chose
    assert version in ("v1", "v1beta") and seen.path == f"/{version}/{TUNED}:generateContent"
    assert CARD not in _sent(seen) and "[REDACTED_CREDIT_CARD]" in _sent(seen)
    assert seen.credential == credential_fingerprint(CALLER_KEY)
    with pytest.raises(genai_errors.ClientError) as info:
        await sdk(_gemini, lambda c: c.models.generate_content(model=TUNED, contents=f"on {FORBIDDEN}"))
    assert info.value.code == 403 and len(upstream_requests(upstream)) == 1
    received = events.of(RequestReceived)
    assert [(r.endpoint, r.requested_model) for r in received] == [("generate_content", TUNED)] * 2


def _cache_config(prompt: str, *parts: gtypes.Part) -> gtypes.CreateCachedContentConfig:
    return gtypes.CreateCachedContentConfig(
        contents=[gtypes.Content(role="user", parts=[gtypes.Part(text=prompt), *parts])],
        system_instruction=f"You answer questions about account {CARD}.",
        display_name="contract",
        ttl="600s",
    )


async def test_cached_contents_are_screened_before_google_stores_them(
    google_proxy: tuple[ProxyNode, Events], upstream: SimServer
) -> None:
    _, events = google_proxy
    cache = await sdk(
        _gemini,
        lambda c: c.caches.create(model=GEMINI_MODEL, config=_cache_config(f"my card is {CARD}")),
    )
    assert cache.name and cache.name.startswith("cachedContents/")
    (seen,) = upstream_requests(upstream)
    version = seen.path.split("/")[1]  # the API version the SDK chose
    assert version in ("v1", "v1beta") and (seen.method, seen.path) == ("POST", f"/{version}/cachedContents")
    assert seen.credential == credential_fingerprint(CALLER_KEY)
    # Both the turn and the system instruction: Google stores them redacted.
    assert CARD not in _sent(seen) and _sent(seen).count("[REDACTED_CREDIT_CARD]") == 2
    assert seen.body["ttl"] == "600s" and seen.body["displayName"] == "contract"  # the rest as sent
    (received,) = events.of(RequestReceived)
    assert (received.ingress, received.endpoint, received.requested_model) == (
        "proxy",
        "cached_contents",
        f"models/{GEMINI_MODEL}",
    )
    assert received.body is not None and received.body.redacted
    assert received.body.inline is not None and CARD.encode() not in received.body.inline
    (done,) = events.of(RequestCompleted)
    assert done.status == 200 and done.provider == "gemini"
    assert events.of(UsageRecorded) == []  # nothing billed: the calls that use it are
    assert {e.stage: e.decision for e in events.of(StageDecision)} == {"request": "redact"}

    # An update (the expiry; its query kept, the key moved to its header).
    name = cache.name
    updated = await sdk(
        _gemini, lambda c: c.caches.update(name=name, config=gtypes.UpdateCachedContentConfig(ttl="1200s"))
    )
    assert updated.name == name
    patch = upstream_requests(upstream)[-1]
    assert (patch.method, patch.path.partition("?")[0]) == ("PATCH", f"/{version}/{name}")
    assert patch.credential == credential_fingerprint(CALLER_KEY)
    # The cache in use: a call that names it is screened as any other.
    resp = await sdk(
        _gemini,
        lambda c: c.models.generate_content(
            model=GEMINI_MODEL,
            contents=answer_prompt(GEMINI_MODEL, leaks=False),
            config=gtypes.GenerateContentConfig(cached_content=name),
        ),
    )
    assert resp.text and upstream_requests(upstream)[-1].body["cachedContent"] == name

    # A blocked prompt is never stored; a part the hooks cannot read is refused.
    with pytest.raises(genai_errors.ClientError) as info:
        await sdk(
            _gemini,
            lambda c: c.caches.create(model=GEMINI_MODEL, config=_cache_config(f"notes on {FORBIDDEN}")),
        )
    assert info.value.code == 403 and info.value.status == "PERMISSION_DENIED"
    with pytest.raises(genai_errors.ClientError) as info:
        await sdk(_gemini, lambda c: c.caches.create(model=GEMINI_MODEL, config=_cache_config("read", PDF)))
    assert info.value.code == 400 and info.value.status == "INVALID_ARGUMENT"
    assert "cachedContents" in (info.value.message or "") and "fileData" in (info.value.message or "")
    assert len(upstream_requests(upstream)) == 3
    assert [r.endpoint for r in events.of(RequestReceived)] == [
        "cached_contents",
        "cached_contents",
        "generate_content",
        "cached_contents",
        "cached_contents",
    ]
    assert CALLER_KEY not in repr(events.items)


async def test_vertex_cached_contents_and_file_uploads(
    google_proxy: tuple[ProxyNode, Events], upstream: SimServer, proxy_ca: tuple[Path, Path]
) -> None:
    node, events = google_proxy
    cache = await sdk(
        _vertex, lambda c: c.caches.create(model=GEMINI_MODEL, config=_cache_config(f"card {CARD}"))
    )
    scope = f"projects/{PROJECT}/locations/{LOCATION}"
    assert cache.name and cache.name.startswith(f"{scope}/cachedContents/")
    (seen,) = upstream_requests(upstream)
    assert (seen.method, seen.path) == ("POST", f"/v1beta1/{scope}/cachedContents")
    assert CARD not in _sent(seen) and seen.credential == credential_fingerprint(CALLER_TOKEN)
    (done,) = events.of(RequestCompleted)
    assert done.provider == "vertex"

    # A file upload is binary media the hooks cannot read as a prompt: relayed,
    # and recorded with its size (a non-image file is refused where a call uses it).
    data = b"%PDF-1.7 " + b"x" * 2048

    def upload() -> httpx.Response:
        ctx = ssl.create_default_context(cafile=str(proxy_ca[0]))
        with httpx.Client(proxy=f"http://{node.host}:{node.port}", verify=ctx, trust_env=False) as h:
            return h.post(
                f"https://{HOST}/upload/v1beta/files?key={CALLER_KEY}",
                content=data,
                headers={"X-Goog-Upload-Protocol": "raw", "Content-Type": "application/pdf"},
            )

    await asyncio.to_thread(upload)
    (relayed,) = events.of(ProxyRequest)
    assert (relayed.path, relayed.bytes_up, relayed.credential_class) == (
        "/upload/v1beta/files",
        len(data),
        "unknown",
    )
    assert CALLER_KEY not in repr(events.items) and CALLER_TOKEN not in repr(events.items)


async def test_monitor_mode_stores_the_cache_as_sent_and_records_the_verdict(
    make_proxy: MakeProxy,
    upstream: SimServer,
    proxy_ca: tuple[Path, Path],
    upstream_pki: Pki,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events = Events()
    cfg = monitored(google_config(proxy_ca, upstream_pki, upstream.port))
    async with started(make_proxy, cfg, proxy_ca, monkeypatch, events):
        await sdk(
            _gemini,
            lambda c: c.caches.create(model=GEMINI_MODEL, config=_cache_config(f"{CARD} for {FORBIDDEN}")),
        )
    (seen,) = upstream_requests(upstream)
    assert CARD in _sent(seen) and FORBIDDEN in _sent(seen)  # as the caller wrote it
    assert [e.status for e in events.of(RequestCompleted)] == [200]
    (stage,) = events.of(StageDecision)
    assert (stage.stage, stage.decision, stage.monitored_decision) == ("request", "approve", "block")


TRAFFIC = """
SELECT endpoint, stream, status, target_host, provider, requested_model, request_hook_decision,
       prompt_tokens > 0
FROM traffic_event WHERE ingress = 'proxy' AND endpoint <> 'connect'
ORDER BY received_at
"""


@pytest.mark.integration
async def test_traffic_event_rows_of_vertex_calls_and_cached_contents(
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
    cfg = google_config(proxy_ca, upstream_pki, upstream.port)
    async with started(make_proxy, cfg, proxy_ca, monkeypatch, publisher):
        prompt = answer_prompt(GEMINI_MODEL, leaks=False)
        await sdk(_vertex, lambda c: c.models.generate_content(model=GEMINI_MODEL, contents=prompt))
        await sdk(_gemini, lambda c: c.caches.create(model=GEMINI_MODEL, config=_cache_config("notes")))
        with pytest.raises(genai_errors.ClientError):
            await sdk(
                _vertex,
                lambda c: c.caches.create(model=GEMINI_MODEL, config=_cache_config(f"on {FORBIDDEN}")),
            )
    await publisher.flush()
    expected = [
        ("generate_content", False, 200, VERTEX_HOST, "vertex", GEMINI_MODEL, "approve", True),
        # the system instruction's card number: redacted
        ("cached_contents", False, 200, HOST, "gemini", f"models/{GEMINI_MODEL}", "redact", None),
        (
            "cached_contents",
            False,
            403,
            VERTEX_HOST,
            "vertex",
            f"projects/{PROJECT}/locations/{LOCATION}/publishers/google/models/{GEMINI_MODEL}",
            "block",
            None,
        ),
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
