"""ConverseStream: AWS event-stream messages -> canonical chunks."""

from __future__ import annotations

import msgspec

from adapters.anthropic.mapping import STRUCTURED_OUTPUT_TOOL
from adapters.base import StreamError
from adapters.bedrock import wire as w
from adapters.bedrock.errors import from_kind
from adapters.bedrock.eventstream import EventStreamDecoder, Message
from adapters.bedrock.mapping import finish_reason, log, usage
from adapters.canonical import ChatChunk
from adapters.wirekit import signatures
from adapters.wirekit.chunks import ChunkFactory
from adapters.wirekit.errors import bad_upstream

_decode = msgspec.json.Decoder(w.StreamPayload).decode


class BedrockStreamDecoder:
    def __init__(self, model: str) -> None:
        self._frames = EventStreamDecoder()
        self._chunks = ChunkFactory(model=model)
        self._tools: dict[int, int] = {}  # content block index -> tool call index (-1: structured output)
        self._structured = False
        self._signatures: list[str] = []

    def feed(self, data: bytes) -> list[ChatChunk]:
        out: list[ChatChunk] = []
        for msg in self._frames.feed(data):
            self._message(msg, out)
        return out

    def close(self) -> list[ChatChunk]:
        self._frames.close()
        return []

    def _message(self, msg: Message, out: list[ChatChunk]) -> None:
        kind = str(msg.headers.get(":message-type", "event"))
        if kind == "error":
            code = str(msg.headers.get(":error-code", "InternalServerException"))
            raise StreamError(from_kind(code, None), list(out))
        try:
            payload = _decode(msg.payload) if msg.payload else w.StreamPayload()
        except (msgspec.DecodeError, UnicodeDecodeError):
            raise bad_upstream("bedrock", "stream event payload did not parse") from None
        if kind == "exception":
            exc = str(msg.headers.get(":exception-type", "InternalServerException"))
            raise StreamError(from_kind(exc, None), list(out))
        event = msg.headers.get(":event-type")
        f = self._chunks
        if event == "messageStart":
            out.append(f.role())
        elif event == "contentBlockStart":
            start = payload.start.tool_use if payload.start else None
            if start is not None and payload.content_block_index is not None:
                if start.name == STRUCTURED_OUTPUT_TOOL:
                    self._tools[payload.content_block_index] = -1
                    self._structured = True
                else:
                    index = sum(1 for v in self._tools.values() if v >= 0)
                    self._tools[payload.content_block_index] = index
                    call_id = start.tool_use_id
                    if index == 0 and len(self._signatures) == 1:
                        call_id = signatures.join(call_id, self._signatures[0])
                    out.append(f.tool_start(index, call_id, start.name))
        elif event == "contentBlockDelta" and payload.delta is not None:
            d = payload.delta
            if d.text:
                out.append(f.text(d.text))
            elif d.tool_use is not None and d.tool_use.input:
                tool_index = self._tools.get(payload.content_block_index or 0)
                if tool_index == -1:
                    out.append(f.text(d.tool_use.input))
                elif tool_index is not None:
                    out.append(f.tool_args(tool_index, d.tool_use.input))
            elif d.reasoning_content is not None and d.reasoning_content.text:
                out.append(f.reasoning(d.reasoning_content.text))
            elif d.reasoning_content is not None and d.reasoning_content.signature:
                self._signatures.append(d.reasoning_content.signature)
        elif event == "messageStop":
            reason = finish_reason(payload.stop_reason) or "stop"
            if reason == "tool_calls" and self._structured and all(v < 0 for v in self._tools.values()):
                reason = "stop"
            out.append(f.finish(reason))
        elif event == "metadata":
            u = usage(payload.usage)
            if u is not None:
                out.append(f.usage(u))
        elif event == "contentBlockStop":
            return
        else:
            log.debug("bedrock: skipped unknown stream event %r", event)
