"""Canonical answers rendered as Gemini wire bytes (generateContent JSON,
streamGenerateContent SSE)."""

from __future__ import annotations

from adapters.canonical import ChatChunk, ChatResponse, Usage
from adapters.gemini import wire as w
from adapters.wirekit import signatures
from adapters.wirekit.jsonio import encode, parse_arguments
from adapters.wirekit.sse import frame

FINISH_BACK = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP", "content_filter": "SAFETY"}


def usage_metadata(u: Usage | None) -> w.UsageMetadata | None:
    if u is None:
        return None
    return w.UsageMetadata(
        prompt_token_count=u.prompt_tokens,
        candidates_token_count=u.completion_tokens - u.reasoning_tokens,
        thoughts_token_count=u.reasoning_tokens,
        cached_content_token_count=u.cached_tokens,
        total_token_count=u.total_tokens or u.prompt_tokens + u.completion_tokens,
    )


def _call_part(call_id: str, name: str, arguments: str) -> w.Part:
    base, sig = signatures.split(call_id)
    args = parse_arguments(arguments)
    return w.Part(
        function_call=w.FunctionCall(
            name=name, args=args if isinstance(args, dict) else {"value": args}, id=base or None
        ),
        thought_signature=sig,
    )


def render_response(resp: ChatResponse) -> bytes:
    candidates = []
    for choice in resp.choices:
        msg = choice.message
        parts: list[w.Part] = []
        if msg.reasoning_content:
            parts.append(w.Part(text=msg.reasoning_content, thought=True))
        if msg.content:
            parts.append(w.Part(text=msg.content))
        for call in msg.tool_calls or []:
            parts.append(_call_part(call.id, call.function.name, call.function.arguments))
        candidates.append(
            w.Candidate(
                content=w.Content(role="model", parts=parts),
                finish_reason=FINISH_BACK.get(choice.finish_reason or "stop", "OTHER"),
                index=choice.index,
            )
        )
    return encode(
        w.GenerateContentResponse(
            candidates=candidates,
            usage_metadata=usage_metadata(resp.usage),
            model_version=resp.model or None,
            response_id=resp.id or None,
        )
    )


class StreamRenderer:
    """Canonical chunks -> ``data:`` frames.  Text and thoughts go out as
    they come; a function call is sent whole (as Gemini does) once its
    arguments are complete, i.e. at the finish chunk."""

    def __init__(self) -> None:
        self._calls: dict[int, list[str]] = {}  # index -> [id, name, args...]
        self._finish: str | None = None
        self._usage: Usage | None = None
        self._model = ""
        self._id = ""

    def feed(self, chunk: ChatChunk) -> bytes:
        self._model = self._model or chunk.model
        self._id = self._id or chunk.id
        if chunk.usage is not None:
            self._usage = chunk.usage
        out: list[bytes] = []
        for choice in chunk.choices[:1]:
            d = choice.delta
            parts: list[w.Part] = []
            if d.reasoning_content:
                parts.append(w.Part(text=d.reasoning_content, thought=True))
            if d.content:
                parts.append(w.Part(text=d.content))
            for tc in d.tool_calls or []:
                acc = self._calls.setdefault(tc.index, ["", ""])
                if tc.id:
                    acc[0] = tc.id
                if tc.function and tc.function.name:
                    acc[1] = tc.function.name
                if tc.function and tc.function.arguments:
                    acc.append(tc.function.arguments)
            if parts:
                out.append(self._frame(parts, None))
            if choice.finish_reason:
                self._finish = choice.finish_reason
        return b"".join(out)

    def finish(self) -> bytes:
        parts = [_call_part(a[0], a[1], "".join(a[2:])) for _, a in sorted(self._calls.items())]
        return self._frame(parts, FINISH_BACK.get(self._finish or "stop", "OTHER"), self._usage)

    def _frame(self, parts: list[w.Part], finish: str | None, u: Usage | None = None) -> bytes:
        resp = w.GenerateContentResponse(
            candidates=[w.Candidate(content=w.Content(role="model", parts=parts), finish_reason=finish)],
            usage_metadata=usage_metadata(u),
            model_version=self._model or None,
            response_id=self._id or None,
        )
        return frame(None, encode(resp))
