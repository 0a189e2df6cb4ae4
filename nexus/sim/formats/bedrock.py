"""Amazon Bedrock Runtime under /bedrock: Converse, ConverseStream (the
AWS event-stream binary framing) and InvokeModel for embeddings (Titan
Text Embeddings, Cohere Embed), per
https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html.

Every request must carry a valid AWS Signature Version 4 (checked in full
here: canonical request, scope, signing key derived from the sim's secret)
or a Bedrock API key as a bearer token.  Unknown fields, bad roles, empty
content, tool results for unknown tool uses and malformed images are
ValidationExceptions (400), as Bedrock answers; errors carry the
``x-amzn-ErrorType`` header and ``{"message": ...}``."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import re
import struct
import urllib.parse
import zlib
from typing import Any, Literal

import msgspec
from aiohttp import web

from nexus.sim import core, text
from nexus.sim.formats import common
from nexus.sim.state import SIM_STATE

_encoder = msgspec.json.Encoder()

_EXCEPTIONS = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}


def error(status: int, message: str) -> web.Response:
    kind = _EXCEPTIONS.get(status, "InternalServerException" if status >= 500 else "ValidationException")
    if status == 401:
        status, kind = 403, "UnrecognizedClientException"
    return web.Response(
        status=status,
        body=_encoder.encode({"message": message}),
        content_type="application/json",
        headers={"x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"},
    )


# --- SigV4 ---------------------------------------------------------------------------

_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<akid>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/bedrock/aws4_request, "
    r"SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<sig>[0-9a-f]{64})$"
)


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def verify_sigv4(request: web.Request, body: bytes, secret: str | None) -> str | None:
    """None if the signature holds (or no secret is configured and the
    headers are well formed), else why not."""
    headers = {k.lower(): v for k, v in request.headers.items()}
    m = _AUTH.match(headers.get("authorization", ""))
    if m is None:
        return "Authorization is not a SigV4 header for the bedrock service"
    amz_date = headers.get("x-amz-date", "")
    if not re.fullmatch(r"\d{8}T\d{6}Z", amz_date) or amz_date[:8] != m["date"]:
        return "X-Amz-Date is missing or does not match the credential scope"
    signed = m["signed"].split(";")
    if "host" not in signed or "x-amz-date" not in signed:
        return "host and x-amz-date must be signed"
    when = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    if abs((dt.datetime.now(dt.UTC) - when).total_seconds()) > 300:
        return "Signature expired"
    if secret is None:
        return None
    # Non-S3 services sign the path encoded once more than it was sent.
    canonical_uri = urllib.parse.quote(request.raw_path.split("?")[0], safe="/-_.~")
    pairs = urllib.parse.parse_qsl(request.query_string, keep_blank_values=True)
    canonical_query = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}" for k, v in sorted(pairs)
    )
    canonical_headers = "".join(f"{h}:{' '.join(headers.get(h, '').strip().split())}\n" for h in signed)
    payload_hash = hashlib.sha256(body).hexdigest()
    canonical = "\n".join(
        [request.method, canonical_uri, canonical_query, canonical_headers, m["signed"], payload_hash]
    )
    scope = f"{m['date']}/{m['region']}/bedrock/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(
        _hmac(_hmac(_hmac(("AWS4" + secret).encode(), m["date"]), m["region"]), "bedrock"), "aws4_request"
    )
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, m["sig"]):
        return "The request signature we calculated does not match the signature you provided."
    return None


# --- the Converse request ----------------------------------------------------------------


class _Strict(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    pass


class ImageSource(_Strict):
    bytes: str | None = None
    s3_location: dict[str, str] | None = None


class Image(_Strict):
    format: Literal["png", "jpeg", "gif", "webp"]
    source: ImageSource


class ToolUse(_Strict):
    tool_use_id: str
    name: str
    input: Any


class ToolResultContent(_Strict):
    text: str | None = None
    json: Any = None
    image: Image | None = None


class ToolResult(_Strict):
    tool_use_id: str
    content: list[ToolResultContent]
    status: Literal["success", "error"] | None = None


class ReasoningText(_Strict):
    text: str
    signature: str | None = None


class ReasoningContent(_Strict):
    reasoning_text: ReasoningText | None = None
    redacted_content: str | None = None


class CachePoint(_Strict):
    type: Literal["default"]


class DocumentSource(_Strict):
    bytes: str | None = None


class Document(_Strict):
    format: str
    name: str
    source: DocumentSource


class ContentBlock(_Strict):
    text: str | None = None
    image: Image | None = None
    document: Document | None = None
    tool_use: ToolUse | None = None
    tool_result: ToolResult | None = None
    reasoning_content: ReasoningContent | None = None
    cache_point: CachePoint | None = None


class Message(_Strict):
    role: Literal["user", "assistant"]
    content: list[ContentBlock]


class SystemBlock(_Strict):
    text: str | None = None
    cache_point: CachePoint | None = None


class InferenceConfig(_Strict):
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop_sequences: list[str] | None = None


class InputSchema(msgspec.Struct, forbid_unknown_fields=True):
    json: dict[str, Any]


class ToolSpec(_Strict):
    name: str
    input_schema: InputSchema
    description: str | None = None


class ToolDef(_Strict):
    tool_spec: ToolSpec | None = None
    cache_point: CachePoint | None = None


class SpecificTool(_Strict):
    name: str


class ToolChoice(_Strict):
    auto: dict[str, Any] | None = None
    any: dict[str, Any] | None = None
    tool: SpecificTool | None = None


class ToolConfig(_Strict):
    tools: list[ToolDef]
    tool_choice: ToolChoice | None = None


class ConverseRequest(_Strict):
    messages: list[Message]
    system: list[SystemBlock] | None = None
    inference_config: InferenceConfig | None = None
    tool_config: ToolConfig | None = None
    additional_model_request_fields: dict[str, Any] | None = None
    additional_model_response_field_paths: list[str] | None = None
    guardrail_config: dict[str, Any] | None = None
    performance_config: dict[str, Any] | None = None
    request_metadata: dict[str, str] | None = None


_decode_converse = msgspec.json.Decoder(ConverseRequest).decode


def _ask(req: ConverseRequest, model: str) -> core.Ask:
    texts = ["".join(s.text or "" for s in req.system or ())] if req.system else []
    if not req.messages or req.messages[0].role != "user":
        raise common.Rejected(400, "A conversation must start with a user message.")
    images = 0
    tool_ids: set[str] = set()
    after_result = False
    for i, m in enumerate(req.messages):
        if i and m.role == req.messages[i - 1].role:
            raise common.Rejected(400, "A conversation must alternate between user and assistant roles.")
        if not m.content:
            raise common.Rejected(400, "The content field in the Message object is empty.")
        after_result = False
        parts: list[str] = []
        for block in m.content:
            kinds = [
                k
                for k in (
                    "text",
                    "image",
                    "document",
                    "tool_use",
                    "tool_result",
                    "reasoning_content",
                    "cache_point",
                )
                if getattr(block, k) is not None
            ]
            if len(kinds) != 1:
                raise common.Rejected(400, f"A ContentBlock must hold exactly one member, got {kinds}")
            if block.text is not None:
                parts.append(block.text)
            if block.image is not None:
                try:
                    base64.b64decode(block.image.source.bytes or "", validate=True)
                except (binascii.Error, ValueError):
                    raise common.Rejected(400, "image.source.bytes is not valid base64") from None
                images += 1
            if block.tool_use is not None:
                tool_ids.add(block.tool_use.tool_use_id)
            if block.tool_result is not None:
                if block.tool_result.tool_use_id not in tool_ids:
                    raise common.Rejected(400, "toolResult blocks must follow a toolUse with the same id")
                after_result = True
                parts.extend(c.text or "" for c in block.tool_result.content)
        texts.append("".join(parts))
    tools: list[tuple[str, dict[str, Any]]] = []
    choice = "auto"
    if req.tool_config is not None:
        tools = [
            (t.tool_spec.name, t.tool_spec.input_schema.json) for t in req.tool_config.tools if t.tool_spec
        ]
        tc = req.tool_config.tool_choice
        if tc is not None and tc.tool is not None:
            choice = tc.tool.name
        elif tc is not None and tc.any is not None:
            choice = "required"
    elif any(b.tool_use or b.tool_result for m in req.messages for b in m.content):
        raise common.Rejected(400, "toolConfig must be defined when the conversation uses tools.")
    extra = req.additional_model_request_fields or {}
    thinking = extra.get("thinking")
    reasoning = isinstance(thinking, dict) and thinking.get("type") == "enabled"
    cfg = req.inference_config or InferenceConfig()
    return core.Ask(
        model=model,
        texts=texts,
        tools=tools,
        tool_choice=choice,
        after_tool_result=after_result,
        images=images,
        reasoning=reasoning,
        max_tokens=cfg.max_tokens,
    )


_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def _usage(a: core.Answer) -> dict[str, Any]:
    return {
        "inputTokens": a.prompt_tokens - a.cached_tokens,
        "outputTokens": a.completion_tokens,
        "totalTokens": a.total_tokens,
        "cacheReadInputTokens": a.cached_tokens,
        "cacheWriteInputTokens": 0,
    }


# --- the event-stream framing ------------------------------------------------------------


def _header(name: str, value: str) -> bytes:
    n, v = name.encode(), value.encode()
    return struct.pack("B", len(n)) + n + b"\x07" + struct.pack(">H", len(v)) + v


def frame(event: str, payload: dict[str, Any], *, exception: bool = False) -> bytes:
    """One application/vnd.amazon.eventstream message: prelude (total
    length, headers length, CRC32), headers, JSON payload, message CRC32."""
    if exception:
        headers = (
            _header(":exception-type", event)
            + _header(":content-type", "application/json")
            + _header(":message-type", "exception")
        )
    else:
        headers = (
            _header(":event-type", event)
            + _header(":content-type", "application/json")
            + _header(":message-type", "event")
        )
    body = _encoder.encode({**payload, "p": "abcdefghijkl"[: 1 + len(event) % 11]})  # Bedrock pads events
    total = 12 + len(headers) + len(body) + 4
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + headers + body
    return message + struct.pack(">I", zlib.crc32(message))


# --- handlers ------------------------------------------------------------------------------


async def _admit(request: web.Request) -> tuple[bytes, Any] | web.Response:
    admitted = await common.admit(request, error, common.header("authorization"), compare=False)
    if isinstance(admitted, web.Response):
        return admitted
    raw, b = admitted
    secret = request.app[SIM_STATE].settings.api_key
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        # A Bedrock API key.
        if secret is not None and not hmac.compare_digest(auth[7:].strip(), secret):
            return error(403, "The security token included in the request is invalid.")
        return raw, b
    why = verify_sigv4(request, raw, secret)
    if why is not None:
        return error(403, why)
    return raw, b


async def converse(request: web.Request, stream: bool) -> web.StreamResponse:
    admitted = await _admit(request)
    if isinstance(admitted, web.Response):
        return admitted
    raw, b = admitted
    model = request.match_info["model"]
    try:
        ask = _ask(_decode_converse(raw), model)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return error(400, f"Malformed input request: {exc}")
    except common.Rejected as exc:
        return error(exc.status, exc.message)
    b, failed = await common.act(b, ask.texts, error)
    if failed is not None:
        return failed
    a = core.answer(ask, b)
    content: list[dict[str, Any]] = []
    signature = "sig_" + a.id
    if a.reasoning:
        content.append(
            {"reasoningContent": {"reasoningText": {"text": a.reasoning_text, "signature": signature}}}
        )
    if a.pieces:
        content.append({"text": a.text})
    for c in a.calls:
        content.append(
            {"toolUse": {"toolUseId": "tooluse_" + c.id[5:], "name": c.name, "input": c.arguments}}
        )
    if not stream:
        await common.sleep_ms(b.ttft_ms)
        body = {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": _STOP[a.finish],
            "usage": _usage(a),
            "metrics": {"latencyMs": 1},
        }
        return web.Response(body=_encoder.encode(body), content_type="application/json")

    out = await common.start_stream(request, "application/vnd.amazon.eventstream")

    async def fail() -> None:
        await out.write(
            frame("modelStreamErrorException", {"message": "The model failed mid-stream."}, exception=True)
        )

    await out.write(frame("messageStart", {"role": "assistant"}))
    await common.sleep_ms(b.ttft_ms)
    sent = [0]
    index = 0
    if a.reasoning:

        def think(_: int, piece: str) -> bytes:
            return frame(
                "contentBlockDelta",
                {"contentBlockIndex": index, "delta": {"reasoningContent": {"text": piece}}},
            )

        if not await common.pieces(request, out, b, a.reasoning, think, fail, sent):
            return out
        await out.write(
            frame(
                "contentBlockDelta",
                {"contentBlockIndex": index, "delta": {"reasoningContent": {"signature": signature}}},
            )
        )
        await out.write(frame("contentBlockStop", {"contentBlockIndex": index}))
        index += 1
    if a.pieces:

        def say(_: int, piece: str) -> bytes:
            return frame("contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": piece}})

        if not await common.pieces(request, out, b, a.pieces, say, fail, sent):
            return out
        await out.write(frame("contentBlockStop", {"contentBlockIndex": index}))
        index += 1
    for c in a.calls:
        start = {"toolUse": {"toolUseId": "tooluse_" + c.id[5:], "name": c.name}}
        await out.write(frame("contentBlockStart", {"contentBlockIndex": index, "start": start}))
        args = c.arguments_json

        def call(_: int, piece: str, index: int = index) -> bytes:
            return frame(
                "contentBlockDelta", {"contentBlockIndex": index, "delta": {"toolUse": {"input": piece}}}
            )

        if not await common.pieces(
            request, out, b, [args[: len(args) // 2], args[len(args) // 2 :]], call, fail, sent
        ):
            return out
        await out.write(frame("contentBlockStop", {"contentBlockIndex": index}))
        index += 1
    await out.write(frame("messageStop", {"stopReason": _STOP[a.finish]}))
    await out.write(frame("metadata", {"usage": _usage(a), "metrics": {"latencyMs": 1}}))
    await out.write_eof()
    return out


class _Titan(msgspec.Struct, forbid_unknown_fields=True):
    inputText: str
    dimensions: int | None = None
    normalize: bool | None = None
    embeddingTypes: list[str] | None = None


class _CohereEmbed(msgspec.Struct, forbid_unknown_fields=True):
    texts: list[str]
    input_type: Literal["search_document", "search_query", "classification", "clustering"]
    truncate: str | None = None
    embedding_types: list[str] | None = None


async def invoke(request: web.Request) -> web.StreamResponse:
    admitted = await _admit(request)
    if isinstance(admitted, web.Response):
        return admitted
    raw, b = admitted
    model = request.match_info["model"]
    dims = request.app[SIM_STATE].settings.embedding_dimensions
    try:
        if "titan-embed" in model:
            titan = msgspec.json.decode(raw, type=_Titan)
            b, failed = await common.act(b, [titan.inputText], error)
            if failed is not None:
                return failed
            body: dict[str, Any] = {
                "embedding": text.embedding(model, titan.inputText, titan.dimensions or dims),
                "inputTextTokenCount": text.count_text_tokens(titan.inputText),
            }
        elif "cohere.embed" in model:
            co = msgspec.json.decode(raw, type=_CohereEmbed)
            b, failed = await common.act(b, co.texts, error)
            if failed is not None:
                return failed
            body = {
                "id": "emb-sim",
                "embeddings": [text.embedding(model, t, dims) for t in co.texts],
                "texts": co.texts,
                "response_type": "embeddings_floats",
            }
        else:
            return error(400, f"this sim serves InvokeModel for embedding models only, not {model!r}")
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return error(400, f"Malformed input request: {exc}")
    return web.Response(body=_encoder.encode(body), content_type="application/json")


async def _converse(request: web.Request) -> web.StreamResponse:
    return await converse(request, False)


async def _converse_stream(request: web.Request) -> web.StreamResponse:
    return await converse(request, True)


def register(app: web.Application) -> None:
    app.router.add_post("/bedrock/model/{model}/converse", _converse)
    app.router.add_post("/bedrock/model/{model}/converse-stream", _converse_stream)
    app.router.add_post("/bedrock/model/{model}/invoke", invoke)
