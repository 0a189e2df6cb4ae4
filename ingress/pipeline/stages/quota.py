"""Quotas in the pipeline: reserve before forwarding, the quota headers on
every answer (``ex.quota``), release what no usage event will settle, cut a
stream at its reservation, ``GET /v1/usage`` and the per-budget gauges (for
operators, behind the admin token: ``/metrics/tenants``).

The counters themselves belong to ``ingress.quota`` (reserve) and
``processors/quota`` (settle from the UsageRecorded events); this module
only turns their answers into HTTP.  A request no budget or rate limit
applies to costs one dict lookup and no Valkey round trip.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge

from adapters.canonical import ChatChunk, ChatRequest, EmbeddingRequest
from ingress.pipeline import errors
from ingress.pipeline.errors import GatewayError
from ingress.pipeline.exchange import Exchange, Next, send_json
from ingress.pipeline.runtime import Runtime
from ingress.pipeline.target import aim
from ingress.quota import KeyUsage, QuotaDecision, QuotaGate, QuotaUnavailable, StreamMeter, key_usage
from ingress.quota.estimate import count_text, counting_rule, encoding
from ingress.translate.anthropic_messages import ANTHROPIC_MESSAGES
from ingress.translate.openai_chat import OPENAI_CHAT
from streams.config_snapshot import ConfigSnapshot
from streams.quota_counters import QuotaPolicy, Subject

log = logging.getLogger("nexus.gateway.quota")

_encoder = msgspec.json.Encoder()

# Per-budget figures name tenants (a counter id carries its org, project or
# key id; budget ids are often named after them): a registry of their own,
# served only to the admin token (ops.tenant_metrics), never on /metrics.
TENANT_REGISTRY = CollectorRegistry(auto_describe=True)
_LABELS = ["budget", "counter", "unit"]
SPENT = Gauge(
    "nexus_quota_spent",
    "settled spend on a quota counter (current window)",
    _LABELS,
    registry=TENANT_REGISTRY,
)
RESERVED = Gauge(
    "nexus_quota_reserved",
    "held by requests in flight on a quota counter",
    _LABELS,
    registry=TENANT_REGISTRY,
)
REMAINING = Gauge(
    "nexus_quota_remaining",
    "what is left on a quota counter (current window)",
    _LABELS,
    registry=TENANT_REGISTRY,
)
LIMIT = Gauge("nexus_quota_limit", "a quota counter's limit", _LABELS, registry=TENANT_REGISTRY)

UNRESERVED = Counter(
    "nexus_quota_unreserved_total",
    "Requests served without a reservation because the quota store did not answer (quotas.store.fail: open)",
)
_MAX_TRACKED_KEYS = 10_000  # keys whose counters /metrics reads back
_METRICS_TIMEOUT_S = 2.0


class _EveryTenSeconds:
    """A warning logged at most once every 10 s: while the store is away
    every quota-checked request would log one."""

    def __init__(self) -> None:
        self._last = -math.inf
        self._quiet = 0

    def note(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last < 10.0:
            self._quiet += 1
            return
        more = f" ({self._quiet} more since the last such line)" if self._quiet else ""
        log.warning("%s%s", message, more)
        self._last, self._quiet = now, 0


_STORE_LOG = _EveryTenSeconds()


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


async def preload_encodings(snapshot: ConfigSnapshot) -> None:
    """Load the BPE tables a snapshot's models count with (seconds, tens of
    MB each) in a worker thread when it is applied, not on its first
    request; another one loads on first use."""
    for name in sorted(encodings_needed(snapshot)):
        await asyncio.to_thread(encoding, name)


# --- errors ---------------------------------------------------------------------


def unavailable(retry_after_s: float = 1.0) -> GatewayError:
    return GatewayError(
        503,
        "api_error",
        "quota_store_unavailable",
        "The quota store is not answering; requests under a budget or rate limit are refused until it does.",
        retry_after_s=retry_after_s,
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


def _estimate(rt: QuotaRuntime, ex: Exchange, chat: ChatRequest | None) -> tuple[int, int]:
    gate = rt.gate
    assert gate is not None
    model = ex.model
    assert model is not None and ex.route is not None
    kind = ex.route.kind or "openai"
    if chat is not None:
        return gate.estimate(chat, model.name, ex.provider)
    if isinstance(ex.parsed, EmbeddingRequest):
        return _estimate_embeddings(ex.parsed, kind, ex.provider_model), 0
    # A Responses call only a native target can read: size it by its bytes
    # (at most one token per byte) and the output it allows.
    asked = ex.body.get("max_output_tokens")
    out = asked if isinstance(asked, int) and asked > 0 else 0
    out = out or model.max_output_tokens or rt.policy.config.default_max_tokens
    return len(ex.raw), out


async def _downgrade(ex: Exchange, model: str) -> None:
    route = ex.rt.routes.get(model)
    if model not in ex.rt.snapshot.models or route is None or route.codec is None:
        raise errors.internal()
    await aim(ex, model)
    # The budget chose the model: the requested model's routing candidates
    # (failover, load balancing) would send it back to the dearer targets.
    ex.routing = None


_REASONING = ("o1", "o3", "o4", "gpt-5")


def _cap_body(ex: Exchange, cap: int) -> None:
    """The caller's JSON (what same-format calls forward) with its output
    limit no larger than ``cap``."""
    body, grammar = ex.body, ex.grammar
    if grammar is ANTHROPIC_MESSAGES:
        names: tuple[str, ...] = ("max_tokens",)
    elif grammar is OPENAI_CHAT:
        present = [n for n in ("max_completion_tokens", "max_tokens") if n in body]
        if present:
            names = tuple(present)
        else:
            reasoning = ex.provider_model.lower().startswith(_REASONING)
            names = ("max_completion_tokens" if reasoning else "max_tokens",)
    else:  # the Responses API
        names = ("max_output_tokens",)
    for name in names:
        asked = body.get(name)
        if not isinstance(asked, int) or asked > cap:
            body[name] = cap


def _cap(ex: Exchange, chat: ChatRequest | None, d: QuotaDecision) -> ChatRequest | None:
    total = d.output_cap
    if total is None or isinstance(ex.parsed, EmbeddingRequest):
        return chat
    n = max(1, chat.n or 1) if chat is not None else 1
    per_choice = max(1, total // n)
    _cap_body(ex, per_choice)
    if chat is None:
        return None
    asked = chat.output_budget()
    if asked is not None and asked <= per_choice:
        return chat
    if chat.max_completion_tokens is not None:
        return msgspec.structs.replace(chat, max_completion_tokens=per_choice, max_tokens=None)
    return msgspec.structs.replace(chat, max_tokens=per_choice)


def capped(ex: Exchange, chat: ChatRequest) -> ChatRequest:
    """``chat`` within the output cap of the reservation the request holds
    now.  Failover reserves again for each target it moves to (its price,
    its model's output budget): what goes to that target must be capped by
    that reservation, not by the first target's."""
    d = ex.quota
    if d is None or d.output_cap is None:
        return chat
    return _cap(ex, chat, d) or chat


async def admit(ex: Exchange, chat: ChatRequest | None) -> ChatRequest | None:
    """Reserve for this request on every counter that applies (one Valkey
    call), or raise the caller's 429/403/503.  Returns the request to
    forward: ``chat`` with max_tokens capped at the reservation when a hard
    limit applies.  After a downgrade ``a`` points at the cheaper model."""
    rt = ex.rt.quota
    if rt is None:
        return chat
    model = ex.model
    assert model is not None
    t = ex.tenant
    subject = Subject(
        org=t.org_id,
        project=t.project_id,
        key=t.key_id,
        user=t.user_id,
        provider=ex.provider,
        model=model.name,
    )
    if not rt.policy.applicable(subject):
        return chat  # nothing applies: no estimate, no Valkey
    if rt.gate is None:
        raise unavailable()  # the standalone CLI refuses to start like this; a library caller may not
    if len(rt.seen_keys) < _MAX_TRACKED_KEYS:
        rt.seen_keys.add(t.key_id)
    prompt, out = _estimate(rt, ex, chat)
    try:
        d = await rt.gate.check(
            request_id=ex.request_id,
            org=t.org_id,
            project=t.project_id,
            key=t.key_id,
            user=t.user_id,
            model=model.name,
            provider=ex.provider,
            prompt_tokens=prompt,
            max_output_tokens=out,
        )
    except QuotaUnavailable as exc:
        if rt.policy.config.store.fail == "open":
            _STORE_LOG.note(f"quota store not answering ({exc}): serving without reservations (fail: open)")
            UNRESERVED.inc()
            return chat
        _STORE_LOG.note(f"quota store not answering ({exc}): refusing with 503 (fail: closed)")
        raise unavailable(exc.retry_after_s) from None
    ex.quota = d
    if not d.admitted:
        raise rejected(d)
    if d.model != model.name:
        await _downgrade(ex, d.model)
    return _cap(ex, chat, d)


async def retarget(ex: Exchange) -> None:
    """Failover moved the request to another target (model, provider):
    the reservation made for the first one no longer bounds what this one
    may cost, nor covers its own budgets.  The failed attempt billed
    nothing (failover only follows errors raised before an answer), so
    release and reserve again for the new target; a refusal is the caller's
    429/403 like any other."""
    rt = ex.rt.quota
    if rt is None:
        return
    d = ex.quota
    if d is not None and d.reserved:
        await _release(ex)
    ex.quota = None
    _restore_limits(ex)
    await admit(ex, ex.chat)


_LIMITS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


class _Limits(msgspec.Struct):
    max_tokens: Any = None
    max_completion_tokens: Any = None
    max_output_tokens: Any = None


def _restore_limits(ex: Exchange) -> None:
    """The output limits of the caller's body as the caller sent them: the
    last target's cap must neither size the next reservation nor bound what
    the next target may write."""
    try:
        asked = msgspec.json.decode(ex.raw, type=_Limits)
    except msgspec.DecodeError:
        return  # the body was read as JSON at intake: cannot happen
    for name in _LIMITS:
        value = getattr(asked, name)
        if value is None:
            ex.body.pop(name, None)
        else:
            ex.body[name] = value


async def quota(ex: Exchange, next: Next) -> None:
    """The stage: reserve, hand on, and give back at once a reservation no
    usage event will settle (refused upstream, unreachable provider, a
    blocked answer, a caller who left) rather than at its expiry."""
    spec = ex.spec
    if spec is not None and not spec.metered:
        await next(ex)
        return
    # ex.chat stays what the caller asked for: each call caps it by the
    # reservation held for its target then (``capped``).
    await admit(ex, ex.chat)
    try:
        await next(ex)
    finally:
        # A detached call (a coalescing leader whose caller left, going on
        # for its joiners) settles or releases when it ends (stages/cache.py).
        d = ex.quota
        if d is not None and d.reserved and not ex.usage_recorded and not ex.detached:
            await _release(ex)


async def release_unsettled_of(ex: Exchange) -> None:
    """What release_unsettled does, for a call that outlived its handler."""
    if ex.quota is not None and ex.quota.reserved and not ex.usage_recorded:
        await _release(ex)


async def _release(ex: Exchange) -> None:
    rt = ex.rt.quota
    if rt is None or rt.gate is None:
        return
    try:
        await asyncio.shield(rt.gate.release(ex.request_id))
    except Exception as exc:  # it expires by itself (reservation_ttl_s)
        log.warning("could not release the reservation of %s: %s", ex.request_id, type(exc).__name__)


# --- streams --------------------------------------------------------------------------


def meter_for(ex: Exchange, provider_kind: str) -> StreamMeter | None:
    d = ex.quota
    if d is None or d.output_cap is None:
        return None
    return StreamMeter(d.output_cap, provider_kind, ex.provider_model)


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


# --- GET /v1/usage and /metrics/tenants ------------------------------------------------------


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


async def usage_call(ex: Exchange) -> None:
    """``GET /v1/usage``: spend and remaining on every budget and rate limit
    that applies to the calling key (Authorization: Bearer,
    x-nexus-virtual-key or x-api-key)."""
    key = ex.key
    assert key is not None
    rt = ex.rt.quota
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
    await send_json(ex, _encoder.encode(body))


async def refresh_metrics(runtime: Runtime) -> None:
    """Read back the counters of the keys this gateway served (all keys of
    a small config) so /metrics/tenants shows spend and remaining per budget."""
    rt = runtime.quota
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
