"""The Anthropic Messages grammar, for Anthropic clients calling Nexus's
/v1/messages: a Messages request (or a count_tokens one) -> canonical
ChatRequest, and a canonical response, chunk stream or failure -> the
Messages JSON, SSE events and error envelope, whichever provider served it.

Requests are read with the provider side's wire structs (the same API,
``adapters.anthropic.wire``); what is written is typed in
``ingress.translate.anthropic_wire``."""

from __future__ import annotations

from typing import Any

import msgspec

from adapters.anthropic import caching
from adapters.anthropic import wire as w
from adapters.anthropic.mapping import anthropic_usage, stop_reason
from adapters.canonical import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    ContentPart,
    FilePart,
    FileRef,
    FunctionCall,
    FunctionDef,
    ImagePart,
    ImageURL,
    Message,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceFunction,
    ToolChoiceNamed,
    Usage,
)
from adapters.wirekit.errors import unsupported
from adapters.wirekit.jsonio import decode_inbound, dumps, encode, parse_arguments
from adapters.wirekit.media import data_uri
from adapters.wirekit.sse import frame
from ingress.translate import anthropic_wire as aw
from ingress.translate.grammar import Failure, StreamEncoder

API = "/v1/messages"
COUNT_TOKENS_API = "/v1/messages/count_tokens"

# --- request: Anthropic -> canonical ------------------------------------------------


def _document(block: w.DocumentBlock) -> ContentPart:
    src = block.source
    if isinstance(src, w.Base64Source):
        return FilePart(file=FileRef(file_data=data_uri(src.media_type, src.data), filename=block.title))
    if isinstance(src, w.PlainTextSource):
        return TextPart(text=src.data)
    raise unsupported(API, "document blocks with a url source cannot be translated; send base64")


def _part(block: w.TextBlock | w.ImageBlock) -> ContentPart:
    if isinstance(block, w.TextBlock):
        return TextPart(text=block.text)
    src = block.source
    url = data_uri(src.media_type, src.data) if isinstance(src, w.Base64Source) else src.url
    return ImagePart(image_url=ImageURL(url=url))


def _tool_result_text(block: w.ToolResultBlock) -> str | list[ContentPart]:
    content = block.content
    if content is None:
        text: str | list[ContentPart] = ""
    elif isinstance(content, str):
        text = content
    else:
        parts = [_part(b) for b in content]
        text = (
            parts
            if any(isinstance(p, ImagePart) for p in parts)
            else "".join(p.text for p in parts if isinstance(p, TextPart))
        )
    if block.is_error and isinstance(text, str):
        # OpenAI-shaped tool messages have no error flag; say it in words.
        text = f"Error: {text}" if text else "Error"
    return text


def _convert_message(m: w.MessageParam) -> list[Message]:
    if isinstance(m.content, str):
        return [Message(role=m.role, content=m.content)]
    if m.role == "assistant":
        texts: list[str] = []
        reasoning: list[str] = []
        calls: list[ToolCall] = []
        for b in m.content:
            if isinstance(b, w.TextBlock):
                texts.append(b.text)
            elif isinstance(b, w.ThinkingBlock):
                reasoning.append(b.thinking)
            elif isinstance(b, w.ToolUseBlock):
                calls.append(ToolCall(id=b.id, function=FunctionCall(name=b.name, arguments=dumps(b.input))))
        return [
            Message(
                role="assistant",
                content="".join(texts) if texts or not calls else None,
                tool_calls=calls or None,
                reasoning_content="".join(reasoning) or None,
            )
        ]
    # A user turn: tool results become tool messages (first, as OpenAI
    # requires them right after the assistant's calls), the rest one user
    # message.
    out: list[Message] = []
    parts: list[ContentPart] = []
    for b in m.content:
        if isinstance(b, w.ToolResultBlock):
            out.append(Message(role="tool", tool_call_id=b.tool_use_id, content=_tool_result_text(b)))
        elif isinstance(b, w.TextBlock | w.ImageBlock):
            parts.append(_part(b))
        elif isinstance(b, w.DocumentBlock):
            parts.append(_document(b))
    if parts:
        only_text = all(isinstance(p, TextPart) for p in parts)
        content: str | list[ContentPart] = (
            "".join(p.text for p in parts if isinstance(p, TextPart))
            if only_text and len(parts) == 1
            else parts
        )
        out.append(Message(role="user", content=content))
    return out


