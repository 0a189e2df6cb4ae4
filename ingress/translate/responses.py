"""The OpenAI Responses API, translated through chat for providers that do
not serve it: a Responses request -> canonical ChatRequest, and canonical
responses / chunk streams -> Responses objects and events.

What has no chat equivalent is refused with a clear 400 instead of being
dropped: ``previous_response_id`` and ``store: true`` (server-side state),
``background``, and built-in tools (web search, file search, ...)."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from adapters.base import CodecError, StreamError
from adapters.canonical import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    CompletionTokensDetails,
    ContentPart,
    FunctionCall,
    FunctionDef,
    ImagePart,
    ImageURL,
    JSONSchemaSpec,
    Message,
    PromptTokensDetails,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceFunction,
    ToolChoiceNamed,
    Usage,
)
from adapters.wirekit.chunks import ChunkFactory
from adapters.wirekit.errors import make
from adapters.wirekit.sse import SSEEvent, SSEParser
from ingress.translate.grammar import Failure, StreamEncoder

_encoder = msgspec.json.Encoder()
_any: msgspec.json.Decoder[Any] = msgspec.json.Decoder()

NATIVE_ONLY = "feature_requires_native_responses_target"


class Untranslatable(CodecError):
    """A Responses feature that only a native Responses provider can serve."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(
            make(
                "invalid_request",
                f"{what} needs a provider that serves the Responses API natively; "
                "this model's provider is reached through chat completions.",
            )
        )


def _bad(message: str) -> CodecError:
    return CodecError(make("invalid_request", message))


# --- request: Responses -> canonical ------------------------------------------------------


def _parts(content: Any, role: str) -> str | list[ContentPart]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _bad(f"input message content must be a string or an array (role {role}).")
    parts: list[ContentPart] = []
    for p in content:
        kind = p.get("type") if isinstance(p, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append(TextPart(text=str(p.get("text", ""))))
        elif kind == "input_image":
            url = p.get("image_url")
            if not isinstance(url, str):
                raise _bad("input_image needs an image_url (file_id images need a native target).")
            parts.append(ImagePart(image_url=ImageURL(url=url, detail=p.get("detail"))))
        elif kind == "refusal":
            parts.append(TextPart(text=str(p.get("refusal", ""))))
        else:
            raise _bad(f"input content part type {kind!r} cannot be translated to chat.")
    if all(isinstance(p, TextPart) for p in parts) and role != "user":
        return "".join(p.text for p in parts if isinstance(p, TextPart))
    return parts


def _messages(items: Any, instructions: str | None) -> list[Message]:
    out: list[Message] = []
    if instructions:
        out.append(Message(role="system", content=instructions))
    if isinstance(items, str):
        out.append(Message(role="user", content=items))
        return out
    if not isinstance(items, list):
        raise _bad("input must be a string or an array of input items.")
    reasoning: str | None = None
    for item in items:
        if not isinstance(item, dict):
            raise _bad("every input item must be an object.")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise _bad(f"input message role {role!r} is not one of user, assistant, system, developer.")
            out.append(Message(role=role, content=_parts(item.get("content"), role)))
        elif kind == "function_call":
            call = ToolCall(
                id=str(item.get("call_id", "")),
                function=FunctionCall(
                    name=str(item.get("name", "")), arguments=str(item.get("arguments", ""))
                ),
            )
            last = out[-1] if out else None
            if last is not None and last.role == "assistant" and last.tool_calls is not None:
                last.tool_calls.append(call)
            else:
                out.append(Message(role="assistant", tool_calls=[call], reasoning_content=reasoning))
                reasoning = None
        elif kind == "function_call_output":
            output = item.get("output", "")
            out.append(
                Message(
                    role="tool",
                    tool_call_id=str(item.get("call_id", "")),
                    content=output if isinstance(output, str) else _encoder.encode(output).decode(),
                )
            )
        elif kind == "reasoning":
            summary = item.get("summary") or []
            reasoning = "".join(s.get("text", "") for s in summary if isinstance(s, dict)) or None
        elif kind == "item_reference":
            raise Untranslatable("an item_reference input")
        else:
            raise _bad(f"input item type {kind!r} cannot be translated to chat.")
    return out


def _tools(raw: Any) -> list[Tool] | None:
    if not raw:
        return None
    tools: list[Tool] = []
    for t in raw:
        kind = t.get("type") if isinstance(t, dict) else None
        if kind != "function":
            raise Untranslatable(f"the built-in tool {kind!r}")
        tools.append(
            Tool(
                function=FunctionDef(
                    name=str(t.get("name", "")),
                    description=t.get("description"),
                    parameters=t.get("parameters"),
                    strict=t.get("strict"),
                )
            )
        )
    return tools


def _tool_choice(raw: Any) -> ToolChoice | None:
    if raw is None or isinstance(raw, str):
        return raw
    if isinstance(raw, dict) and raw.get("type") == "function" and raw.get("name"):
        return ToolChoiceNamed(function=ToolChoiceFunction(name=str(raw["name"])))
    raise Untranslatable("a tool_choice naming a built-in tool")


def _format(text: Any) -> ResponseFormat | None:
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict):
        return None
    kind = fmt.get("type")
    if kind == "json_schema":
        return ResponseFormat(
            type="json_schema",
            json_schema=JSONSchemaSpec(
                name=str(fmt.get("name", "output")),
                schema=fmt.get("schema"),
                description=fmt.get("description"),
                strict=fmt.get("strict"),
            ),
        )
    if kind in ("json_object", "text"):
        return ResponseFormat(type=kind)
    raise _bad(f"text.format type {kind!r} is not supported.")


