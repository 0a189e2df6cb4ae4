"""The Gemini generateContent grammar, for Google clients (the google-genai
SDK, REST callers) calling Nexus's ``/v1beta/models/{model}:generateContent``,
``:streamGenerateContent?alt=sse`` and ``:countTokens``: a Gemini request ->
canonical ChatRequest, and a canonical response, chunk stream or failure ->
the GenerateContentResponse JSON, its SSE chunks and Google's error
envelope, whichever provider served it.

Gemini names the model and the streaming in the URL, not the body
(``address``).  The API accepts camelCase and snake_case field names alike
(REST examples use both); keys are read in either spelling.  Requests and
answers use the provider side's wire structs (the same API,
``adapters.gemini.wire``)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, TypeVar
from urllib.parse import unquote

import msgspec

from adapters.canonical import (
    AudioPart,
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
    Usage,
)
from adapters.gemini import wire as w
from adapters.wirekit import signatures
from adapters.wirekit.errors import unsupported
from adapters.wirekit.jsonio import DECODE_ERRORS, dumps, encode, parse_arguments, shape_error
from adapters.wirekit.media import data_uri
from adapters.wirekit.sse import frame
from ingress.translate.grammar import Failure, StreamEncoder

API = "generateContent"
COUNT_API = "countTokens"
# The methods a model URL may name, and whether each streams.
METHODS = {
    "generateContent": False,
    "streamGenerateContent": True,
    "countTokens": False,
    # Embeddings (ingress.translate.gemini_embed): addressed the same way.
    "embedContent": False,
    "batchEmbedContents": False,
}
_PREFIXES = ("/v1beta/models/", "/v1/models/")

T = TypeVar("T")


# --- the URL ----------------------------------------------------------------------


def parse_path(path: str) -> tuple[str, str] | None:
    """(model, method) of ``/v1beta/models/{model}:{method}`` (or /v1), or
    None when the path is not a Gemini model call."""
    for prefix in _PREFIXES:
        if path.startswith(prefix):
            model, sep, method = path[len(prefix) :].rpartition(":")
            if sep and model and "/" not in model and method in METHODS:
                return model, method
    return None


def address(path: str, query: str) -> tuple[str, bool]:
    """The model and stream flag a Gemini URL names."""
    parsed = parse_path(path)
    if parsed is None:
        raise unsupported(API, "the URL must be /v1beta/models/{model}:{method}")
    return addressed(parsed[0], parsed[1], query)


def addressed(model: str, method: str, query: str) -> tuple[str, bool]:
    """The model and stream flag of a call of ``method`` on ``model``.  A
    stream is served as server-sent events only (``?alt=sse``, what the SDKs
    ask for): the bare form streams one JSON array, which the hooks' stream
    guard cannot read event by event, so it is refused rather than relayed
    unscreened."""
    stream = METHODS[method]
    if stream and "alt=sse" not in query.split("&"):
        raise unsupported(API, "streamGenerateContent is served as server-sent events only: add ?alt=sse")
    return model, stream


def query_key(query: str) -> str | None:
    """The ``key`` parameter of a query string (Google's ``?key=``)."""
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name == "key" and value:
            return unquote(value)
    return None


# --- request: Gemini -> canonical ---------------------------------------------------

# Values that are the caller's own data, not API fields: their keys are kept
# as written (a tool's argument named ``user_id`` stays ``user_id``).
_VERBATIM = frozenset(
    {"args", "response", "parameters", "parametersJsonSchema", "responseSchema", "responseJsonSchema"}
)


def _camel(key: str) -> str:
    if "_" not in key:
        return key
    head, *rest = key.split("_")
    return head + "".join(r[:1].upper() + r[1:] for r in rest)


def _camel_keys(value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            name = _camel(k) if isinstance(k, str) else k
            out[name] = v if name in _VERBATIM else _camel_keys(v)
        return out
    if isinstance(value, list):
        return [_camel_keys(v) for v in value]
    return value


def read_json(body: bytes, tp: type[T], api: str) -> T:
    """A body as ``tp``, its keys in either spelling; not one -> CodecError (400)."""
    try:
        raw = msgspec.json.decode(body)
    except DECODE_ERRORS:
        raise unsupported(api, "invalid request body (not JSON)") from None
    if not isinstance(raw, dict):
        raise unsupported(api, "the request body must be a JSON object")
    try:
        return msgspec.convert(_camel_keys(raw), tp)
    except msgspec.ValidationError as e:
        raise unsupported(api, f"invalid request body ({shape_error(e)})") from None


class _ToolSpec(msgspec.Struct, rename="camel"):
    """A tool as sent: function declarations, or a Google server tool
    (googleSearch, codeExecution...) that has no canonical form."""

    function_declarations: list[w.FunctionDeclaration] | None = None


class _Request(msgspec.Struct, rename="camel"):
    contents: list[w.Content]
    system_instruction: w.Content | None = None
    tools: list[dict[str, Any]] | None = None
    tool_config: w.ToolConfig | None = None
    generation_config: w.GenerationConfig | None = None
    safety_settings: list[dict[str, Any]] | None = None
    cached_content: str | None = None


class _CountRequest(msgspec.Struct, rename="camel"):
    contents: list[w.Content] | None = None
    generate_content_request: _Request | None = None


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


def _media(part: w.Part, where: str, api: str) -> ContentPart:
    if part.inline_data is not None:
        mime, data = part.inline_data.mime_type, part.inline_data.data
        if mime.startswith("image/"):
            return ImagePart(image_url=ImageURL(url=data_uri(mime, data)))
        if mime.startswith("audio/"):
            return AudioPart(input_audio=InputAudio(data=data, format=mime.split("/", 1)[1]))
        return FilePart(file=FileRef(file_data=data_uri(mime, data)))
    fd = part.file_data
    assert fd is not None  # the caller checked
    if fd.mime_type is None or fd.mime_type.startswith("image/"):
        return ImagePart(image_url=ImageURL(url=fd.file_uri))
    raise unsupported(api, f"{where}.fileData of type {fd.mime_type!r} cannot be served; send inlineData")


def _unknown(part: w.Part) -> bool:
    # A part with none of the kinds this grammar reads (executableCode,
    # videoMetadata alone...): refused, never dropped on the way out.
    return (
        part.text is None
        and part.inline_data is None
        and part.file_data is None
        and part.function_call is None
        and part.function_response is None
        and part.thought_signature is None
    )


def _messages(req: _Request, api: str = API) -> list[Message]:
    """The turns of a request, its parts checked: a part this grammar does
    not read is refused (naming ``api``), never dropped."""
    out: list[Message] = []
    if req.system_instruction is not None:
        for i, p in enumerate(req.system_instruction.parts):
            if p.text is None:
                raise unsupported(api, f"systemInstruction.parts[{i}] must be text")
        text = "\n".join(p.text or "" for p in req.system_instruction.parts)
        if text:
            out.append(Message(role="system", content=text))
    # Function responses name a function, not a call: each answers the
    # earliest unanswered call of that name (unless it carries the call id).
    pending: dict[str, list[str]] = defaultdict(list)
    for turn, content in enumerate(req.contents):
        for i, p in enumerate(content.parts):
            if _unknown(p):
                raise unsupported(api, f"contents[{turn}].parts[{i}] has no part kind this gateway serves")
        if content.role == "model":
            texts: list[str] = []
            thoughts: list[str] = []
            calls: list[ToolCall] = []
            for p in content.parts:
                if p.function_call is not None:
                    fc = p.function_call
                    call_id = signatures.join(fc.id or f"call_{turn}_{len(calls)}", p.thought_signature)
                    args = dumps(fc.args or {})
                    calls.append(ToolCall(id=call_id, function=FunctionCall(name=fc.name, arguments=args)))
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
        if content.role not in (None, "user", "function"):
            raise unsupported(api, f"contents[{turn}].role must be user or model")
        parts: list[ContentPart] = []
        for i, p in enumerate(content.parts):
            if p.function_response is not None:
                fr = p.function_response
                queue = pending.get(fr.name)
                call_id = fr.id or (queue.pop(0) if queue else f"call_{fr.name}")
                out.append(Message(role="tool", tool_call_id=call_id, content=dumps(fr.response)))
            elif p.text is not None and not p.thought:
                parts.append(TextPart(text=p.text))
            elif p.inline_data is not None or p.file_data is not None:
                parts.append(_media(p, f"contents[{turn}].parts[{i}]", api))
        first = parts[0] if len(parts) == 1 else None
        if isinstance(first, TextPart):
            out.append(Message(role="user", content=first.text))
        elif parts:
            out.append(Message(role="user", content=parts))
    return out


def check_parts(contents: list[w.Content], system: w.Content | None, api: str) -> None:
    """Raises CodecError (a 400 naming ``api``) unless every part of these
    turns is one generateContent serves: what another Gemini call carries
    (a cached content) is held to the same rule."""
    _messages(_Request(contents=contents, system_instruction=system), api)


def _tools(raw: list[dict[str, Any]] | None) -> list[Tool] | None:
    out: list[Tool] = []
    for i, t in enumerate(raw or []):
        try:
            spec = msgspec.convert(t, _ToolSpec)
        except msgspec.ValidationError as e:
            raise unsupported(API, f"invalid tools[{i}] ({shape_error(e)})") from None
        if spec.function_declarations is None or set(t) != {"functionDeclarations"}:
            # googleSearch, codeExecution, urlContext...: Google's own tools
            # have no form another provider (or this gateway's hooks) reads.
            raise unsupported(API, f"tools[{i}]: only functionDeclarations are served")
        for d in spec.function_declarations:
            schema = d.parameters_json_schema or _lower_types(d.parameters)
            out.append(Tool(function=FunctionDef(name=d.name, description=d.description, parameters=schema)))
    return out or None


def _tool_choice(cfg: w.ToolConfig | None) -> ToolChoice | None:
    if cfg is None:
        return None
    fcc = cfg.function_calling_config
    names = fcc.allowed_function_names or []
    if fcc.mode in ("ANY", "VALIDATED") and len(names) == 1:
        return ToolChoiceNamed(function=ToolChoiceFunction(name=names[0]))
    return {"AUTO": "auto", "ANY": "required", "NONE": "none"}.get(fcc.mode, "auto")


def _response_format(gen: w.GenerationConfig) -> ResponseFormat | None:
    mime = gen.response_mime_type
    if mime in (None, "text/plain"):
        return None
    if mime != "application/json":
        raise unsupported(API, f"generationConfig.responseMimeType {mime!r} is not served")
    schema = gen.response_json_schema or _lower_types(gen.response_schema)
    if not schema:
        return ResponseFormat(type="json_object")
    return ResponseFormat(type="json_schema", json_schema=JSONSchemaSpec(name="response", schema=schema))


def _canonical(req: _Request) -> ChatRequest:
    gen = req.generation_config or w.GenerationConfig()
    # What only a Gemini target reads (adapters.gemini.request.build).
    ext: dict[str, Any] = {}
    if gen.thinking_config is not None:
        ext["thinking_config"] = msgspec.to_builtins(gen.thinking_config)
    if gen.top_k is not None:
        ext["top_k"] = gen.top_k
    if req.safety_settings:
        ext["safety_settings"] = req.safety_settings
    if req.cached_content:
        ext["cached_content"] = req.cached_content
    return ChatRequest(
        model="",  # from the URL (address); intake sets it
        messages=_messages(req),
        max_tokens=gen.max_output_tokens,
        temperature=gen.temperature,
        top_p=gen.top_p,
        n=gen.candidate_count,
        stop=gen.stop_sequences,
        presence_penalty=gen.presence_penalty,
        frequency_penalty=gen.frequency_penalty,
        seed=gen.seed,
        tools=_tools(req.tools),
        tool_choice=_tool_choice(req.tool_config),
        response_format=_response_format(gen),
        logprobs=gen.response_logprobs,
        top_logprobs=gen.logprobs,
        nexus_ext={"gemini": ext} if ext else None,
    )


def decode_request(body: bytes) -> ChatRequest:
    """A generateContent body as a canonical ChatRequest (no model: the URL
    names it); a body that is not one raises CodecError (400)."""
    return _canonical(read_json(body, _Request, API))


def decode_count_tokens(body: bytes) -> ChatRequest:
    """A countTokens body (``contents``, or a whole ``generateContentRequest``)
    as the canonical request whose prompt it counts."""
    req = read_json(body, _CountRequest, COUNT_API)
    if req.generate_content_request is not None:
        return _canonical(req.generate_content_request)
    if req.contents is None:
        raise unsupported(COUNT_API, "contents or generateContentRequest is required")
    return _canonical(_Request(contents=req.contents))


# --- response: canonical -> Gemini --------------------------------------------------

FINISH_BACK = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP", "content_filter": "SAFETY"}


def _finish(reason: str | None) -> str:
    return FINISH_BACK.get(reason or "stop", "OTHER")


def usage_metadata(u: Usage | None) -> w.UsageMetadata:
    u = u or Usage()
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


def to_generate_response(resp: ChatResponse, model: str) -> w.GenerateContentResponse:
    candidates = []
    for choice in resp.choices:
        msg = choice.message
        parts: list[w.Part] = []
        if msg.reasoning_content:
            parts.append(w.Part(text=msg.reasoning_content, thought=True))
        if msg.content or msg.refusal:
            parts.append(w.Part(text=msg.content or msg.refusal))
        for call in msg.tool_calls or []:
            parts.append(_call_part(call.id, call.function.name, call.function.arguments))
        candidates.append(
            w.Candidate(
                content=w.Content(role="model", parts=parts),
                finish_reason=_finish(choice.finish_reason),
                index=choice.index,
            )
        )
    return w.GenerateContentResponse(
        candidates=candidates,
        usage_metadata=usage_metadata(resp.usage),
        model_version=model,
        response_id=resp.id or None,
    )


def encode_response(resp: ChatResponse, model: str) -> bytes:
    return encode(to_generate_response(resp, model))


# https://cloud.google.com/apis/design/errors: google.rpc.Code by HTTP status.
_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    451: "PERMISSION_DENIED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def error_body(failure: Failure) -> bytes:
    s = failure.status
    status = _STATUSES.get(s) or ("UNAVAILABLE" if s >= 500 else "FAILED_PRECONDITION")
    return encode(w.ErrorBody(error=w.ErrorDetail(code=s, message=failure.message, status=status)))


# --- stream: canonical chunks -> Gemini SSE -------------------------------------------


class GenerateStreamEncoder:
    """Canonical chunks -> ``data:`` frames, each a GenerateContentResponse.
    Text and thoughts go out as they come; a function call goes out whole
    (as Gemini sends it) once its arguments are complete, in the last
    frame, with the finish reason and the usage."""

    def __init__(self, model: str) -> None:
        self._model = model
        self._id = ""
        self._calls: dict[int, list[str]] = {}  # index -> [id, name, argument pieces...]
        self._finish: str | None = None
        self._usage: Usage | None = None
        self._done = False

    def feed(self, chunk: ChatChunk) -> bytes:
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
        if self._done:
            return b""
        self._done = True
        parts = [_call_part(a[0], a[1], "".join(a[2:])) for _, a in sorted(self._calls.items())]
        return self._frame(parts, _finish(self._finish), usage_metadata(self._usage))

    def error(self, failure: Failure) -> bytes:
        return frame(None, error_body(failure))

    def _frame(self, parts: list[w.Part], finish: str | None, u: w.UsageMetadata | None = None) -> bytes:
        resp = w.GenerateContentResponse(
            candidates=[w.Candidate(content=w.Content(role="model", parts=parts), finish_reason=finish)],
            usage_metadata=u,
            model_version=self._model,
            response_id=self._id or None,
        )
        return frame(None, encode(resp))


def count_body(total: int) -> bytes:
    return encode({"totalTokens": total})


class GeminiGenerate:
    name = "gemini"

    def decode(self, raw: bytes) -> ChatRequest:
        return decode_request(raw)

    def encode_response(self, resp: ChatResponse, model: str) -> bytes:
        return encode_response(resp, model)

    def stream_encoder(self, model: str, include_usage: bool) -> StreamEncoder:
        return GenerateStreamEncoder(model)  # usage always rides in the last frame

    def error_body(self, failure: Failure) -> bytes:
        return error_body(failure)


GEMINI_GENERATE = GeminiGenerate()

__all__ = [
    "GEMINI_GENERATE",
    "address",
    "addressed",
    "check_parts",
    "decode_count_tokens",
    "error_body",
    "parse_path",
    "query_key",
    "read_json",
]
