"""Anthropic SSE (message_start, content_block_*, message_delta,
message_stop, ping, error) -> canonical chunks."""

from __future__ import annotations

import msgspec

from adapters.anthropic import wire as w
from adapters.anthropic.errors import error_from_detail
from adapters.anthropic.mapping import STRUCTURED_OUTPUT_TOOL, finish_reason, log, usage
from adapters.base import StreamError
from adapters.canonical import ChatChunk
from adapters.wirekit import signatures
from adapters.wirekit.chunks import ChunkFactory
from adapters.wirekit.errors import bad_upstream
from adapters.wirekit.sse import SSEParser

_decode_event = msgspec.json.Decoder(w.StreamEvent).decode

# What a content block index is, so its deltas go to the right place.
_TEXT, _THINKING, _TOOL, _STRUCTURED, _OTHER = range(5)


class AnthropicStreamDecoder:
    def __init__(self) -> None:
        self._sse = SSEParser()
        self._chunks = ChunkFactory()
        self._blocks: dict[int, tuple[int, int]] = {}  # block index -> (kind, tool index)
        self._tools = 0
        self._structured = False
        self._usage = w.AnthropicUsage()
        self._finished = False
        self._signatures: list[str] = []
        self._redacted = False

    def feed(self, data: bytes) -> list[ChatChunk]:
        out: list[ChatChunk] = []
        for ev in self._sse.feed(data):
            self._event(ev.event, ev.data, out)
        return out

    def close(self) -> list[ChatChunk]:
        out: list[ChatChunk] = []
        for ev in self._sse.close():
            self._event(ev.event, ev.data, out)
        return out

    def _event(self, name: str, data: str, out: list[ChatChunk]) -> None:
        try:
            ev = _decode_event(data)
        except (msgspec.DecodeError, UnicodeDecodeError):
            if name in ("ping", ""):
                return
            raise bad_upstream("anthropic", f"stream event {name!r} did not parse") from None
        f = self._chunks
        kind = ev.type
        if kind == "message_start" and ev.message is not None:
            f.id, f.model = ev.message.id, ev.message.model
            self._merge_usage(ev.message.usage)
            out.append(f.role())
        elif kind == "content_block_start" and ev.content_block is not None and ev.index is not None:
            self._block_start(ev.index, ev.content_block, out)
        elif kind == "content_block_delta" and ev.delta is not None and ev.index is not None:
            self._block_delta(ev.index, ev.delta, out)
        elif kind == "message_delta":
            if ev.usage is not None:
                self._merge_usage(ev.usage)
            if ev.delta is not None and ev.delta.stop_reason is not None:
                reason = finish_reason(ev.delta.stop_reason)
                if self._structured and self._tools == 0 and reason == "tool_calls":
                    reason = "stop"
                out.append(f.finish(reason or "stop"))
        elif kind == "message_stop":
            if not self._finished:
                self._finished = True
                out.append(f.usage(usage(self._usage)))
        elif kind == "error":
            detail = ev.error or w.ErrorDetail()
            raise StreamError(error_from_detail(detail, None), list(out))
        elif kind in ("ping", "content_block_stop"):
            return
        else:
            log.debug("anthropic: skipped unknown stream event %r", kind)

    def _block_start(self, index: int, block: w.ContentBlock, out: list[ChatChunk]) -> None:
        f = self._chunks
        if block.type == "text":
            self._blocks[index] = (_TEXT, -1)
            if block.text:
                out.append(f.text(block.text))
        elif block.type == "thinking":
            self._blocks[index] = (_THINKING, -1)
            if block.thinking:
                out.append(f.reasoning(block.thinking))
        elif block.type == "tool_use" and block.name == STRUCTURED_OUTPUT_TOOL:
            self._blocks[index] = (_STRUCTURED, -1)
            self._structured = True
        elif block.type == "tool_use":
            tool_index = self._tools
            self._tools += 1
            self._blocks[index] = (_TOOL, tool_index)
            call_id = block.id or ""
            if tool_index == 0 and len(self._signatures) == 1 and not self._redacted:
                call_id = signatures.join(call_id, self._signatures[0])  # as in response.py
            out.append(f.tool_start(tool_index, call_id, block.name or ""))
        else:
            self._blocks[index] = (_OTHER, -1)
            self._redacted = self._redacted or block.type == "redacted_thinking"
            if block.type != "redacted_thinking":
                log.warning("anthropic: skipped unknown content block type %r in stream", block.type)

    def _block_delta(self, index: int, delta: w.StreamDelta, out: list[ChatChunk]) -> None:
        f = self._chunks
        kind, tool_index = self._blocks.get(index, (_OTHER, -1))
        if delta.type == "text_delta" and delta.text:
            out.append(f.text(delta.text))
        elif delta.type == "thinking_delta" and delta.thinking:
            out.append(f.reasoning(delta.thinking))
        elif delta.type == "signature_delta" and delta.signature:
            self._signatures.append(delta.signature)
        elif delta.type == "input_json_delta" and delta.partial_json:
            if kind == _TOOL:
                out.append(f.tool_args(tool_index, delta.partial_json))
            elif kind == _STRUCTURED:
                out.append(f.text(delta.partial_json))

    def _merge_usage(self, u: w.AnthropicUsage) -> None:
        # message_start carries the input side; message_delta carries
        # cumulative output (and, on newer API versions, input) counts.
        for field in (
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
        ):
            value = getattr(u, field)
            if value is not None:
                setattr(self._usage, field, value)
