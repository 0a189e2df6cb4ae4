"""Text views of canonical requests and responses, and span redaction.

Hooks scan one string per stage: every text-bearing field (message text
parts, tool-call arguments, refusals) joined by newlines.  Spans come back in
that string's coordinates; redaction maps them onto the segments and
rebuilds the canonical object, so what is forwarded, returned and stored is
the same redacted body.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import msgspec

from adapters.canonical import ChatRequest, ChatResponse, Message, TextPart
from ingress.hooks.types import Span

SEPARATOR = "\n"
_TOKEN_SAFE = re.compile(r"[^A-Z0-9]+")


def redaction_token(rule: str) -> str:
    name = _TOKEN_SAFE.sub("_", rule.upper()).strip("_") or "PII"
    return f"[REDACTED_{name}]"


def merge_spans(spans: Iterable[Span]) -> list[Span]:
    """Sort and merge overlapping spans (the earlier/longer one names the
    token), so a redaction never cuts a token in half."""
    ordered = sorted(spans, key=lambda s: (s.start, -(s.end - s.start)))
    out: list[Span] = []
    for s in ordered:
        if s.end <= s.start:
            continue
        if out and s.start < out[-1].end:
            last = out[-1]
            if s.end > last.end:
                out[-1] = Span(last.entity, last.start, s.end, max(last.score, s.score), last.rule)
            continue
        out.append(s)
    return out


def redact_text(text: str, spans: Sequence[Span]) -> str:
    parts: list[str] = []
    pos = 0
    for s in merge_spans(spans):
        parts.append(text[pos : s.start])
        parts.append(redaction_token(s.rule or s.entity))
        pos = s.end
    parts.append(text[pos:])
    return "".join(parts)


@dataclass(slots=True)
class TextView:
    """The stage's text as segments; ``text`` is their join."""

    segments: list[str]

    @property
    def text(self) -> str:
        return SEPARATOR.join(self.segments)

    def redact(self, spans: Sequence[Span]) -> TextView:
        merged = merge_spans(spans)
        if not merged:
            return self
        out: list[str] = []
        offset = 0
        for seg in self.segments:
            lo, hi = offset, offset + len(seg)
            local = [
                Span(s.entity, max(s.start, lo) - lo, min(s.end, hi) - lo, s.score, s.rule)
                for s in merged
                if s.start < hi and s.end > lo
            ]
            out.append(redact_text(seg, local) if local else seg)
            offset = hi + len(SEPARATOR)
        return TextView(out)


# --- requests -------------------------------------------------------------------


def _message_texts(m: Message) -> list[str]:
    out: list[str] = []
    if isinstance(m.content, str):
        out.append(m.content)
    elif m.content:
        out.extend(p.text for p in m.content if isinstance(p, TextPart))
    for tc in m.tool_calls or ():
        out.append(tc.function.arguments)
    return out


def request_view(req: ChatRequest) -> TextView:
    segs: list[str] = []
    for m in req.messages:
        segs.extend(_message_texts(m))
    return TextView(segs)


def apply_request_view(req: ChatRequest, view: TextView) -> ChatRequest:
    """A copy of ``req`` with the view's (redacted) segments written back in
    the order ``request_view`` read them."""
    it = iter(view.segments)
    messages: list[Message] = []
    for m in req.messages:
        content = m.content
        if isinstance(content, str):
            content = next(it)
        elif content:
            content = [
                TextPart(text=next(it)) if isinstance(p, TextPart) else p  # keep non-text parts as is
                for p in content
            ]
        tool_calls = m.tool_calls
        if tool_calls:
            tool_calls = [
                msgspec.structs.replace(tc, function=msgspec.structs.replace(tc.function, arguments=next(it)))
                for tc in tool_calls
            ]
        messages.append(msgspec.structs.replace(m, content=content, tool_calls=tool_calls))
    return msgspec.structs.replace(req, messages=messages)


# --- responses ------------------------------------------------------------------


def response_view(resp: ChatResponse) -> TextView:
    segs: list[str] = []
    for c in resp.choices:
        msg = c.message
        segs.append(msg.content or "")
        for tc in msg.tool_calls or ():
            segs.append(tc.function.arguments)
        if msg.refusal:
            segs.append(msg.refusal)
    return TextView(segs)


def apply_response_view(resp: ChatResponse, view: TextView) -> ChatResponse:
    it = iter(view.segments)
    choices = []
    for c in resp.choices:
        msg = c.message
        content_text = next(it)
        content = msg.content if msg.content is None and content_text == "" else content_text
        tool_calls = msg.tool_calls
        if tool_calls:
            tool_calls = [
                msgspec.structs.replace(tc, function=msgspec.structs.replace(tc.function, arguments=next(it)))
                for tc in tool_calls
            ]
        refusal = next(it) if msg.refusal else msg.refusal
        new_msg = msgspec.structs.replace(msg, content=content, tool_calls=tool_calls, refusal=refusal)
        choices.append(msgspec.structs.replace(c, message=new_msg))
    return msgspec.structs.replace(resp, choices=choices)
