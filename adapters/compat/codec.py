"""One codec for every OpenAI-compatible provider, parameterised by its
table row: the row's quirks rewrite the canonical request, the OpenAI codec
encodes it, and the row's usage dialect fixes cache accounting on the way
back."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

import msgspec

from adapters.base import Capability, CodecBase, StreamDecoder, StreamError, Target, WireRequest
from adapters.canonical import (
    CanonicalError,
    ChatChunk,
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
)
from adapters.compat.table import CompatProvider
from adapters.compat.usage import cached_tokens, dialect_cached, raw_usage, with_cached
from adapters.openai import CODEC as OPENAI
from adapters.openai.codec import OpenAIStreamDecoder
from adapters.wirekit.errors import bad_upstream, not_served, unsupported
from adapters.wirekit.sse import SSEEvent, SSEParser

_body = msgspec.json.Decoder(dict)
_encoder = msgspec.json.Encoder()


class CompatCodec(CodecBase):
    def __init__(self, provider: CompatProvider) -> None:
        self.provider = provider
        self.name = provider.name
        self.capabilities = provider.capabilities

    def _target(self, target: Target) -> Target:
        if target.base_url:
            return target
        return msgspec.structs.replace(target, base_url=self.provider.base_url)

    def prepare(self, request: ChatRequest, model: str) -> ChatRequest:
        """The canonical request after this provider's per-model quirks."""
        caps = self.capabilities
        if request.tools and Capability.TOOLS not in caps:
            raise unsupported(self.name, "tools are not supported by this provider")
        rf = request.response_format
        if rf is not None and rf.type == "json_schema" and Capability.JSON_SCHEMA not in caps:
            raise unsupported(self.name, "response_format json_schema is not supported by this provider")
        for quirk in self.provider.quirks:
            if quirk.applies(model):
                request = quirk.apply(request)
        return request

    def encode_chat(self, request: ChatRequest, target: Target) -> WireRequest:
        target = self._target(target)
        wire = OPENAI.encode_chat(self.prepare(request, target.provider_model), target)
        drop = bool(request.stream) and not self.provider.stream_options
        ext = (request.nexus_ext or {}).get(self.name, {})
        extra = {k: ext[k] for k in self.provider.ext_fields if k in ext}
        if drop or extra:
            # Rare paths: re-open the encoded body rather than fork the
            # OpenAI encoder.
            body = _body.decode(wire.body)
            if drop:
                body.pop("stream_options", None)
            body.update(extra)
            wire = msgspec.structs.replace(wire, body=_encoder.encode(body))
        return wire

    def decode_chat(self, body: bytes, target: Target) -> ChatResponse:
        resp = utf8_guard(self.name, lambda: OPENAI.decode_chat(body, target))
        dialect = self.provider.usage_dialect
        if dialect and resp.usage is not None:
            resp.usage = with_cached(resp.usage, cached_tokens(dialect, body))
        return resp

    def stream_decoder(self, target: Target) -> StreamDecoder:
        # Not OpenAI's own decoder: compatible providers may end without
        # [DONE] and are judged by their finish reason.
        inner = OpenAIStreamDecoder()
        dialect = self.provider.usage_dialect
        return GuardedStream(_DialectStream(inner, dialect) if dialect else inner, self.name)

    def encode_embeddings(self, request: EmbeddingRequest, target: Target) -> WireRequest:
        if Capability.EMBEDDINGS not in self.capabilities:
            raise not_served(self.name, "embeddings")
        return OPENAI.encode_embeddings(request, self._target(target))

    def decode_embeddings(self, body: bytes, target: Target) -> EmbeddingResponse:
        return utf8_guard(self.name, lambda: OPENAI.decode_embeddings(body, target))

    def normalise_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> CanonicalError:
        err = OPENAI.normalise_error(status, body, headers)
        return msgspec.structs.replace(err, message=f"{self.name}: {err.message}")


T = TypeVar("T")


def utf8_guard(provider: str, decode: Callable[[], T]) -> T:
    """The OpenAI decoders let msgspec's UnicodeDecodeError (invalid UTF-8
    inside a JSON string) escape; here it is the unreadable body it is."""
    try:
        return decode()
    except UnicodeDecodeError:
        raise bad_upstream(provider, "response is not valid UTF-8") from None


class GuardedStream:
    """An OpenAI-family stream with the provider's name on its errors, and
    invalid UTF-8 turned into a CodecError."""

    def __init__(self, outer: StreamDecoder, provider: str) -> None:
        self._outer = outer
        self._provider = provider

    def feed(self, data: bytes) -> list[ChatChunk]:
        return self._checked(lambda: self._outer.feed(data))

    def close(self) -> list[ChatChunk]:
        return self._checked(self._outer.close)

    def _checked(self, step: Callable[[], list[ChatChunk]]) -> list[ChatChunk]:
        try:
            return step()
        except UnicodeDecodeError:
            raise bad_upstream(self._provider, "stream is not valid UTF-8") from None
        except StreamError as exc:
            err = msgspec.structs.replace(exc.error, message=f"{self._provider}: {exc.error.message}")
            raise StreamError(err, exc.chunks) from None


class _DialectStream:
    """Wraps the OpenAI stream decoder; usage-bearing events are read a
    second time (only when they contain the dialect's field name) and their
    cache hits patched into the matching chunk's usage."""

    def __init__(self, inner: StreamDecoder, dialect: str) -> None:
        self._inner = inner
        self._dialect = dialect
        self._sse = SSEParser()
        self._pending: list[int | None] = []

    def feed(self, data: bytes) -> list[ChatChunk]:
        self._scan(self._sse.feed(data))
        return self._patch(self._inner.feed(data))

    def close(self) -> list[ChatChunk]:
        self._scan(self._sse.close())
        return self._patch(self._inner.close())

    def _scan(self, events: list[SSEEvent]) -> None:
        for ev in events:
            raw = ev.data.encode()
            # Many providers send "usage": null on every chunk; only a real
            # usage object yields a usage-bearing chunk to pair with.
            if b'"usage"' not in raw:
                continue
            u = raw_usage(raw)
            if u is not None:
                self._pending.append(dialect_cached(self._dialect, u))

    def _patch(self, chunks: list[ChatChunk]) -> list[ChatChunk]:
        for chunk in chunks:
            if chunk.usage is not None and self._pending:
                chunk.usage = with_cached(chunk.usage, self._pending.pop(0))
        return chunks
