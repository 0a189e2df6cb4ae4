"""Which decrypted requests the pipeline serves, and what of the client's
headers reaches the provider."""

from __future__ import annotations

from typing import Any

import pytest

from ingress.http1 import Headers, Request
from ingress.proxy.front import forwarded_headers, recognise


def _req(method: str, target: str, headers: list[tuple[str, str]] | None = None) -> Request:
    return Request(method, target, "1.1", Headers(headers or []))


@pytest.mark.parametrize(
    ("adapter", "method", "target", "endpoint", "base"),
    [
        ("openai", "POST", "/v1/chat/completions", "chat", "/v1"),
        ("openai", "POST", "/v1/chat/completions?api-version=1", "chat", "/v1"),
        ("openai", "POST", "/openai/v1/responses", "responses", "/openai/v1"),
        ("openai", "POST", "/v1/embeddings", "embeddings", "/v1"),
        ("anthropic", "POST", "/v1/messages", "messages", ""),
        ("anthropic", "POST", "/v1/messages/count_tokens", "count_tokens", ""),
        ("gemini", "POST", "/v1beta/models/gemini-2.5-pro:generateContent", "generate_content", "/v1beta"),
        (
            "gemini",
            "POST",
            "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
            "stream_generate_content",
            "/v1beta",
        ),
        ("gemini", "POST", "/v1/models/gemini-2.5-pro:countTokens", "gemini_count_tokens", "/v1"),
        ("gemini", "POST", "/v1beta/models/gemini-embedding-001:embedContent", "embed_content", "/v1beta"),
        ("gemini", "POST", "/v1/models/text-embedding-004:batchEmbedContents", "batch_embed_contents", "/v1"),
    ],
)
def test_recognised_calls(adapter: str, method: str, target: str, endpoint: str, base: str) -> None:
    call = recognise(adapter, _req(method, target))
    assert call is not None and (call.endpoint.name, call.kind, call.base_path) == (endpoint, adapter, base)


_VERTEX = "/v1beta1/projects/p-1/locations/us-central1"


@pytest.mark.parametrize(
    ("adapter", "method", "target", "endpoint", "kind", "model", "options"),
    [
        (
            "gemini",
            "POST",
            "/v1beta/tunedModels/mine-7:generateContent",
            "generate_content",
            "gemini",
            "tunedModels/mine-7",
            {},
        ),
        (
            "gemini",
            "POST",
            "/v1beta/tunedModels/mine-7:streamGenerateContent?alt=sse",
            "stream_generate_content",
            "gemini",
            "tunedModels/mine-7",
            {},
        ),
        (
            "vertex",
            "POST",
            f"{_VERTEX}/publishers/google/models/gemini-2.5-flash:generateContent",
            "generate_content",
            "vertex",
            "gemini-2.5-flash",
            {"api_version": "v1beta1", "publisher": "google", "project": "p-1", "location": "us-central1"},
        ),
        (
            "vertex-ai",  # the catalogue's service name works as the adapter too
            "POST",
            "/v1/projects/p-1/locations/global/publishers/google/models/gemini-2.5-flash:countTokens",
            "gemini_count_tokens",
            "vertex",
            "gemini-2.5-flash",
            {"api_version": "v1", "publisher": "google", "project": "p-1", "location": "global"},
        ),
        (
            "vertex",  # express mode: an API key, no project
            "POST",
            "/v1/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            "stream_generate_content",
            "vertex",
            "gemini-2.5-flash",
            {"api_version": "v1", "publisher": "google", "express": True},
        ),
        (
            "vertex",
            "POST",
            f"{_VERTEX}/publishers/google/models/text-embedding-005:predict",
            "vertex_predict",
            "vertex",
            "text-embedding-005",
            {"api_version": "v1beta1", "publisher": "google", "project": "p-1", "location": "us-central1"},
        ),
        (
            "vertex",  # forwarded as sent: to the path the caller used
            "POST",
            f"{_VERTEX}/publishers/google/models/gemini-embedding-001:batchEmbedContents",
            "vertex_batch_embed_contents",
            "vertex",
            "gemini-embedding-001",
            {},
        ),
        ("gemini", "POST", "/v1beta/cachedContents", "cached_contents", "gemini", "", {}),
        ("gemini", "PATCH", "/v1beta/cachedContents/abc?updateMask=ttl", "cached_contents", "gemini", "", {}),
        ("vertex", "POST", f"{_VERTEX}/cachedContents", "cached_contents", "vertex", "", {}),
        ("vertex", "PATCH", f"{_VERTEX}/cachedContents/abc", "cached_contents", "vertex", "", {}),
    ],
)
def test_google_calls(
    adapter: str, method: str, target: str, endpoint: str, kind: str, model: str, options: dict[str, Any]
) -> None:
    """Tuned models, Vertex AI and cached contents: the model read from the
    path the caller used, and what the codec needs to address it again."""
    req = _req(method, target)
    call = recognise(adapter, req)
    assert call is not None and (call.endpoint.name, call.kind, dict(call.options)) == (
        endpoint,
        kind,
        options,
    )
    addressed = call.endpoint.addressed
    if model:
        assert addressed is not None and addressed(req.path, target.partition("?")[2])[0] == model


