"""streamGenerateContent?alt=sse -> canonical chunks.  Each SSE frame is a
whole GenerateContentResponse holding the next parts; function calls arrive
whole, so each becomes one tool-call delta with complete arguments."""

from __future__ import annotations

import msgspec

from adapters.base import StreamError
from adapters.canonical import ChatChunk
from adapters.gemini import wire as w
from adapters.gemini.errors import from_detail
from adapters.gemini.mapping import finish_reason, usage
from adapters.gemini.response import call_id
from adapters.wirekit.chunks import ChunkFactory
from adapters.wirekit.errors import bad_upstream
from adapters.wirekit.jsonio import dumps
from adapters.wirekit.sse import SSEParser


class StreamFrame(w.GenerateContentResponse, rename="camel", omit_defaults=True):
    error: w.ErrorDetail | None = None


_decode = msgspec.json.Decoder(StreamFrame).decode


class GeminiStreamDecoder:
    def __init__(self, model: str, provider: str = "gemini") -> None:
        self._provider = provider
        self._sse = SSEParser()
        self._chunks = ChunkFactory(model=model)
        self._started = False
        self._tools = 0
        self._usage: w.UsageMetadata | None = None

    def feed(self, data: bytes) -> list[ChatChunk]:
        out: list[ChatChunk] = []
        for ev in self._sse.feed(data):
            self._frame(ev.data, out)
        return out

    def close(self) -> list[ChatChunk]:
        out: list[ChatChunk] = []
        for ev in self._sse.close():
            self._frame(ev.data, out)
        if self._started:
            u = usage(self._usage)
            if u is not None:
                out.append(self._chunks.usage(u))
        return out

    def _frame(self, data: str, out: list[ChatChunk]) -> None:
        try:
            frame = _decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError):
            raise bad_upstream(self._provider, "stream frame did not parse") from None
        if frame.error is not None:
            raise StreamError(from_detail(self._provider, frame.error, None), list(out))
        f = self._chunks
        if not self._started:
            self._started = True
            f.id = frame.response_id or ""
            f.model = frame.model_version or f.model
            out.append(f.role())
        if frame.usage_metadata is not None:
            self._usage = frame.usage_metadata  # cumulative: the last one wins
        for cand in frame.candidates[:1]:
            for part in cand.content.parts if cand.content else []:
                if part.function_call is not None:
                    fc = part.function_call
                    out.append(
                        f.tool_start(
                            self._tools, call_id(part, fc, self._tools), fc.name, dumps(fc.args or {})
                        )
                    )
                    self._tools += 1
                elif part.text:
                    out.append(f.reasoning(part.text) if part.thought else f.text(part.text))
            reason = finish_reason(cand.finish_reason, self._tools > 0)
            if reason is not None:
                out.append(f.finish(reason))
        if not frame.candidates and frame.prompt_feedback and frame.prompt_feedback.block_reason:
            out.append(f.finish("content_filter"))