def decode_request(raw: bytes) -> ChatRequest:
    try:
        body = _any.decode(raw)
    except msgspec.DecodeError:
        raise _bad("We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise _bad("The request body must be a JSON object.")
    if body.get("previous_response_id"):
        raise Untranslatable("previous_response_id")
    if body.get("store") is True:
        raise Untranslatable("store=true")
    if body.get("background") is True:
        raise Untranslatable("background=true")
    if body.get("conversation"):
        raise Untranslatable("conversation")
    if "input" not in body:
        raise _bad("input is required.")
    instructions = body.get("instructions")
    messages = _messages(body["input"], instructions if isinstance(instructions, str) else None)
    if not any(m.role != "system" for m in messages):
        raise _bad("input must contain at least one message.")
    reasoning = body.get("reasoning")
    effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
    stream = body.get("stream") is True
    return ChatRequest(
        model=str(body.get("model", "")),
        messages=messages,
        stream=stream or None,
        max_completion_tokens=body.get("max_output_tokens"),
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        tools=_tools(body.get("tools")),
        tool_choice=_tool_choice(body.get("tool_choice")),
        parallel_tool_calls=body.get("parallel_tool_calls"),
        response_format=_format(body.get("text")),
        reasoning_effort=effort,
        user=body.get("user") if isinstance(body.get("user"), str) else None,
        metadata=body.get("metadata") if isinstance(body.get("metadata"), dict) else None,
    )


def needs_native(raw_body: dict[str, Any]) -> bool:
    """Whether the request uses something only a native target keeps."""
    tools = raw_body.get("tools") or []
    return bool(
        raw_body.get("previous_response_id")
        or raw_body.get("store") is True
        or any(isinstance(t, dict) and t.get("type") != "function" for t in tools)
    )


# --- response: canonical -> Responses ----------------------------------------------------------


def usage_json(usage: Usage | None) -> dict[str, Any]:
    u = usage or Usage()
    total = u.total_tokens or u.prompt_tokens + u.completion_tokens
    return {
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": total,
    }


def _response_id(source: str) -> str:
    return "resp_" + (source or "nexus").replace("chatcmpl-", "")


def _envelope(rid: str, model: str, created: int, status: str, output: list[Any]) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "metadata": {},
        "usage": None,
    }


def _message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}]
        if status == "completed"
        else [],
    }


def _call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def _reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    return {"type": "reasoning", "id": item_id, "summary": [{"type": "summary_text", "text": text}]}


