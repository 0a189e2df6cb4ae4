"""Canonical answers rendered as Cohere v2 chat JSON and v2 stream events."""

from __future__ import annotations

from typing import Any

from adapters.canonical import ChatChunk, ChatResponse, Usage
from adapters.wirekit.jsonio import encode
from adapters.wirekit.sse import frame

FINISH_BACK = {"stop": "COMPLETE", "length": "MAX_TOKENS", "tool_calls": "TOOL_CALL"}


def cohere_usage(u: Usage | None) -> dict[str, Any]:
    if u is None:
        return {}
    tokens = {"input_tokens": u.prompt_tokens, "output_tokens": u.completion_tokens}
    out: dict[str, Any] = {"billed_units": tokens, "tokens": tokens}
    if u.cached_tokens:
        out["cached_tokens"] = u.cached_tokens
    return out


def render_response(resp: ChatResponse) -> bytes:
    choice = resp.choices[0]
    msg = choice.message
    calls = msg.tool_calls or []
    message: dict[str, Any] = {"role": "assistant"}
    content: list[dict[str, Any]] = []
    if msg.reasoning_content and not calls:
        content.append({"type": "thinking", "thinking": msg.reasoning_content})
    if msg.content:
        content.append({"type": "text", "text": msg.content})
    if content:
        message["content"] = content
    if calls:
        if msg.reasoning_content:
            message["tool_plan"] = msg.reasoning_content  # Cohere's reasoning before tool calls
        message["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.function.name, "arguments": c.function.arguments},
            }
            for c in calls
        ]
    body = {
        "id": resp.id,
        "finish_reason": FINISH_BACK.get(choice.finish_reason or "stop", "COMPLETE"),
        "message": message,
        "usage": cohere_usage(resp.usage),
    }
    return encode(body)


def _event(payload: dict[str, Any]) -> bytes:
    return frame(str(payload["type"]), encode(payload))


class StreamRenderer:
    def __init__(self) -> None:
        self._started = False
        self._open: tuple[str, int] | None = None
        self._content_index = 0
        self._finish: str | None = None
        self._usage: Usage | None = None

    def feed(self, chunk: ChatChunk) -> bytes:
        out: list[bytes] = []
        if not self._started:
            self._started = True
            start = {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}
            out.append(_event({"id": chunk.id, "type": "message-start", "delta": {"message": start}}))
        if chunk.usage is not None:
            self._usage = chunk.usage
        for choice in chunk.choices[:1]:
            d = choice.delta
            if d.reasoning_content:
                out.append(self._close())
                out.append(
                    _event(
                        {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": d.reasoning_content}}}
                    )
                )
            if d.content:
                if self._open != ("content", 0):
                    out.append(self._close())
                    self._open = ("content", 0)
                    out.append(
                        _event(
                            {
                                "type": "content-start",
                                "index": self._content_index,
                                "delta": {"message": {"content": {"type": "text", "text": ""}}},
                            }
                        )
                    )
                out.append(
                    _event(
                        {
                            "type": "content-delta",
                            "index": self._content_index,
                            "delta": {"message": {"content": {"text": d.content}}},
                        }
                    )
                )
            for tc in d.tool_calls or []:
                fn = tc.function
                if self._open != ("tool", tc.index):
                    out.append(self._close())
                    self._open = ("tool", tc.index)
                    call = {
                        "id": tc.id or "",
                        "type": "function",
                        "function": {"name": (fn.name if fn else "") or "", "arguments": ""},
                    }
                    out.append(
                        _event(
                            {
                                "type": "tool-call-start",
                                "index": tc.index,
                                "delta": {"message": {"tool_calls": call}},
                            }
                        )
                    )
                if fn is not None and fn.arguments:
                    out.append(
                        _event(
                            {
                                "type": "tool-call-delta",
                                "index": tc.index,
                                "delta": {
                                    "message": {"tool_calls": {"function": {"arguments": fn.arguments}}}
                                },
                            }
                        )
                    )
            if choice.finish_reason:
                self._finish = choice.finish_reason
        return b"".join(out)

    def finish(self) -> bytes:
        end = {
            "type": "message-end",
            "delta": {
                "finish_reason": FINISH_BACK.get(self._finish or "stop", "COMPLETE"),
                "usage": cohere_usage(self._usage),
            },
        }
        return self._close() + _event(end) + b"data: [DONE]\n\n"

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        kind, index = self._open
        self._open = None
        if kind == "content":
            self._content_index += 1
            return _event({"type": "content-end", "index": self._content_index - 1})
        return _event({"type": "tool-call-end", "index": index})