def _tool_choice(tc: w.ToolChoiceParam | None) -> tuple[ToolChoice | None, bool | None]:
    if tc is None:
        return None, None
    parallel = False if tc.disable_parallel_tool_use else None
    if tc.type == "tool":
        return ToolChoiceNamed(function=ToolChoiceFunction(name=tc.name or "")), parallel
    return {"auto": "auto", "any": "required", "none": "none"}[tc.type], parallel


class _RawTools(msgspec.Struct):
    tools: list[dict[str, Any]] | None = None


def decode_request(body: bytes) -> ChatRequest:
    """An Anthropic Messages request body as a canonical ChatRequest; a body
    that is not a valid Messages request raises CodecError (400)."""
    return _canonical(decode_inbound(body, w.MessagesRequest, API), body)


def decode_count_tokens(body: bytes) -> ChatRequest:
    """A ``/v1/messages/count_tokens`` body as the canonical request whose
    prompt it counts (``max_tokens`` 1: it asks for no output)."""
    req = decode_inbound(body, w.CountTokensRequest, COUNT_TOKENS_API)
    as_messages = w.MessagesRequest(
        model=req.model,
        max_tokens=1,
        messages=req.messages,
        system=req.system,
        tools=req.tools,
        tool_choice=req.tool_choice,
        thinking=req.thinking,
    )
    return _canonical(as_messages, body)


def _canonical(req: w.MessagesRequest, body: bytes) -> ChatRequest:
    messages: list[Message] = []
    if req.system:
        system = req.system if isinstance(req.system, str) else "\n\n".join(b.text for b in req.system)
        messages.append(Message(role="system", content=system))
    for m in req.messages:
        messages.extend(_convert_message(m))
    client_tools = [t for t in req.tools or [] if t.type in (None, "custom")]
    tools = [
        Tool(function=FunctionDef(name=t.name, description=t.description, parameters=t.input_schema))
        for t in client_tools
    ] or None
    tool_choice, parallel = _tool_choice(req.tool_choice)
    ext: dict[str, Any] = {}
    if len(client_tools) != len(req.tools or []):
        # Anthropic server tools (web_search, code_execution, ...) have no
        # canonical form; they ride as raw JSON and only an Anthropic
        # target puts them back (anthropic.request.server_tools).
        raw = decode_inbound(body, _RawTools, API).tools or []
        ext["server_tools"] = [t for t in raw if t.get("type") not in (None, "custom")]
    if req.thinking is not None:
        ext["thinking"] = {"type": req.thinking.type, "budget_tokens": req.thinking.budget_tokens}
        if req.thinking.budget_tokens is None:
            del ext["thinking"]["budget_tokens"]
    if req.top_k is not None:
        ext["top_k"] = req.top_k
    if req.service_tier is not None:
        ext["service_tier"] = req.service_tier
    cc = caching.present(req)
    if cc is not None:
        # Caching markers cannot sit on canonical messages; asking for
        # caching keeps it on whichever provider serves the call.
        ext["cache_control"] = msgspec.to_builtins(cc)
    return ChatRequest(
        model=req.model,
        messages=messages,
        max_tokens=req.max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        stop=req.stop_sequences,
        stream=req.stream,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        user=req.metadata.user_id if req.metadata else None,
        nexus_ext={"anthropic": ext} if ext else None,
    )


# --- response: canonical -> Anthropic ----------------------------------------------


def to_messages_response(resp: ChatResponse, model: str | None = None) -> w.MessagesResponse:
    blocks: list[w.ContentBlock] = []
    finish = None
    if resp.choices:
        choice = resp.choices[0]
        finish = choice.finish_reason
        msg = choice.message
        if msg.reasoning_content:
            blocks.append(w.ContentBlock(type="thinking", thinking=msg.reasoning_content, signature=""))
        if msg.content:
            blocks.append(w.ContentBlock(type="text", text=msg.content))
        elif msg.refusal:
            blocks.append(w.ContentBlock(type="text", text=msg.refusal))
        for call in msg.tool_calls or []:
            blocks.append(
                w.ContentBlock(
                    type="tool_use",
                    id=call.id,
                    name=call.function.name,
                    input=parse_arguments(call.function.arguments),
                )
            )
    return w.MessagesResponse(
        id=resp.id,
        model=model or resp.model,
        content=blocks,
        stop_reason=stop_reason(finish),
        usage=anthropic_usage(resp.usage),
    )


def encode_response(resp: ChatResponse, model: str | None = None) -> bytes:
    return encode(to_messages_response(resp, model))