@pytest.mark.parametrize(
    ("adapter", "method", "target"),
    [
        ("openai", "GET", "/v1/chat/completions"),  # not a call
        ("openai", "POST", "/v1/files"),  # not an LLM endpoint the pipeline serves
        ("openai", "POST", "/v1//chat/completions"),  # odd paths are relayed, not guessed at
        ("anthropic", "POST", "/v1/messages/count_tokens/x"),
        ("anthropic", "POST", "/proxy/v1/messages"),  # the codec adds /v1/messages to the host itself
        ("gemini", "GET", "/v1beta/models/gemini-2.5-pro"),  # a model's metadata: no prompt
        ("gemini", "POST", "/v1beta/models/gemini-2.5-pro:predictLongRunning"),  # not served by the pipeline
        ("gemini", "POST", "/v1beta/tunedModels/mine:embedContent"),  # a tuned model does not embed
        ("gemini", "GET", "/v1beta/cachedContents/abc"),  # a read: no prompt leaves
        ("gemini", "DELETE", "/v1beta/cachedContents/abc"),
        ("gemini", "PATCH", "/v1beta/cachedContents"),  # the collection is not updated
        ("gemini", "POST", "/upload/v1beta/files"),  # binary media: relayed, recorded with its size
        (
            "gemini",
            "POST",
            "/v1/projects/p/locations/l/publishers/google/models/m:generateContent",
        ),  # Vertex's
        ("vertex", "POST", "/v1beta/models/gemini-2.5-pro:generateContent"),  # the Gemini API's
        ("vertex", "POST", f"{_VERTEX}/publishers/anthropic/models/claude:rawPredict"),  # another grammar
        ("vertex", "POST", f"{_VERTEX}/publishers/google/models/imagen-4.0-generate-001:predict"),  # not text
        ("vertex", "POST", f"{_VERTEX}/endpoints/123:generateContent"),  # a deployed endpoint
        ("", "POST", "/v1/chat/completions"),
    ],
)
def test_everything_else_is_relayed(adapter: str, method: str, target: str) -> None:
    assert recognise(adapter, _req(method, target)) is None


def test_the_clients_end_to_end_headers_reach_the_provider_as_sent() -> None:
    headers = Headers(
        [
            ("Host", "api.openai.com"),
            ("Authorization", "Bearer sk-own"),
            ("OpenAI-Organization", "org-1"),
            ("Content-Type", "application/json"),
            ("Content-Length", "12"),
            ("Accept-Encoding", "gzip"),
            ("Connection", "keep-alive, X-Hop"),
            ("X-Hop", "dropped: named in Connection"),
            ("Proxy-Authorization", "Basic eDp5"),
            ("X-Multi", "a"),
            ("X-Multi", "b"),
        ]
    )
    out = forwarded_headers(headers, {"ChatGPT-Allowed-Workspace-Id": "ws-1"})
    assert out == {
        "authorization": "Bearer sk-own",
        "openai-organization": "org-1",
        "x-multi": "a, b",
        "chatgpt-allowed-workspace-id": "ws-1",
    }