def to_response(resp: ChatResponse, model: str) -> dict[str, Any]:
    base = resp.id or "nexus"
    output: list[Any] = []
    status = "completed"
    incomplete = None
    if resp.choices:
        choice = resp.choices[0]
        msg = choice.message
        if msg.reasoning_content:
            output.append(_reasoning_item(f"rs_{base}", msg.reasoning_content))
        if msg.content or msg.refusal or not msg.tool_calls:
            output.append(_message_item(f"msg_{base}", msg.content or msg.refusal or ""))
        for i, call in enumerate(msg.tool_calls or ()):
            output.append(_call_item(f"fc_{base}_{i}", call.id, call.function.name, call.function.arguments))
        if choice.finish_reason == "length":
            status, incomplete = "incomplete", {"reason": "max_output_tokens"}
    out = _envelope(_response_id(resp.id), model, resp.created or int(time.time()), status, output)
    out["incomplete_details"] = incomplete
    out["usage"] = usage_json(resp.usage)
    return out


def encode_response(resp: ChatResponse, model: str) -> bytes:
    return _encoder.encode(to_response(resp, model))


# --- stream: canonical chunks -> Responses events --------------------------------------------


class ResponsesEvents:
    """Canonical chunks -> the Responses event grammar: response.created,
    an output item per reasoning summary / message / function call (added,
    deltas, done), then response.completed with usage."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.seq = 0
        self.rid = ""
        self.created = int(time.time())
        self.started = False
        self.output: list[dict[str, Any]] = []
        self.open: dict[str, Any] | None = None  # the item being streamed
        self.open_key: tuple[str, int] | None = None
        self.text: list[str] = []
        self.finish_reason: str | None = None
        self.usage: Usage | None = None

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + _encoder.encode(payload) + b"\n\n"

    def _start(self, chunk_id: str) -> bytes:
        self.started = True
        self.rid = _response_id(chunk_id)
        env = _envelope(self.rid, self.model, self.created, "in_progress", [])
        return self._event("response.created", response=env) + self._event(
            "response.in_progress", response=env
        )

    def _close(self) -> bytes:
        item = self.open
        if item is None:
            return b""
        self.open, self.open_key = None, None
        index = len(self.output)
        out = b""
        text = "".join(self.text)
        self.text = []
        if item["type"] == "message":
            part = {"type": "output_text", "text": text, "annotations": []}
            out += self._event(
                "response.output_text.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                text=text,
                logprobs=[],
            )
            out += self._event(
                "response.content_part.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=part,
            )
            item = _message_item(item["id"], text)
        elif item["type"] == "function_call":
            item = {**item, "arguments": text, "status": "completed"}
            out += self._event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                arguments=text,
            )
        else:
            out += self._event(
                "response.reasoning_summary_text.done",
                item_id=item["id"],
                output_index=index,
                summary_index=0,
                text=text,
            )
            item = _reasoning_item(item["id"], text)
        out += self._event("response.output_item.done", output_index=index, item=item)
        self.output.append(item)
        return out

    def _open(self, key: tuple[str, int], item: dict[str, Any]) -> bytes:
        if self.open_key == key:
            return b""
        out = self._close()
        self.open, self.open_key = item, key
        index = len(self.output)
        out += self._event("response.output_item.added", output_index=index, item=item)
        if item["type"] == "message":
            part = {"type": "output_text", "text": "", "annotations": []}
            out += self._event(
                "response.content_part.added",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=part,
            )
        elif item["type"] == "reasoning":
            part = {"type": "summary_text", "text": ""}
            out += self._event(
                "response.reasoning_summary_part.added",
                item_id=item["id"],
                output_index=index,
                summary_index=0,
                part=part,
            )
        return out

    def feed(self, chunk: ChatChunk) -> bytes:
        out = b"" if self.started else self._start(chunk.id)
        if chunk.usage is not None:
            self.usage = chunk.usage
        base = self.rid[5:]
        for choice in chunk.choices[:1]:
            d = choice.delta
            index = len(self.output)
            if d.reasoning_content:
                out += self._open(
                    ("reasoning", -1), {"type": "reasoning", "id": f"rs_{base}_{index}", "summary": []}
                )
                self.text.append(d.reasoning_content)
                out += self._event(
                    "response.reasoning_summary_text.delta",
                    item_id=self.open["id"] if self.open else "",
                    output_index=len(self.output),
                    summary_index=0,
                    delta=d.reasoning_content,
                )
            if d.content:
                out += self._open(
                    ("message", -1), _message_item(f"msg_{base}_{len(self.output)}", "", "in_progress")
                )
                self.text.append(d.content)
                out += self._event(
                    "response.output_text.delta",
                    item_id=self.open["id"] if self.open else "",
                    output_index=len(self.output),
                    content_index=0,
                    delta=d.content,
                    logprobs=[],
                )
            for tc in d.tool_calls or ():
                fn = tc.function
                if self.open_key != ("call", tc.index):
                    item = _call_item(
                        f"fc_{base}_{len(self.output)}",
                        tc.id or "",
                        (fn.name if fn else "") or "",
                        "",
                        "in_progress",
                    )
                    out += self._open(("call", tc.index), item)
                if fn is not None and fn.arguments and self.open is not None:
                    self.text.append(fn.arguments)
                    out += self._event(
                        "response.function_call_arguments.delta",
                        item_id=self.open["id"],
                        output_index=len(self.output),
                        delta=fn.arguments,
                    )
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
        return out

    def finish(self) -> bytes:
        out = b"" if self.started else self._start("")
        out += self._close()
        status = "incomplete" if self.finish_reason == "length" else "completed"
        env = _envelope(self.rid, self.model, self.created, status, self.output)
        if status == "incomplete":
            env["incomplete_details"] = {"reason": "max_output_tokens"}
        env["usage"] = usage_json(self.usage)
        kind = "response.incomplete" if status == "incomplete" else "response.completed"
        return out + self._event(kind, response=env)

    def error(self, failure: Failure) -> bytes:
        out = b"" if self.started else self._start("")
        env = _envelope(self.rid, self.model, self.created, "failed", self.output)
        env["error"] = {
            "code": "server_error" if failure.status >= 500 else failure.code,
            "message": failure.message,
        }
        return out + self._event("response.failed", response=env)


class Responses:
    name = "responses"

    def decode(self, raw: bytes) -> ChatRequest:
        return decode_request(raw)

    def encode_response(self, resp: ChatResponse, model: str) -> bytes:
        return encode_response(resp, model)

    def stream_encoder(self, model: str, include_usage: bool) -> StreamEncoder:
        return ResponsesEvents(model)

    def error_body(self, failure: Failure) -> bytes:
        return _encoder.encode(
            {
                "error": {
                    "message": failure.message,
                    "type": failure.type,
                    "code": failure.code,
                    "param": failure.param,
                }
            }
        )


RESPONSES = Responses()


# --- native passthrough: usage from the provider's Responses payloads -------------------------


def native_usage(payload: Any) -> Usage | None:
    """Usage from a Responses object (unary body, or the ``response`` of a
    response.completed / response.incomplete / response.failed event)."""
    if not isinstance(payload, dict):
        return None
    u = payload.get("usage")
    if not isinstance(u, dict):
        return None
    cached = (u.get("input_tokens_details") or {}).get("cached_tokens", 0) or 0
    reasoning = (u.get("output_tokens_details") or {}).get("reasoning_tokens", 0) or 0
    prompt, completion = int(u.get("input_tokens", 0) or 0), int(u.get("output_tokens", 0) or 0)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=int(u.get("total_tokens", 0) or prompt + completion),
        prompt_tokens_details=PromptTokensDetails(cached_tokens=int(cached)) if cached else None,
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=int(reasoning))
        if reasoning
        else None,
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
        f = self._chunks
        for ev in events:
            try:
                payload = _any.decode(ev.data)
            except msgspec.DecodeError:
                continue
            if not isinstance(payload, dict):
                continue
            kind = payload.get("type", ev.event)
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
        return out