# https://docs.anthropic.com/en/api/errors: the type follows the HTTP status.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_body(failure: Failure) -> bytes:
    kind = _ERROR_TYPES.get(failure.status, "api_error" if failure.status >= 500 else "invalid_request_error")
    return encode(aw.ErrorEnvelope(error=aw.ErrorDetail(type=kind, message=failure.message)))


# --- stream: canonical chunks -> Anthropic SSE ------------------------------------------


class MessagesStreamEncoder:
    """Turns canonical chunks (from any provider) into the Anthropic event
    grammar: one message_start, content blocks opened and closed as the
    output switches between thinking, text and each tool call, then
    message_delta (stop_reason + usage) and message_stop; a failure is the
    ``event: error`` frame Anthropic clients understand."""

    def __init__(self, model: str, message_id: str = "") -> None:
        self._model = model
        self._id = message_id
        self._started = False
        self._open: tuple[str, int] | None = None  # (kind, canonical tool index)
        self._next_block = 0
        self._finish: str | None = None
        self._usage: Usage | None = None
        self._done = False

    def feed(self, chunk: ChatChunk) -> bytes:
        out: list[bytes] = []
        if not self._started:
            self._id = self._id or chunk.id
            out.append(self._message_start())
        if chunk.usage is not None:
            self._usage = chunk.usage
        for choice in chunk.choices[:1]:
            d = choice.delta
            if d.reasoning_content:
                out.append(self._ensure("thinking", -1, aw.ThinkingBlockStart()))
                out.append(self._delta(aw.ThinkingDelta(thinking=d.reasoning_content)))
            if d.content:
                out.append(self._ensure("text", -1, aw.TextBlockStart()))
                out.append(self._delta(aw.TextDelta(text=d.content)))
            for tc in d.tool_calls or []:
                fn = tc.function
                if self._open != ("tool", tc.index):
                    start = aw.ToolUseBlockStart(id=tc.id or "", name=(fn.name if fn else "") or "")
                    out.append(self._ensure("tool", tc.index, start))
                if fn is not None and fn.arguments:
                    out.append(self._delta(aw.InputJsonDelta(partial_json=fn.arguments)))
            if choice.finish_reason:
                self._finish = choice.finish_reason
        return b"".join(out)

    def finish(self) -> bytes:
        if self._done:
            return b""
        self._done = True
        out: list[bytes] = []
        if not self._started:
            out.append(self._message_start())
        out.append(self._close())
        delta = aw.StopDelta(stop_reason=stop_reason(self._finish))
        out.append(_event(aw.MessageDelta(delta=delta, usage=anthropic_usage(self._usage))))
        out.append(_event(aw.MessageStop()))
        return b"".join(out)

    def error(self, failure: Failure) -> bytes:
        return frame("error", error_body(failure))

    def _message_start(self) -> bytes:
        self._started = True
        return _event(aw.MessageStart(message=aw.StartMessage(id=self._id, model=self._model)))

    def _ensure(self, kind: str, tool_index: int, block: aw.BlockStart) -> bytes:
        if self._open == (kind, tool_index):
            return b""
        closed = self._close()
        self._open = (kind, tool_index)
        return closed + _event(aw.ContentBlockStart(index=self._next_block, content_block=block))

    def _delta(self, delta: aw.BlockDelta) -> bytes:
        return _event(aw.ContentBlockDelta(index=self._next_block, delta=delta))

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        index = self._next_block
        self._next_block += 1
        return _event(aw.ContentBlockStop(index=index))


_EVENT_NAMES: dict[type[aw.StreamEvent], str] = {
    aw.MessageStart: "message_start",
    aw.ContentBlockStart: "content_block_start",
    aw.ContentBlockDelta: "content_block_delta",
    aw.ContentBlockStop: "content_block_stop",
    aw.MessageDelta: "message_delta",
    aw.MessageStop: "message_stop",
}


def _event(event: aw.StreamEvent) -> bytes:
    return frame(_EVENT_NAMES[type(event)], encode(event))


class AnthropicMessages:
    name = "anthropic"

    def decode(self, raw: bytes) -> ChatRequest:
        return decode_request(raw)

    def encode_response(self, resp: ChatResponse, model: str) -> bytes:
        return encode_response(resp, model)

    def stream_encoder(self, model: str, include_usage: bool) -> StreamEncoder:
        return MessagesStreamEncoder(model)

    def error_body(self, failure: Failure) -> bytes:
        return error_body(failure)


ANTHROPIC_MESSAGES = AnthropicMessages()
