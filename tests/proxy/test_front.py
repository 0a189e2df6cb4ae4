"""Which decrypted requests the pipeline serves, and what of the client's
headers reaches the provider."""

from __future__ import annotations

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
        ("gemini", "POST", "/v1beta/tunedModels/mine:generateContent"),
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
