"""The OpenAI Responses grammar, translated through chat for providers that
do not serve it: a Responses request -> canonical ChatRequest, and canonical
responses / chunk streams / failures -> Responses objects and events (the
shapes are ``ingress.translate.responses_wire``).

What has no chat equivalent is refused with a clear 400 instead of being
dropped: ``previous_response_id`` and ``store: true`` (server-side state),
``background``, and built-in tools (web search, file search, ...).  A
route with a native Responses target serves those instead
(``Untranslatable``); what it reads of the provider's answers is
``responses_native``.  Answers are written by ``responses_out``."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from adapters.base import CodecError
from adapters.canonical import (
    ChatRequest,
    ChatResponse,
    ContentPart,
    FunctionCall,
    FunctionDef,
    ImagePart,
    ImageURL,
    JSONSchemaSpec,
    Message,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceFunction,
    ToolChoiceNamed,
)
from adapters.wirekit.errors import make
from ingress.translate import openai_chat
from ingress.translate import responses_wire as rw
from ingress.translate.grammar import Failure, StreamEncoder
from ingress.translate.responses_out import ResponsesEvents, encode_response

_encoder = msgspec.json.Encoder()
_any: msgspec.json.Decoder[Any] = msgspec.json.Decoder()

ROLES: dict[str | None, Literal["user", "assistant", "system", "developer"]] = {
    "user": "user",
    "assistant": "assistant",
    "system": "system",
    "developer": "developer",
}


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


def _named(kind: Any, known: frozenset[str]) -> str:
    return repr(kind) if isinstance(kind, str) and kind in known else "of a type the API does not define"


# --- request: Responses -> canonical ------------------------------------------------------


def _typed_item(item: Any, index: int) -> rw.InputItem:
    """One input item as its struct; a kind chat cannot carry is named."""
    if not isinstance(item, dict):
        raise _bad("every input item must be an object.")
    kind = item.get("type", "message")
    if not isinstance(kind, str) or kind not in rw.ITEM_TYPES:
        raise _bad(f"input item type {_named(kind, rw.API_ITEM_TYPES)} cannot be translated to chat.")
    content = item.get("content")
    if kind == "message" and isinstance(content, list):
        for p in content:
            part = p.get("type") if isinstance(p, dict) else None
            if not isinstance(part, str) or part not in rw.PART_TYPES:
                named = _named(part, rw.API_PART_TYPES)
                raise _bad(f"input content part type {named} cannot be translated to chat.")
    try:
        typed: rw.InputItem = msgspec.convert({**item, "type": kind}, rw.InputItem)
    except msgspec.ValidationError as exc:
        # The item's own path, under the request's.
        raise msgspec.ValidationError(str(exc).replace("`$", f"`$.input[{index}]", 1)) from None
    return typed


def _parts(content: str | list[rw.ContentPart] | None, role: str) -> str | list[ContentPart]:
    if isinstance(content, str):
        return content
    if content is None:
        raise _bad(f"input message content must be a string or an array (role {role}).")
    parts: list[ContentPart] = []
    for p in content:
        if isinstance(p, rw.InputImagePart):
            if p.image_url is None:
                raise _bad("input_image needs an image_url (file_id images need a native target).")
            parts.append(ImagePart(image_url=ImageURL(url=p.image_url, detail=p.detail)))
        elif isinstance(p, rw.RefusalPart):
            parts.append(TextPart(text=p.refusal))
        else:
            parts.append(TextPart(text=p.text))
    if all(isinstance(p, TextPart) for p in parts) and role != "user":
        return "".join(p.text for p in parts if isinstance(p, TextPart))
    return parts


def _messages(items: str | list[Any], instructions: str | None) -> list[Message]:
    out: list[Message] = []
    if instructions:
        out.append(Message(role="system", content=instructions))
    if isinstance(items, str):
        out.append(Message(role="user", content=items))
        return out
    reasoning: str | None = None
    for i, raw in enumerate(items):
        item = _typed_item(raw, i)
        if isinstance(item, rw.MessageItem):
            role = ROLES.get(item.role)
            if role is None:
                raise _bad("input message role must be one of user, assistant, system, developer.")
            out.append(Message(role=role, content=_parts(item.content, role)))
        elif isinstance(item, rw.FunctionCallItem):
            call = ToolCall(id=item.call_id, function=FunctionCall(name=item.name, arguments=item.arguments))
            last = out[-1] if out else None
            if last is not None and last.role == "assistant" and last.tool_calls is not None:
                last.tool_calls.append(call)
            else:
                out.append(Message(role="assistant", tool_calls=[call], reasoning_content=reasoning))
                reasoning = None
        elif isinstance(item, rw.FunctionCallOutputItem):
            output = item.output
            text = output if isinstance(output, str) else _encoder.encode(output).decode()
            out.append(Message(role="tool", tool_call_id=item.call_id, content=text))
        elif isinstance(item, rw.ReasoningItem):
            reasoning = "".join(s.text for s in item.summary) or None
        else:
            raise Untranslatable("an item_reference input")
    return out


def _tools(specs: list[rw.ToolSpec] | None) -> list[Tool] | None:
    if not specs:
        return None
    tools: list[Tool] = []
    for t in specs:
        if t.type != "function":
            raise Untranslatable(f"the built-in tool {_named(t.type, rw.API_TOOL_TYPES)}")
        tools.append(
            Tool(
                function=FunctionDef(
                    name=t.name, description=t.description, parameters=t.parameters, strict=t.strict
                )
            )
        )
    return tools


def _tool_choice(choice: str | rw.NamedToolChoice | None) -> ToolChoice | None:
    if choice is None or isinstance(choice, str):
        return choice
    if choice.type == "function" and choice.name:
        return ToolChoiceNamed(function=ToolChoiceFunction(name=choice.name))
    raise Untranslatable("a tool_choice naming a built-in tool")


def _format(text: rw.TextConfig | None) -> ResponseFormat | None:
    fmt = text.format if text is not None else None
    if fmt is None:
        return None
    if fmt.type == "json_schema":
        return ResponseFormat(
            type="json_schema",
            json_schema=JSONSchemaSpec(
                name=fmt.name, schema=fmt.schema, description=fmt.description, strict=fmt.strict
            ),
        )
    if fmt.type == "json_object":
        return ResponseFormat(type="json_object")
    if fmt.type == "text":
        return ResponseFormat(type="text")
    raise _bad("text.format type must be text, json_object or json_schema.")


def decode_request(raw: bytes) -> ChatRequest:
    """Raises msgspec.ValidationError (a field of the wrong type or out of
    range), Untranslatable or CodecError."""
    try:
        body = _any.decode(raw)
    except msgspec.DecodeError:
        raise _bad("We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise _bad("The request body must be a JSON object.")
    req = msgspec.convert(body, rw.ResponsesRequest)
    if req.previous_response_id:
        raise Untranslatable("previous_response_id")
    if req.store is True:
        raise Untranslatable("store=true")
    if req.background is True:
        raise Untranslatable("background=true")
    if req.conversation:
        raise Untranslatable("conversation")
    if req.input is None:
        raise _bad("input is required.")
    messages = _messages(req.input, req.instructions)
    if not any(m.role != "system" for m in messages):
        raise _bad("input must contain at least one message.")
    return ChatRequest(
        model=req.model,
        messages=messages,
        stream=req.stream or None,
        max_completion_tokens=req.max_output_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        tools=_tools(req.tools),
        tool_choice=_tool_choice(req.tool_choice),
        parallel_tool_calls=req.parallel_tool_calls,
        response_format=_format(req.text),
        reasoning_effort=req.reasoning.effort if req.reasoning is not None else None,
        user=req.user,
        metadata=req.metadata,
    )


class Responses:
    name = "responses"

    def decode(self, raw: bytes) -> ChatRequest:
        return decode_request(raw)

    def encode_response(self, resp: ChatResponse, model: str) -> bytes:
        return encode_response(resp, model)

    def stream_encoder(self, model: str, include_usage: bool) -> StreamEncoder:
        return ResponsesEvents(model)

    def error_body(self, failure: Failure) -> bytes:
        # The Responses API's error envelope is the chat completions one.
        return openai_chat.error_body(failure)


RESPONSES = Responses()
