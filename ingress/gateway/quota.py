"""Quotas at the gateway: reserve before forwarding, headers on every
answer, release what no usage event will settle, cut a stream at its
reservation, ``GET /v1/usage`` and the per-budget gauges in ``/metrics``.

The counters themselves belong to ``ingress.quota`` (reserve) and
``processors/quota`` (settle from the UsageRecorded events); this module
only turns their answers into HTTP.  A request no budget or rate limit
applies to costs one dict lookup and no Valkey round trip.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import msgspec
from aiohttp import web
from prometheus_client import Gauge

from adapters.canonical import ChatChunk, ChatRequest, EmbeddingRequest
from ingress import heap
from ingress.gateway import errors
from ingress.gateway.auth import authenticate
from ingress.gateway.errors import GatewayError
from ingress.gateway.intake import Admitted
from ingress.gateway.state import CTX, STATE, GatewayState, RequestContext
from ingress.quota import KeyUsage, QuotaDecision, QuotaGate, QuotaUnavailable, StreamMeter, key_usage
from ingress.quota.estimate import count_text, counting_rule, encoding
from ingress.quota.resp import PipelinedValkey
from ingress.translate.grammar import ANTHROPIC_MESSAGES, OPENAI_CHAT
from streams.config import ConfigSnapshot
from streams.config_quota import QuotaPolicy, Subject

log = logging.getLogger("nexus.gateway.quota")

_encoder = msgspec.json.Encoder()

_LABELS = ["budget", "counter", "unit"]
SPENT = Gauge("nexus_quota_spent", "settled spend on a quota counter (current window)", _LABELS)
RESERVED = Gauge("nexus_quota_reserved", "held by requests in flight on a quota counter", _LABELS)
REMAINING = Gauge("nexus_quota_remaining", "what is left on a quota counter (current window)", _LABELS)
LIMIT = Gauge("nexus_quota_limit", "a quota counter's limit", _LABELS)

_MAX_TRACKED_KEYS = 10_000  # keys whose counters /metrics reads back
_METRICS_TIMEOUT_S = 2.0


class QuotaRuntime:
    """The snapshot's quota policy and, when a Valkey client is there, the
    gate that reserves on it.  ``gate`` None with limits configured means
    every request a limit applies to fails closed (503)."""

    __slots__ = ("gate", "policy", "seen_keys")

    def __init__(self, policy: QuotaPolicy, gate: QuotaGate | None) -> None:
        self.policy = policy
        self.gate = gate
        self.seen_keys: set[str] = set()


def wants_quota(snapshot: ConfigSnapshot) -> bool:
    q = snapshot.config.quotas
    return bool(q.budgets or q.rate_limits)


def build_runtime(snapshot: ConfigSnapshot, client: Any, key_prefix: str) -> QuotaRuntime | None:
    if not wants_quota(snapshot):
        return None
    if client is None:
        return QuotaRuntime(QuotaPolicy(snapshot.config, key_prefix), None)
    gate = QuotaGate.from_snapshot(client, snapshot, key_prefix)
    return QuotaRuntime(gate.policy, gate)


def encodings_needed(snapshot: ConfigSnapshot) -> set[str]:
    """The token encodings the configured models count with, under the
    model's own name (the gate's estimate) and its provider model (the
    gateway's)."""
    kinds = {p.name: p.kind for p in snapshot.config.providers}
    out: set[str] = set()
    for m in snapshot.config.models:
        kind = kinds.get(m.provider, "openai")
        for name in (m.name, m.provider_model or m.name):
            out.add(counting_rule(kind, name).encoding)
    return out


def lifecycle(valkey: Any, key_prefix: str, env: Mapping[str, str]) -> Any:
    """The app's cleanup context for quotas: the gate on the caller's Valkey
    client, else on one opened from ``NEXUS_VALKEY_URL`` (and closed here)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        state = app[STATE]
        owned: Any = None
        if wants_quota(state.snapshot):
            client = valkey
            url = env.get("NEXUS_VALKEY_URL", "")
            if client is None and url:
                # One pipelined connection: the reservations of concurrent
                # requests share its writes and reads (ingress.quota.resp).
                client = owned = PipelinedValkey.from_url(url)
            if client is None:
                log.warning("quotas are configured but no Valkey is: requests they apply to get 503")
            prefix = env.get("NEXUS_VALKEY_PREFIX", key_prefix) if valkey is None else key_prefix
            state.quota = build_runtime(state.snapshot, client, prefix)
            # Load the BPE tables now (seconds), not on the first request:
            # only those of the configured models (tens of MB each); another
            # loads on first use.
            for name in sorted(encodings_needed(state.snapshot)):
                await asyncio.to_thread(encoding, name)
            await asyncio.to_thread(heap.trim)  # the loader's garbage: freed, still resident
        yield
        if owned is not None:
            await owned.aclose()

    return ctx


# --- errors ---------------------------------------------------------------------


def unavailable() -> GatewayError:
    return GatewayError(
        503,
        "api_error",
        "quota_unavailable",
        "The quota store is unreachable; requests under a budget are refused until it is back.",
        retry_after_s=1,
        stage="quota",
    )


def rejected(d: QuotaDecision) -> GatewayError:
    if d.error_code == "QUOTA_MODEL_UNPRICED":
        return GatewayError(403, "permission_error", d.error_code, d.message, param="model", stage="quota")
    if d.error_code in ("QUOTA_EXCEEDED", "RATE_LIMITED"):
        return GatewayError(
            429, "rate_limit_error", d.error_code, d.message, retry_after_s=d.retry_after_s, stage="quota"
        )
    log.error("quota check refused request with %s: %s", d.error_code, d.message)
    return errors.internal()


# --- the request path ---------------------------------------------------------------


def _estimate_embeddings(req: EmbeddingRequest, provider_kind: str, provider_model: str) -> int:
    rule = counting_rule(provider_kind, provider_model)
    items = [req.input] if isinstance(req.input, str) else req.input
    texts = [i for i in items if isinstance(i, str)]
    tokens = sum(len(i) if isinstance(i, list) else 1 for i in items if not isinstance(i, str))
    return count_text("\n".join(texts), rule) + len(texts) + tokens


def _estimate(rt: QuotaRuntime, a: Admitted[Any], chat: ChatRequest | None) -> tuple[int, int]:
    gate = rt.gate
    assert gate is not None
    ctx, model = a.ctx, a.model
    kind = a.route.kind or "openai"
    if chat is not None:
        return gate.estimate(chat, model.name, ctx.provider)
    if isinstance(a.parsed, EmbeddingRequest):
        return _estimate_embeddings(a.parsed, kind, ctx.provider_model), 0
    # A Responses call only a native target can read: size it by its bytes
    # (at most one token per byte) and the output it allows.
    asked = a.body.get("max_output_tokens")
    out = asked if isinstance(asked, int) and asked > 0 else 0
    out = out or model.max_output_tokens or rt.policy.config.default_max_tokens
    return len(a.raw), out


async def _downgrade(a: Admitted[Any], target: str) -> None:
    state, ctx = a.state, a.ctx
    model = state.snapshot.models.get(target)
    route = state.routes.get(target)
    if model is None or route is None or route.codec is None:
        raise errors.internal()
    provider = state.snapshot.providers[model.provider]
    upstream = state.upstreams.get(provider.name)
    await route.refresh(upstream.session, state.request_timeout_s)  # a minted credential
    a.model, a.route, a.upstream = model, route, upstream
    # The budget chose the model: the requested model's routing candidates
    # (failover, load balancing) would send it back to the dearer targets.
    ctx.routing = None
    ctx.model = model.name
    ctx.provider = provider.name
    ctx.provider_model = model.provider_model or model.name


_REASONING = ("o1", "o3", "o4", "gpt-5")


def _cap_body(a: Admitted[Any], cap: int) -> None:
    """The caller's JSON (what same-format calls forward) with its output
    limit no larger than ``cap``."""
    body, grammar = a.body, a.ctx.grammar
    if grammar is ANTHROPIC_MESSAGES:
        names: tuple[str, ...] = ("max_tokens",)
    elif grammar is OPENAI_CHAT:
        present = [n for n in ("max_completion_tokens", "max_tokens") if n in body]
        if present:
            names = tuple(present)
        else:
            reasoning = a.ctx.provider_model.lower().startswith(_REASONING)
            names = ("max_completion_tokens" if reasoning else "max_tokens",)
    else:  # the Responses API
        names = ("max_output_tokens",)
    for name in names:
        asked = body.get(name)
        if not isinstance(asked, int) or asked > cap:
            body[name] = cap


def _cap(a: Admitted[Any], chat: ChatRequest | None, d: QuotaDecision) -> ChatRequest | None:
    total = d.output_cap
    if total is None or isinstance(a.parsed, EmbeddingRequest):
        return chat
    n = max(1, chat.n or 1) if chat is not None else 1
    per_choice = max(1, total // n)
    _cap_body(a, per_choice)
    if chat is None:
        return None
    asked = chat.output_budget()
    if asked is not None and asked <= per_choice:
        return chat
    if chat.max_completion_tokens is not None:
        return msgspec.structs.replace(chat, max_completion_tokens=per_choice, max_tokens=None)
    return msgspec.structs.replace(chat, max_tokens=per_choice)


def capped(a: Admitted[Any], chat: ChatRequest) -> ChatRequest:
    """``chat`` within the output cap of the reservation the request holds
    now.  Failover reserves again for each target it moves to (its price,
    its model's output budget): what goes to that target must be capped by
    that reservation, not by the first target's."""
    d = a.ctx.quota
    if d is None or d.output_cap is None:
        return chat
    return _cap(a, chat, d) or chat


async def admit(a: Admitted[Any], chat: ChatRequest | None) -> ChatRequest | None:
    """Reserve for this request on every counter that applies (one Valkey
    call), or raise the caller's 429/403/503.  Returns the request to
    forward: ``chat`` with max_tokens capped at the reservation when a hard
    limit applies.  After a downgrade ``a`` points at the cheaper model."""
    rt = a.state.quota
    if rt is None:
        return chat
    ctx = a.ctx
    t = ctx.tenant
    subject = Subject(
        org=t.org_id,
        project=t.project_id,
        key=t.key_id,
        user=t.user_id,
        provider=ctx.provider,
        model=a.model.name,
    )
    if not rt.policy.applicable(subject):
        return chat  # nothing applies: no estimate, no Valkey
    if rt.gate is None:
        raise unavailable()
    if len(rt.seen_keys) < _MAX_TRACKED_KEYS:
        rt.seen_keys.add(t.key_id)
    prompt, out = _estimate(rt, a, chat)
    try:
        d = await rt.gate.check(
            request_id=ctx.request_id,
            org=t.org_id,
            project=t.project_id,
            key=t.key_id,
            user=t.user_id,
            model=a.model.name,
            provider=ctx.provider,
            prompt_tokens=prompt,
            max_output_tokens=out,
        )
    except QuotaUnavailable as exc:
        log.warning("quota store unreachable (%r): failing closed", exc.__cause__)
        raise unavailable() from None
    ctx.quota = d
    if not d.admitted:
        raise rejected(d)
    if d.model != a.model.name:
        await _downgrade(a, d.model)
    return _cap(a, chat, d)


async def retarget(a: Admitted[Any]) -> None:
    """Failover moved the request to another target (model, provider):
    the reservation made for the first one no longer bounds what this one
    may cost, nor covers its own budgets.  The failed attempt billed
    nothing (failover only follows errors raised before an answer), so
    release and reserve again for the new target; a refusal is the caller's
    429/403 like any other."""
    rt = a.state.quota
    if rt is None:
        return
    ctx = a.ctx
    d = ctx.quota
    if d is not None and d.reserved:
        await _release(a.state, ctx)
    ctx.quota = None
    chat = a.parsed if isinstance(a.parsed, ChatRequest) else None
    await admit(a, chat)


async def stamp(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the quota headers on every answer a limit
    applied to (admitted, rejected, streamed)."""
    ctx = request.get(CTX)
    d = ctx.quota if ctx is not None else None
    if d is None:
        return
    try:
        response.headers.update(d.headers())
    except Exception:  # headers must never cost the caller the answer
        log.exception("could not build quota headers for request %s", ctx.request_id if ctx else "")


@web.middleware
async def release_unsettled(request: web.Request, handler: Any) -> web.StreamResponse:
    """A reservation whose request ended without a usage event (refused
    upstream, unreachable provider, blocked answer) goes back at once
    rather than at its expiry."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    finally:
        ctx = request.get(CTX)
        if ctx is not None and ctx.quota is not None and ctx.quota.reserved and not ctx.usage_recorded:
            await _release(request.app[STATE], ctx)


async def _release(state: GatewayState, ctx: RequestContext) -> None:
    rt = state.quota
    if rt is None or rt.gate is None:
        return
    try:
        await asyncio.shield(rt.gate.release(ctx.request_id))
    except Exception as exc:  # it expires by itself (reservation_ttl_s)
        log.warning("could not release the reservation of %s: %s", ctx.request_id, type(exc).__name__)


# --- streams --------------------------------------------------------------------------


def meter_for(ctx: RequestContext, provider_kind: str) -> StreamMeter | None:
    d = ctx.quota
    if d is None or d.output_cap is None:
        return None
    return StreamMeter(d.output_cap, provider_kind, ctx.provider_model)


def within(meter: StreamMeter | None, chunks: list[ChatChunk]) -> bool:
    """Count the chunks' output on the meter; False once the stream is past
    its reservation (it is then cut before these chunks reach the caller).

    The meter's count is an estimate inflated by the provider's safety
    factor (and per-delta counting rounds up); a provider that honours the
    max_tokens we forwarded must not be cut at its last token, so the test
    is on the uninflated count with a little slack.  What this catches is a
    provider that ignores max_tokens."""
    if meter is None or meter.cap is None:
        return True
    for chunk in chunks:
        for c in chunk.choices:
            d = c.delta
            text = (d.content or "") + (d.reasoning_content or "") + (d.refusal or "")
            for call in d.tool_calls or ():
                if call.function is not None:
                    text += (call.function.name or "") + (call.function.arguments or "")
            meter.note(text)
    return meter.within_slack()


class StreamCut(Exception):
    """Raised inside a stream pump: the reservation is used up."""

    def __init__(self) -> None:
        super().__init__("stream cut at its quota reservation")
        self.error = cut_error()


def cut_error() -> GatewayError:
    return GatewayError(
        429,
        "rate_limit_error",
        "QUOTA_EXCEEDED",
        "The stream reached the output tokens its budget reservation allows.",
        stage="stream",
    )


# --- GET /v1/usage and /metrics ------------------------------------------------------


async def _read_usage(rt: QuotaRuntime, key_id: str) -> KeyUsage | None:
    if rt.gate is None:
        raise unavailable()
    try:
        return await key_usage(rt.gate, key_id)
    except Exception:
        raise unavailable() from None


def _observe(usage: KeyUsage) -> None:
    for lim in usage.limits:
        labels = (lim.id, lim.counter_id, lim.unit)
        SPENT.labels(*labels).set(lim.spent)
        RESERVED.labels(*labels).set(lim.reserved)
        REMAINING.labels(*labels).set(lim.remaining)
        LIMIT.labels(*labels).set(lim.limit)


async def usage(request: web.Request) -> web.Response:
    """Spend and remaining on every budget and rate limit that applies to
    the calling key (Authorization: Bearer, x-nexus-virtual-key or x-api-key)."""
    state = request.app[STATE]
    ctx = request[CTX]
    ctx.endpoint = "usage"
    native = "x-api-key" if "x-api-key" in request.headers else None
    key = authenticate(request.headers, state.snapshot, native)
    ctx.set_key(key)
    rt = state.quota
    found = await _read_usage(rt, key.id) if rt is not None else None
    if found is not None:
        _observe(found)
    body = {
        "object": "usage",
        "key_id": key.id,
        "org": key.org,
        "project": key.project,
        "as_of": int(time.time()),
        "limits": msgspec.to_builtins(found.limits) if found is not None else [],
    }
    return web.Response(body=_encoder.encode(body), content_type="application/json")


async def refresh_metrics(state: GatewayState) -> None:
    """Read back the counters of the keys this gateway served (all keys of
    a small config) so /metrics shows spend and remaining per budget."""
    rt = state.quota
    if rt is None or rt.gate is None:
        return
    keys = set(rt.seen_keys)
    if len(rt.policy.key_subject) <= 200:
        keys.update(rt.policy.key_subject)
    try:
        async with asyncio.timeout(_METRICS_TIMEOUT_S):
            found = await asyncio.gather(*(key_usage(rt.gate, k) for k in sorted(keys)))
    except Exception as exc:  # the scrape still answers, with the last values
        log.warning("quota gauges not refreshed: %s", type(exc).__name__)
        return
    for ku in found:
        if ku is not None:
            _observe(ku)
