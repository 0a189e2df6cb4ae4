"""One chat call, whichever grammar the caller speaks and whichever
provider serves it (chat completions, Anthropic messages, and Responses
calls reached through chat).

- A same-format call (the provider's codec serves the caller's grammar
  natively: OpenAI chat to OpenAI, Anthropic messages to Anthropic): the
  caller's body goes out as the request hooks left it, with only the model
  rewritten (fields this gateway does not know still reach the provider),
  and the answer comes back as the provider sent it (model name patched);
  the canonical decode is for accounting and the response hooks.
- Otherwise the provider's codec encodes the canonical request (auth
  headers and SigV4 included), decodes the answer (or the stream) back to
  canonical, and the caller's grammar writes it.
"""

from __future__ import annotations

from adapters.base import CodecError
from adapters.canonical import ChatRequest
from ingress.pipeline import errors
from ingress.pipeline.call.pump import Reencoded, Relayed, stream_call
from ingress.pipeline.call.unary import exchange, guard, unreadable
from ingress.pipeline.call.usage import event_usage, record_response, sent_prompt
from ingress.pipeline.exchange import Exchange, send_json
from ingress.pipeline.stages import quota
from ingress.pipeline.stages.compliance import screen_response, stream_enforced
from ingress.translate.anthropic_messages import ANTHROPIC_MESSAGES
from ingress.translate.grammar import Grammar
from ingress.translate.openai_chat import OPENAI_CHAT
from ingress.translate.shown_model import RelayedStream, ShownModel


async def chat_call(ex: Exchange) -> None:
    """The call of a chat endpoint, on the target the request is aimed at
    now (a retry or failover calls it again elsewhere)."""
    assert ex.chat is not None
    await call_chat(ex, ex.chat)


def native_endpoint(grammar: Grammar) -> str:
    """The endpoint name a codec's ``native`` set lists for a grammar that
    reaches a chat call ("" for Responses through chat: never native here,
    a provider that serves Responses natively is called by responses.py)."""
    if grammar is OPENAI_CHAT:
        return "chat"
    if grammar is ANTHROPIC_MESSAGES:
        return "messages"
    return ""


async def call_chat(ex: Exchange, chat: ChatRequest) -> None:
    chat = quota.capped(ex, chat)  # this target's reservation (failover re-reserves)
    route, upstream, model = ex.route, ex.upstream, ex.model
    assert route is not None and upstream is not None and model is not None
    codec = ex.codec
    grammar = ex.grammar
    endpoint = native_endpoint(grammar)
    same = endpoint in codec.native
    try:
        if same:
            # The caller's own body, as the request hooks left it (a
            # redaction is written into it) and the quota stage capped it.
            wire = codec.encode_native(endpoint, ex.body, route.target, chat)
        else:
            wire = codec.encode_chat(chat, route.target)
    except CodecError as exc:
        raise errors.from_canonical(exc.error, stage="route") from None
    shown = ex.requested_model
    if ex.stream:
        include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
        encoder = grammar.stream_encoder(shown, include_usage)
        relayed = same and not stream_enforced(ex.rt, ex.compliance)
        output = (
            Relayed(RelayedStream(ShownModel(shown), drop_usage=not include_usage), encoder)
            if relayed
            else Reencoded(encoder)
        )
        await stream_call(ex, chat, wire, codec.stream_decoder(route.target), output, codec.normalise_error)
        return

    guard(upstream, wire.url)
    payload, upstream_ms = await exchange(
        ex, upstream, wire, codec.normalise_error, sent_prompt(chat, ex.raw)
    )
    try:
        response = codec.decode_chat(payload, route.target)
    except CodecError as exc:
        raise unreadable(ex, upstream_ms, exc) from None
    response, rewritten = await screen_response(ex, response, payload, upstream_ms)
    usage, estimated = event_usage(response.usage, chat, response)
    record_response(ex, model, usage, estimated=estimated)
    if not response.id:  # Bedrock's Converse names none; clients expect one
        response.id = "nexus-" + ex.request_id
    if same and not rewritten:
        # An OpenAI chat completion has one "model" key, at the top; an
        # Anthropic message may echo the caller's own in tool inputs.
        patch = ShownModel(shown)
        body_out = patch.document(payload) if grammar is OPENAI_CHAT else patch.checked_document(payload)
    else:
        body_out = grammar.encode_response(response, shown)
    await send_json(ex, body_out)
