"""Canonical ChatRequest / EmbeddingRequest -> Gemini request bodies."""

from __future__ import annotations

import mimetypes
from typing import Any

import msgspec

from adapters.canonical import (
    AudioPart,
    ChatRequest,
    ContentPart,
    EmbeddingRequest,
    FilePart,
    ImagePart,
    Message,
    RefusalPart,
    TextPart,
    ToolChoiceNamed,
)
from adapters.gemini import wire as w
from adapters.gemini.schema import to_gemini_schema
from adapters.wirekit import signatures
from adapters.wirekit.errors import unsupported
from adapters.wirekit.jsonio import parse_arguments
from adapters.wirekit.media import parse_data_uri

P = "gemini"


def _media_part(url: str, default_mime: str) -> w.Part:
    parsed = parse_data_uri(url)
    if parsed is not None:
        return w.Part(inline_data=w.Blob(mime_type=parsed[0], data=parsed[1]))
    if url.startswith(("https://", "http://", "gs://")):
        mime = mimetypes.guess_type(url.split("?", 1)[0])[0] or default_mime
        return w.Part(file_data=w.FileData(file_uri=url, mime_type=mime))
    raise unsupported(P, "media must be an http(s)/gs:// URL or a base64 data: URI")


def _parts(content: str | list[ContentPart] | None) -> list[w.Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [w.Part(text=content)] if content else []
    out: list[w.Part] = []
    for part in content:
        if isinstance(part, TextPart):
            out.append(w.Part(text=part.text))
        elif isinstance(part, RefusalPart):
            out.append(w.Part(text=part.refusal))
        elif isinstance(part, ImagePart):
            out.append(_media_part(part.image_url.url, "image/jpeg"))
        elif isinstance(part, AudioPart):
            audio = part.input_audio
            out.append(w.Part(inline_data=w.Blob(mime_type=f"audio/{audio.format}", data=audio.data)))
        elif isinstance(part, FilePart):
            if not part.file.file_data:
                raise unsupported(
                    P, "file parts need file_data (a data: URI); OpenAI file ids are not portable"
                )
            out.append(_media_part(part.file.file_data, "application/pdf"))
    return out


def _function_response(msg: Message, names: dict[str, str]) -> w.Part:
    name = names.get(msg.tool_call_id or "")
    if name is None:
        raise unsupported(P, f"tool message {msg.tool_call_id!r} answers no earlier tool call")
    text = msg.content if isinstance(msg.content, str) else msg.text()
    value = parse_arguments(text or "")
    # Gemini wants an object; a bare value or plain text rides under "result".
    response = value if isinstance(value, dict) and "_raw_arguments" not in value else {"result": text}
    return w.Part(function_response=w.FunctionResponse(name=name, response=response))


def contents(req: ChatRequest) -> tuple[w.Content | None, list[w.Content]]:
    system: list[w.Part] = []
    out: list[w.Content] = []
    call_names: dict[str, str] = {}

    def append(role: str, parts: list[w.Part]) -> None:
        if not parts:
            return
        if out and out[-1].role == role:
            out[-1].parts.extend(parts)
        else:
            out.append(w.Content(role=role, parts=list(parts)))

    for msg in req.messages:
        if msg.role in ("system", "developer"):
            system.extend(_parts(msg.content))
        elif msg.role == "user":
            append("user", _parts(msg.content))
        elif msg.role == "assistant":
            parts = _parts(msg.content)
            for call in msg.tool_calls or []:
                call_names[call.id] = call.function.name
                args = parse_arguments(call.function.arguments)
                _, signature = signatures.split(call.id)
                parts.append(
                    w.Part(
                        function_call=w.FunctionCall(name=call.function.name, args=args),
                        thought_signature=signature,
                    )
                )
            append("model", parts)
        elif msg.role in ("tool", "function"):
            append("user", [_function_response(msg, call_names)])
    if not out:
        raise unsupported(P, "at least one user or assistant message is required")
    return (w.Content(parts=system) if system else None), out


def _tool_config(req: ChatRequest) -> w.ToolConfig | None:
    tc = req.tool_choice
    if tc is None:
        return None
    if isinstance(tc, ToolChoiceNamed):
        cfg = w.FunctionCallingConfig(mode="ANY", allowed_function_names=[tc.function.name])
    else:
        mode = {"auto": "AUTO", "required": "ANY", "none": "NONE"}.get(tc)
        if mode is None:
            raise unsupported(P, f"unknown tool_choice {tc!r}")
        cfg = w.FunctionCallingConfig(mode=mode)
    return w.ToolConfig(function_calling_config=cfg)


def _camel(d: dict[str, Any]) -> dict[str, Any]:
    # nexus_ext may use the API's camelCase or snake_case keys.
    out = {}
    for k, v in d.items():
        head, *rest = k.split("_")
        out[head + "".join(r.title() for r in rest)] = v
    return out


# reasoning_effort on models that think: Gemini 2.5 takes a token budget,
# Gemini 3 a level.  includeThoughts so the reasoning comes back.
EFFORT_BUDGET = {"low": 1024, "medium": 8192, "high": 24576}
EFFORT_LEVEL = {"low": "low", "medium": "high", "high": "high"}


def _effort(effort: str | None, model: str) -> w.ThinkingConfig | None:
    name = model.rsplit("/", 1)[-1]
    if effort in EFFORT_LEVEL and name.startswith("gemini-3"):
        return w.ThinkingConfig(thinking_level=EFFORT_LEVEL[effort], include_thoughts=True)
    if effort in EFFORT_BUDGET and name.startswith("gemini-2.5"):
        return w.ThinkingConfig(thinking_budget=EFFORT_BUDGET[effort], include_thoughts=True)
    return None


def _thinking(ext: dict[str, Any], req: ChatRequest, model: str) -> w.ThinkingConfig | None:
    raw = ext.get("thinking_config", ext.get("thinkingConfig"))
    if raw is None:
        return _effort(req.reasoning_effort, model)
    try:
        return msgspec.convert(_camel(raw), w.ThinkingConfig)
    except (msgspec.ValidationError, AttributeError) as e:
        raise unsupported(P, f"nexus_ext.gemini.thinking_config is invalid ({e})") from None


def build(req: ChatRequest, model: str = "") -> w.GenerateContentRequest:
    ext = (req.nexus_ext or {}).get("gemini", {})
    system, turns = contents(req)
    tools = None
    if req.tools:
        decls = [
            w.FunctionDeclaration(
                name=t.function.name,
                description=t.function.description,
                parameters=to_gemini_schema(t.function.parameters) if t.function.parameters else None,
            )
            for t in req.tools
        ]
        tools = [w.GeminiTool(function_declarations=decls)]
    mime = schema = None
    rf = req.response_format
    if rf is not None and rf.type == "json_object":
        mime = "application/json"
    elif rf is not None and rf.type == "json_schema":
        if rf.json_schema is None or rf.json_schema.schema is None:
            raise unsupported(P, "response_format json_schema needs a schema")
        mime, schema = "application/json", to_gemini_schema(rf.json_schema.schema)
    stop = [req.stop] if isinstance(req.stop, str) else req.stop
    gen = w.GenerationConfig(
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=ext.get("top_k"),
        max_output_tokens=req.output_budget(),
        stop_sequences=stop or None,
        candidate_count=req.n,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        seed=req.seed,
        response_mime_type=mime,
        response_schema=schema,
        response_logprobs=req.logprobs,
        logprobs=req.top_logprobs,
        thinking_config=_thinking(ext, req, model),
    )
    return w.GenerateContentRequest(
        contents=turns,
        system_instruction=system,
        tools=tools,
        tool_config=_tool_config(req),
        generation_config=gen if gen != w.GenerationConfig() else None,
        safety_settings=ext.get("safety_settings"),
        cached_content=ext.get("cached_content"),
    )


def _embed_inputs(req: EmbeddingRequest) -> list[str]:
    if isinstance(req.input, str):
        return [req.input]
    if all(isinstance(x, str) for x in req.input):
        return [x for x in req.input if isinstance(x, str)]
    raise unsupported(P, "token-array embedding input is not supported; send text")


def build_embed(
    req: EmbeddingRequest, model: str
) -> tuple[str, w.EmbedContentRequest | w.BatchEmbedContentsRequest]:
    """(action, body): one text -> embedContent, several -> batchEmbedContents."""
    ext = (req.nexus_ext or {}).get("gemini", {})
    texts = _embed_inputs(req)
    task = ext.get("task_type")

    def one(text: str, with_model: bool) -> w.EmbedContentRequest:
        return w.EmbedContentRequest(
            content=w.Content(parts=[w.Part(text=text)]),
            model=f"models/{model}" if with_model else None,
            task_type=task,
            title=ext.get("title"),  # a Gemini caller's (ingress.translate.gemini_embed)
            output_dimensionality=req.dimensions,
        )

    if isinstance(req.input, str):
        return "embedContent", one(texts[0], False)
    return "batchEmbedContents", w.BatchEmbedContentsRequest(requests=[one(t, True) for t in texts])
