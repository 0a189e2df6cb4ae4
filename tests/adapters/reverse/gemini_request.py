"""A Gemini generateContent request read back as a canonical ChatRequest
(the encoder's requests, and the documented example request)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from adapters.canonical import (
    AudioPart,
    ChatRequest,
    ContentPart,
    FilePart,
    FileRef,
    FunctionCall,
    FunctionDef,
    ImagePart,
    ImageURL,
    InputAudio,
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
from adapters.gemini import wire as w
from adapters.wirekit import signatures
from adapters.wirekit.errors import unsupported
from adapters.wirekit.jsonio import decode_inbound, dumps
from adapters.wirekit.media import data_uri

API = "generateContent"


def _lower_types(schema: Any) -> Any:
    """Gemini schemas may spell types in upper case (OBJECT, STRING); JSON
    Schema, which every other provider reads, wants lower case."""
    if isinstance(schema, list):
        return [_lower_types(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _lower_types(v) for k, v in schema.items()}
    if isinstance(out.get("type"), str):
        out["type"] = out["type"].lower()
    return out


def _media(part: w.Part) -> ContentPart:
    if part.inline_data is not None:
        mime, data = part.inline_data.mime_type, part.inline_data.data
        if mime.startswith("image/"):
            return ImagePart(image_url=ImageURL(url=data_uri(mime, data)))
        if mime.startswith("audio/"):
            return AudioPart(input_audio=InputAudio(data=data, format=mime.split("/", 1)[1]))
        return FilePart(file=FileRef(file_data=data_uri(mime, data)))
    fd = part.file_data
    assert fd is not None  # callers check
    if (fd.mime_type or "").startswith("image/") or fd.mime_type is None:
        return ImagePart(image_url=ImageURL(url=fd.file_uri))
    raise unsupported(API, f"fileData of type {fd.mime_type!r} cannot be translated; send inlineData")


def _messages(req: w.GenerateContentRequest) -> list[Message]:
    out: list[Message] = []
    if req.system_instruction is not None:
        text = "".join(p.text or "" for p in req.system_instruction.parts)
        if text:
            out.append(Message(role="system", content=text))
    # Function responses carry a name, not an id: each is matched to the
    # earliest unanswered call of that name.
    pending: dict[str, list[str]] = defaultdict(list)
    for turn, content in enumerate(req.contents):
        if content.role == "model":
            texts: list[str] = []
            thoughts: list[str] = []
            calls: list[ToolCall] = []
            for p in content.parts:
                if p.function_call is not None:
                    fc = p.function_call
                    call_id = signatures.join(fc.id or f"call_{turn}_{len(calls)}", p.thought_signature)
                    calls.append(
                        ToolCall(
                            id=call_id, function=FunctionCall(name=fc.name, arguments=dumps(fc.args or {}))
                        )
                    )
                    pending[fc.name].append(call_id)
                elif p.text is not None:
                    (thoughts if p.thought else texts).append(p.text)
            out.append(
                Message(
                    role="assistant",
                    content="".join(texts) if texts or not calls else None,
                    tool_calls=calls or None,
                    reasoning_content="".join(thoughts) or None,
                )
            )
            continue
        parts: list[ContentPart] = []
        for p in content.parts:
            if p.function_response is not None:
                fr = p.function_response
                queue = pending.get(fr.name)
                call_id = fr.id or (queue.pop(0) if queue else f"call_{fr.name}")
                out.append(Message(role="tool", tool_call_id=call_id, content=dumps(fr.response)))
            elif p.text is not None and not p.thought:
                parts.append(TextPart(text=p.text))
            elif p.inline_data is not None or p.file_data is not None:
                parts.append(_media(p))
        first = parts[0] if len(parts) == 1 else None
        if isinstance(first, TextPart):
            out.append(Message(role="user", content=first.text))
        elif parts:
            out.append(Message(role="user", content=parts))
    return out


def _tool_choice(cfg: w.ToolConfig | None) -> ToolChoice | None:
    if cfg is None:
        return None
    fcc = cfg.function_calling_config
    names = fcc.allowed_function_names or []
    if fcc.mode == "ANY" and len(names) == 1:
        return ToolChoiceNamed(function=ToolChoiceFunction(name=names[0]))
    return {"AUTO": "auto", "ANY": "required", "NONE": "none"}.get(fcc.mode, "auto")


def decode_request(body: bytes, model: str, stream: bool = False) -> ChatRequest:
    """``model`` and ``stream`` come from the URL (…/models/{model}:
    streamGenerateContent), as Gemini puts them there."""
    req = decode_inbound(body, w.GenerateContentRequest, API)
    tools = [
        Tool(
            function=FunctionDef(
                name=d.name,
                description=d.description,
                parameters=_lower_types(d.parameters) if d.parameters else None,
            )
        )
        for t in req.tools or []
        for d in t.function_declarations or []
    ]
    gen = req.generation_config or w.GenerationConfig()
    rf = None
    if gen.response_mime_type == "application/json":
        schema = gen.response_json_schema or gen.response_schema
        rf = (
            ResponseFormat(
                type="json_schema", json_schema=JSONSchemaSpec(name="response", schema=_lower_types(schema))
            )
            if schema
            else ResponseFormat(type="json_object")
        )
    ext: dict[str, Any] = {}
    if gen.thinking_config is not None:
        ext["thinking_config"] = {
            k: v
            for k, v in (
                ("thinking_budget", gen.thinking_config.thinking_budget),
                ("include_thoughts", gen.thinking_config.include_thoughts),
                ("thinking_level", gen.thinking_config.thinking_level),
            )
            if v is not None
        }
    if gen.top_k is not None:
        ext["top_k"] = gen.top_k
    if req.safety_settings:
        ext["safety_settings"] = req.safety_settings
    return ChatRequest(
        model=model,
        messages=_messages(req),
        stream=True if stream else None,
        max_tokens=gen.max_output_tokens,
        temperature=gen.temperature,
        top_p=gen.top_p,
        n=gen.candidate_count,
        stop=gen.stop_sequences,
        presence_penalty=gen.presence_penalty,
        frequency_penalty=gen.frequency_penalty,
        seed=gen.seed,
        tools=tools or None,
        tool_choice=_tool_choice(req.tool_config),
        response_format=rf,
        nexus_ext={"gemini": ext} if ext else None,
    )
