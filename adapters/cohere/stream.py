"""Cohere v2 stream events (message-start, content-*, tool-plan-delta,
tool-call-*, citation-*, message-end) -> canonical chunks."""

from __future__ import annotations

import msgspec

from adapters.base import StreamError
from adapters.canonical import ChatChunk
from adapters.cohere import wire as w
from adapters.cohere.mapping import finish_reason, log, usage
from adapters.wirekit.chunks import ChunkFactory
from adapters.wirekit.errors import bad_upstream, make
from adapters.wirekit.sse import SSEParser

_decode = msgspec.json.Decoder(w.StreamEvent).decode

IGNORED = frozenset(
    {"content-start", "content-end", "tool-call-end", "citation-start", "citation-end", "debug"}
)


class CohereStreamDecoder:
    def __init__(self, model: str) -> None:
        self._sse = SSEParser()
        self._chunks = ChunkFactory(model=model)
        self._tools: dict[int, int] = {}  # cohere tool index -> canonical tool index

    def feed(self, data: bytes) -> list[ChatChunk]:
        out: list[ChatChunk] = []
        for ev in self._sse.feed(data):
            self._event(ev.data, out)
        return out

    def close(self) -> list[ChatChunk]:
        out: list[ChatChunk] = []
        for ev in self._sse.close():
            self._event(ev.data, out)
        return out

    def _event(self, data: str, out: list[ChatChunk]) -> None:
        if data == "[DONE]":
            return
        try:
            ev = _decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError):
            raise bad_upstream("cohere", "stream event did not parse") from None
        f = self._chunks
        msg = ev.delta.message if ev.delta else None
        if ev.type == "message-start":
            f.id = ev.id or ""
            out.append(f.role())
        elif ev.type == "content-delta" and msg is not None and isinstance(msg.content, w.DeltaContent):
            if msg.content.text:
                out.append(f.text(msg.content.text))
            elif msg.content.thinking:
                out.append(f.reasoning(msg.content.thinking))
        elif ev.type == "tool-plan-delta" and msg is not None and msg.tool_plan:
            out.append(f.reasoning(msg.tool_plan))
        elif ev.type == "tool-call-start" and msg is not None and isinstance(msg.tool_calls, w.ToolCall):
            call = msg.tool_calls
            index = len(self._tools)
            self._tools[ev.index if ev.index is not None else index] = index
            fn = call.function or w.FunctionCall()
            out.append(f.tool_start(index, call.id or f"call_{index}", fn.name or "", fn.arguments or ""))
        elif ev.type == "tool-call-delta" and msg is not None and isinstance(msg.tool_calls, w.ToolCall):
            known = self._tools.get(ev.index if ev.index is not None else 0)
            args = msg.tool_calls.function.arguments if msg.tool_calls.function else None
            if known is not None and args:
                out.append(f.tool_args(known, args))
        elif ev.type == "message-end" and ev.delta is not None:
            if ev.delta.finish_reason == "ERROR":
                # Cohere ends a failed generation with finish_reason ERROR:
                # the caller must get an error frame, not a normal finish.
                raise StreamError(
                    make("upstream_error", "cohere: the generation failed mid-stream"), list(out)
                )
            out.append(f.finish(finish_reason(ev.delta.finish_reason) or "stop"))
            u = usage(ev.delta.usage)
            if u is not None:
                out.append(f.usage(u))
        elif ev.type not in IGNORED:
            log.debug("cohere: skipped unknown stream event %r", ev.type)
