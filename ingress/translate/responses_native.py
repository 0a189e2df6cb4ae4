"""A native Responses target's answers, read along the way: the bytes are
relayed to the caller as they are (but for the model name and what the
response hooks change), while usage and the text and calls for the fold
are read from them here."""

from __future__ import annotations

from typing import Any

import msgspec

from adapters.base import StreamError
from adapters.canonical import ChatChunk, CompletionTokensDetails, PromptTokensDetails, Usage
from adapters.wirekit.chunks import ChunkFactory
from adapters.wirekit.errors import make
from adapters.wirekit.sse import SSEEvent, SSEParser
from ingress.translate import responses_wire as rw

_any: msgspec.json.Decoder[Any] = msgspec.json.Decoder()


def native_usage(payload: Any) -> Usage | None:
    """Usage from a Responses object (unary body, or the ``response`` of a
    response.completed / response.incomplete / response.failed event)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("usage"), dict):
        return None
    try:
        u = msgspec.convert(payload["usage"], rw.NativeUsage, strict=False)
    except msgspec.ValidationError:
        return None  # a provider's malformed usage: estimated instead
    cached = (u.input_tokens_details.cached_tokens if u.input_tokens_details else 0) or 0
    reasoning = (u.output_tokens_details.reasoning_tokens if u.output_tokens_details else 0) or 0
    prompt, completion = u.input_tokens or 0, u.output_tokens or 0
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=u.total_tokens or prompt + completion,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=cached) if cached else None,
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=reasoning) if reasoning else None,
    )


class NativeStreamReader:
    """Reads a native Responses stream along the way (the bytes are
    forwarded as they are): text deltas and function calls as canonical
    chunks for the fold, the terminal event's usage, and failures."""

    def __init__(self, model: str) -> None:
        self._sse = SSEParser()
        self._chunks = ChunkFactory(model=model)
        self._calls: dict[str, int] = {}

    def feed(self, data: bytes) -> list[ChatChunk]:
        return self._events(self._sse.feed(data))

    def close(self) -> list[ChatChunk]:
        return self._events(self._sse.close())

    def _events(self, events: list[SSEEvent]) -> list[ChatChunk]:
        out: list[ChatChunk] = []
        for ev in events:
            try:
                payload = _any.decode(ev.data)
            except msgspec.DecodeError:
                continue
            if isinstance(payload, dict):
                self.translate(payload.get("type", ev.event), payload, out)
        return out

    def translate(self, kind: object, payload: dict[str, Any], out: list[ChatChunk]) -> None:
        """One event's canonical chunks, appended to ``out``; a failure
        event raises StreamError carrying ``out``."""
        f = self._chunks
        if kind == "response.output_text.delta":
            out.append(f.text(str(payload.get("delta", ""))))
        elif kind == "response.output_item.added":
            item = payload.get("item") or {}
            if item.get("type") == "function_call":
                index = self._calls.setdefault(str(item.get("id", "")), len(self._calls))
                out.append(f.tool_start(index, str(item.get("call_id", "")), str(item.get("name", ""))))
        elif kind == "response.function_call_arguments.delta":
            index = self._calls.get(str(payload.get("item_id", "")), 0)
            out.append(f.tool_args(index, str(payload.get("delta", ""))))
        elif kind in ("response.completed", "response.incomplete"):
            response = payload.get("response")
            out.append(f.finish("length" if kind == "response.incomplete" else "stop"))
            usage = native_usage(response)
            if usage is not None:
                out.append(f.usage(usage))
        elif kind in ("response.failed", "error"):
            raise StreamError(make("upstream_error", "the provider reported an error mid-stream"), out)

    def text_chunk(self, text: str) -> ChatChunk:
        return self._chunks.text(text)
