"""What each API endpoint is, for the stages that treat them differently:
its caller grammar, how its body decodes, which model kind it calls,
whether it is metered, cached and failed over, and the call that serves it.

The front end picks the endpoint by path; the stages read it from
``ex.spec``.  Adding an endpoint is one entry here and one route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ingress.pipeline.exchange import Exchange
from ingress.translate.grammar import Grammar


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str  # in the events and metrics: chat, messages, responses, embeddings, count_tokens, models...
    grammar: Grammar  # how the caller speaks (its errors included)
    # What serves it, once every stage before ``call`` let it through.
    call: Callable[[Exchange], Awaitable[None]]
    # A model call: its body decoded (may raise msgspec.ValidationError or
    # CodecError: a 400 either way), then checked.
    decode: Callable[[bytes], Any] | None = None
    check: Callable[[Any], None] | None = None
    kind: str = "chat"  # the model kind it calls: chat | embedding
    key_header: str | None = None  # the native SDK's own key header (x-api-key on /v1/messages)
    # The key may also come as ``?key=`` (Google's REST convention); the
    # function reads it from the query string.
    query_key: Callable[[str], str | None] | None = None
    # Where the URL, not the body, names the model and whether it streams
    # (Gemini's .../models/{model}:streamGenerateContent?alt=sse): (path,
    # query) -> (model, stream); raises CodecError (a 400) for a URL it
    # cannot serve.
    addressed: Callable[[str, str], tuple[str, bool]] | None = None
    # Whether the request must name a model (an update of a Gemini cached
    # content names none: it is no model call, though it carries a prompt).
    needs_model: bool = True
    streams: bool = True  # "stream": true is accepted (embeddings: a 400)
    metered: bool = True  # reserves on quotas and bills usage (count_tokens does neither)
    cached: bool = True  # the response caches and coalescing may serve it
    routed: bool = True  # retries, failover and a smart rule's router apply
    # Whether a request of this endpoint, on its route, may be served from
    # the cache (a native Responses call, whose answer ids a later call
    # names, is not), and failed over to other candidates.
    cacheable: Callable[[Exchange], bool] | None = None

    def may_cache(self, ex: Exchange) -> bool:
        return self.cached and (self.cacheable is None or self.cacheable(ex))


def _specs() -> dict[str, Endpoint]:
    from ingress.pipeline.call import count, embeddings, forwarded, responses
    from ingress.pipeline.call.chat import chat_call
    from ingress.pipeline.call.models import models_call
    from ingress.pipeline.errors import invalid_request
    from ingress.pipeline.stages.quota import usage_call
    from ingress.translate import gemini_cache, gemini_embed
    from ingress.translate import gemini_generate as gemini
    from ingress.translate.anthropic_messages import ANTHROPIC_MESSAGES, decode_count_tokens
    from ingress.translate.openai_chat import OPENAI_CHAT
    from ingress.translate.responses import RESPONSES

    def some_messages(chat: Any) -> None:
        if not chat.messages:
            raise invalid_request("messages must not be empty.", "messages")

    def some_contents(chat: Any) -> None:
        if not chat.messages:
            raise invalid_request("contents must not be empty.", "contents")

    def generate(name: str) -> Endpoint:
        # generateContent and streamGenerateContent: one grammar, two
        # endpoints (the URL says which), so the caches never answer one
        # with the other's bytes.
        return Endpoint(
            name,
            gemini.GEMINI_GENERATE,
            chat_call,
            gemini.decode_request,
            some_contents,
            key_header="x-goog-api-key",
            query_key=gemini.query_key,
            addressed=gemini.address,
        )

    def embed(name: str, decode: Callable[[bytes], Any]) -> Endpoint:
        # Gemini's embeddings: routed, metered and called as /v1/embeddings
        # is (embeddings_call); Google's bodies and errors.
        return Endpoint(
            name,
            gemini.GEMINI_GENERATE,
            embeddings.embeddings_call,
            decode,
            kind="embedding",
            key_header="x-goog-api-key",
            query_key=gemini.query_key,
            addressed=gemini.address,
            streams=False,
            cached=False,
        )

    return {
        "embed_content": embed("embed_content", gemini_embed.decode_embed),
        "batch_embed_contents": embed("batch_embed_contents", gemini_embed.decode_batch),
        "generate_content": generate("generate_content"),
        "stream_generate_content": generate("stream_generate_content"),
        "gemini_count_tokens": Endpoint(
            "gemini_count_tokens",
            gemini.GEMINI_GENERATE,
            count.count_call,
            gemini.decode_count_tokens,
            some_contents,
            key_header="x-goog-api-key",
            query_key=gemini.query_key,
            addressed=gemini.address,
            metered=False,
            cached=False,
            routed=False,
        ),
        # A Gemini cached content stored through the proxy: its prompt passes
        # the request hooks, then goes to Google as sent (call/forwarded.py).
        "cached_contents": Endpoint(
            "cached_contents",
            gemini.GEMINI_GENERATE,
            forwarded.cached_contents_call,
            gemini_cache.decode,
            key_header="x-goog-api-key",
            query_key=gemini.query_key,
            needs_model=False,
            streams=False,
            metered=False,
            cached=False,
            routed=False,
        ),
        "chat": Endpoint("chat", OPENAI_CHAT, chat_call, OPENAI_CHAT.decode, some_messages),
        "messages": Endpoint(
            "messages",
            ANTHROPIC_MESSAGES,
            chat_call,
            ANTHROPIC_MESSAGES.decode,
            some_messages,
            key_header="x-api-key",
        ),
        "count_tokens": Endpoint(
            "count_tokens",
            ANTHROPIC_MESSAGES,
            count.count_call,
            decode_count_tokens,
            count.check,
            key_header="x-api-key",
            metered=False,
            cached=False,
            routed=False,
        ),
        "responses": Endpoint(
            "responses", RESPONSES, responses.responses_call, responses.decode, cacheable=responses.cacheable
        ),
        "embeddings": Endpoint(
            "embeddings",
            OPENAI_CHAT,
            embeddings.embeddings_call,
            embeddings.decode,
            embeddings.check,
            kind="embedding",
            streams=False,
            cached=False,
        ),
        "models": Endpoint("models", OPENAI_CHAT, models_call),
        "models_anthropic": Endpoint("models", ANTHROPIC_MESSAGES, models_call, key_header="x-api-key"),
        "usage": Endpoint("usage", OPENAI_CHAT, usage_call, key_header="x-api-key"),
    }


ENDPOINTS: dict[str, Endpoint] = _specs()

# The paths of the model API (everything else is operations: health,
# metrics, the admin endpoints): OpenAI's and Anthropic's /v1, Gemini's /v1beta.
API_PREFIXES = ("/v1/", "/v1beta/")

_GEMINI = {
    "generateContent": "generate_content",
    "streamGenerateContent": "stream_generate_content",
    "countTokens": "gemini_count_tokens",
    "embedContent": "embed_content",
    "batchEmbedContents": "batch_embed_contents",
}


def gemini_endpoint(path: str) -> Endpoint | None:
    """The endpoint of a Gemini model URL (``/v1beta/models/{model}:{method}``),
    or None: its model is in the path, so no fixed route can name it."""
    from ingress.translate.gemini_generate import parse_path

    parsed = parse_path(path)
    return ENDPOINTS[_GEMINI[parsed[1]]] if parsed is not None else None
