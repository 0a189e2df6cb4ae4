"""``POST /v1/responses`` (the OpenAI Responses API).  A provider that
serves it natively (OpenAI) gets the caller's body with the model
rewritten and its answer relayed as is; every other provider is reached
through chat, translated both ways; what chat cannot carry
(previous_response_id, store=true, built-in tools) is a clear 400 there.

Either way the compliance hooks read the request on its own terms (every
input item, instructions, tool outputs: ingress/translate/native_text.py)
and the answer before the caller does (a native stream through
responses_stream.py)."""

from __future__ import annotations

from typing import Any

import msgspec

from adapters.canonical import ChatRequest
from ingress.pipeline import errors, record
from ingress.pipeline.call.chat import call_chat
from ingress.pipeline.call.pump import Gated, Relayed, stream_call
from ingress.pipeline.call.responses_stream import ResponsesStreamGate
from ingress.pipeline.call.unary import exchange, guard
from ingress.pipeline.call.usage import event_usage, record_response, sent_prompt
from ingress.pipeline.exchange import Exchange, send_json
from ingress.pipeline.stages import compliance
from ingress.translate.native_text import responses_output_text
from ingress.translate.responses import RESPONSES, Untranslatable, decode_request
from ingress.translate.responses_native import NativeStreamReader, native_usage
from ingress.translate.shown_model import RelayedStream, ShownModel

_any: msgspec.json.Decoder[Any] = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()

Parsed = tuple[ChatRequest | None, Untranslatable | None]


def decode(raw: bytes) -> Parsed:
    # What only a native target can serve is not an error yet: the route
    # decides.  Every other problem is the caller's 400 right away.
    try:
        return decode_request(raw), None
    except Untranslatable as why:
        return None, why


def cacheable(ex: Exchange) -> bool:
    """A native Responses answer (its response id is what a later call's
    previous_response_id names) is never served from a cache."""
    return ex.route is None or not ex.route.serves_responses


async def responses_call(ex: Exchange) -> None:
    assert ex.route is not None
    if ex.route.serves_responses:
        await _native(ex)
        return
    _chat, why = ex.parsed
    if why is not None:
        raise errors.needs_native_responses(why.what)
    assert ex.chat is not None
    await call_chat(ex, ex.chat)


async def _native(ex: Exchange) -> None:
    """The caller's body to the provider's own Responses API, as the request
    hooks left it (they read every input item, whatever its kind, and a
    redaction is written into the body), and its answer relayed as is but
    for the model name and what the response hooks change."""
    upstream, model = ex.upstream, ex.model
    assert upstream is not None and model is not None
    chat = ex.chat
    rc = ex.compliance
    route = ex.route
    assert route is not None
    codec = ex.codec
    wire = codec.encode_native("responses", ex.body, route.target)
    guard(upstream, wire.url)
    shown = ShownModel(ex.requested_model)
    encoder = RESPONSES.stream_encoder(shown.name, True)
    if ex.stream:
        if rc is not None and rc.response_hooks:
            gate = ResponsesStreamGate(ex.rt, rc, shown, ex.provider_model)
            await stream_call(ex, chat, wire, gate, Gated(encoder), codec.normalise_error, gate=gate)
            return
        output = Relayed(RelayedStream(shown, responses=True), encoder)
        reader = NativeStreamReader(ex.provider_model)
        await stream_call(ex, chat, wire, reader, output, codec.normalise_error)
        return
    prompt = sent_prompt(chat, ex.raw)
    payload, upstream_ms = await exchange(ex, upstream, wire, codec.normalise_error, prompt)
    try:
        parsed = _any.decode(payload)
    except msgspec.DecodeError:
        parsed = None
    usage, estimated = event_usage(native_usage(parsed), chat, None)
    redacted = False
    if rc is not None and rc.response_hooks and isinstance(parsed, dict):
        result = await compliance.native_response_stage(ex, rc, responses_output_text(parsed), payload=parsed)
        redacted = result.redacted and not result.blocked
        if redacted:
            payload = _encoder.encode(parsed)
        if result.blocked:
            # Billed by the provider though the caller never sees it.
            record.upstream_result(ex, status=200, upstream_ms=upstream_ms, body=payload)
            record.usage_recorded(ex, model, usage, estimated=estimated)
            raise compliance.blocked(result)
    elif rc is not None:
        # No response hook applies to this caller: the stage is on record.
        await compliance.stream_summary(ex, rc)
    record.upstream_result(ex, status=200, upstream_ms=upstream_ms, body=payload, redacted=redacted)
    record_response(ex, model, usage, estimated=estimated)
    await send_json(ex, shown.checked_document(payload))
