"""Canonical answers rendered as Bedrock Converse JSON and ConverseStream
event-stream bytes."""

from __future__ import annotations

from typing import Any

from adapters.bedrock import wire as w
from adapters.bedrock.eventstream import encode_message
from adapters.canonical import ChatChunk, ChatResponse, Usage
from adapters.wirekit import signatures
from adapters.wirekit.jsonio import encode, parse_arguments

STOP_BACK = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "content_filtered",
}


def token_usage(u: Usage | None) -> w.TokenUsage:
    if u is None:
        return w.TokenUsage()
    read, write = u.cached_tokens, u.cache_creation_tokens
    return w.TokenUsage(
        input_tokens=max(0, u.prompt_tokens - read - write),
        output_tokens=u.completion_tokens,
        total_tokens=u.prompt_tokens + u.completion_tokens,
        cache_read_input_tokens=read,
        cache_write_input_tokens=write,
    )


def render_response(resp: ChatResponse) -> bytes:
    choice = resp.choices[0]
    msg = choice.message
    blocks: list[w.ContentBlock] = []
    calls = msg.tool_calls or []
    if msg.reasoning_content:
        sig = signatures.split(calls[0].id)[1] if calls else None
        text = w.ReasoningText(text=msg.reasoning_content, signature=sig)
        blocks.append(w.ContentBlock(reasoning_content=w.ReasoningContent(reasoning_text=text)))
    if msg.content:
        blocks.append(w.ContentBlock(text=msg.content))
    for call in calls:
        blocks.append(
            w.ContentBlock(
                tool_use=w.ToolUseBlock(
                    tool_use_id=signatures.split(call.id)[0],
                    name=call.function.name,
                    input=parse_arguments(call.function.arguments),
                )
            )
        )
    return encode(
        w.ConverseResponse(
            output=w.ConverseOutput(message=w.BedrockMessage(role="assistant", content=blocks)),
            stop_reason=STOP_BACK.get(choice.finish_reason or "stop", "end_turn"),
            usage=token_usage(resp.usage),
        )
    )


def _event(name: str, payload: Any) -> bytes:
    return encode_message(
        {":event-type": name, ":content-type": "application/json", ":message-type": "event"}, encode(payload)
    )


class StreamRenderer:
    """Canonical chunks -> ConverseStream events, opening and closing
    content blocks as the output switches between reasoning, text and each
    tool call."""

    def __init__(self) -> None:
        self._started = False
        self._open: tuple[str, int] | None = None
        self._block = 0
        self._finish: str | None = None
        self._usage: Usage | None = None

    def feed(self, chunk: ChatChunk) -> bytes:
        out: list[bytes] = []
        if not self._started:
            self._started = True
            out.append(_event("messageStart", {"role": "assistant"}))
        if chunk.usage is not None:
            self._usage = chunk.usage
        for choice in chunk.choices[:1]:
            d = choice.delta
            if d.reasoning_content:
                out.append(self._switch("reasoning", -1))
                out.append(self._delta({"reasoningContent": {"text": d.reasoning_content}}))
            if d.content:
                out.append(self._switch("text", -1))
                out.append(self._delta({"text": d.content}))
            for tc in d.tool_calls or []:
                if self._open != ("tool", tc.index):
                    out.append(self._switch("tool", tc.index))
                    start = {
                        "toolUse": {
                            "toolUseId": signatures.split(tc.id or "")[0],
                            "name": (tc.function.name if tc.function else "") or "",
                        }
                    }
                    out.append(
                        _event("contentBlockStart", {"contentBlockIndex": self._block, "start": start})
                    )
                if tc.function and tc.function.arguments:
                    out.append(self._delta({"toolUse": {"input": tc.function.arguments}}))
            if choice.finish_reason:
                self._finish = choice.finish_reason
        return b"".join(out)

    def finish(self) -> bytes:
        out = [self._close()]
        out.append(_event("messageStop", {"stopReason": STOP_BACK.get(self._finish or "stop", "end_turn")}))
        u = token_usage(self._usage)
        usage = {
            "inputTokens": u.input_tokens,
            "outputTokens": u.output_tokens,
            "totalTokens": u.total_tokens,
            "cacheReadInputTokens": u.cache_read_input_tokens,
            "cacheWriteInputTokens": u.cache_write_input_tokens,
        }
        out.append(_event("metadata", {"usage": usage, "metrics": {"latencyMs": 0}}))
        return b"".join(out)

    def _switch(self, kind: str, index: int) -> bytes:
        if self._open == (kind, index):
            return b""
        closed = self._close()
        self._open = (kind, index)
        return closed

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return _event("contentBlockDelta", {"contentBlockIndex": self._block, "delta": delta})

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        index = self._block
        self._block += 1
        return _event("contentBlockStop", {"contentBlockIndex": index})
