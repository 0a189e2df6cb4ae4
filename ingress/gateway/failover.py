"""Routed requests: choosing the first target (at admission) and walking
the candidates with retries, backoff and per-target circuit breakers.

An attempt can be retried or handed to the next candidate only while
nothing has been sent to the caller: a unary call fails by raising, a
stream fails before its first byte by raising too (``stream_call`` opens
the upstream before it prepares the response).  A stream that breaks
mid-way has already spoken; it is reported in the caller's format by the
stream relay and counts as a failure for the target's breaker.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from adapters.canonical import ChatRequest
from ingress.gateway import errors, quota
from ingress.gateway.errors import GatewayError
from ingress.gateway.intake import Admitted
from ingress.gateway.routed import ROUTING, ask_router
from streams.config import Model
from streams.config_routing import Retry

_UNREACHABLE = errors.upstream_unreachable().message


def failure_class(err: GatewayError) -> str:
    if err.code == "timeout":
        return "timeout"
    if err.status == 502 and err.message == _UNREACHABLE:
        return "network"
    if err.status == 429:
        return "429"
    if err.status >= 500:
        return "5xx"
    return "4xx"


def backoff_s(retry: Retry, n: int, err: GatewayError, rng: random.Random) -> float | None:
    """The wait before retry ``n`` (0-based) on the same target: exponential
    with equal jitter, capped; a Retry-After longer than the cap means this
    target will not answer in time, so None (go to the next candidate)."""
    base = min(retry.max_backoff_ms, retry.backoff_ms * 2.0**n) / 1000
    wait = base / 2 + rng.random() * base / 2
    if err.retry_after_s is not None:
        if err.retry_after_s * 1000 > retry.max_backoff_ms:
            return None
        wait = max(wait, err.retry_after_s)
    return wait


async def rebind(a: Admitted[Any], model: Model) -> Admitted[Any]:
    """The same admitted request, aimed at another target."""
    state, ctx = a.state, a.ctx
    if model.name == a.model.name and ctx.model == model.name:
        return a  # still aimed there (a smart pick may have moved it away and back)
    provider = state.snapshot.providers[model.provider]
    route = state.routes[model.name]
    if route.codec is None:
        raise errors.unsupported_provider(provider.kind)
    upstream = state.upstreams.get(provider.name)
    await route.refresh(upstream.session, state.request_timeout_s)
    ctx.model = model.name
    ctx.provider = provider.name
    ctx.provider_model = model.provider_model or model.name
    moved = Admitted(state, ctx, a.body, a.parsed, model, upstream, route, a.raw)
    await quota.retarget(moved)  # reserve for this target (its price, its budgets)
    return moved


def benched(exc: GatewayError) -> str | None:
    """Why a failed attempt benches its credential: the provider refused it
    (401/403) or rate limited it (429); None for anything else."""
    if exc.stage != "upstream":
        return None
    if exc.code == "auth_failed":
        return "refused"
    return "rate_limited" if exc.status == 429 else None


async def pooled_call(
    a: Admitted[Any],
    call: Callable[[Admitted[Any]], Awaitable[web.StreamResponse]],
    rng: random.Random,
    more: Callable[[], bool],
) -> web.StreamResponse:
    """``call`` with a credential drawn from the target's pool by weight;
    one refused or rate limited is benched and the next one tried at once
    (each try is an attempt of its own; ``more``: whether the request may
    make another).  A target without a pool is one plain call."""
    pool = a.route.pool
    ctx = a.ctx
    if pool is None:
        ctx.credential_id = ""  # a previous candidate's pool is no longer in play
        return await call(a)
    tried: set[str] = set()
    while True:
        cred = pool.pick(rng.random(), tried)
        assert cred is not None  # a pool is never empty, and we stop before all were tried
        tried.add(cred.id)
        ctx.credential_id = cred.id
        attempt = Admitted(
            a.state,
            ctx,
            a.body,
            a.parsed,
            a.model,
            a.upstream.with_credential(cred.secret),
            a.route.with_credential(cred.secret),
            a.raw,
        )
        try:
            return await call(attempt)
        except GatewayError as exc:
            reason = benched(exc)
            if reason is None:
                raise
            pool.cool(cred.id, reason, exc.retry_after_s)
            if not pool.has_another(tried) or not more():
                raise
            ctx.attempt += 1


async def serve_routed(
    request: web.Request,
    a: Admitted[Any],
    call: Callable[[Admitted[Any]], Awaitable[web.StreamResponse]],
    chat: ChatRequest | None = None,
) -> web.StreamResponse:
    """``call`` on the routed candidates in order, with the rule's retries;
    a request that was not routed is one plain call.  ``chat``: the request
    the request stage let through, which a smart rule's router reads."""
    ctx = a.ctx
    await ask_router(request, ctx, chat)
    decision = ctx.routing
    runtime = request.app.get(ROUTING)
    if decision is None or runtime is None:
        return await pooled_call(a, call, runtime.rng if runtime else random.Random(), lambda: True)
    retry = runtime.retry_for(decision.rule)
    breakers = runtime.breakers
    last: GatewayError | None = None
    total = 0
    candidates = decision.candidates
    for i, cand in enumerate(candidates):
        final = i == len(candidates) - 1
        # An open breaker is skipped, unless it is the last resort and
        # nothing was tried: a certain error is no better than a try.
        if not breakers.allow(cand.model) and not (final and total == 0):
            continue
        target = await rebind(a, runtime.models[cand.model])
        for n in range(retry.max_attempts):
            if total >= retry.max_total_attempts:
                break
            if n > 0 and not breakers.allow(cand.model):
                break  # the failures so far opened its breaker: next candidate
            total += 1
            ctx.attempt = total
            try:
                response = await pooled_call(
                    target, call, runtime.rng, lambda: ctx.attempt < retry.max_total_attempts
                )
            except GatewayError as exc:
                total = ctx.attempt  # credentials of a pool tried in between
                if exc.stage != "upstream":
                    # A policy answer (hook block, quota): no verdict on the
                    # target, and a half-open probe slot is handed back.
                    breakers.release(cand.model)
                    raise
                last = exc
                kind = failure_class(exc)
                if kind == "4xx":
                    breakers.success(cand.model)  # it answered: the target is up
                else:
                    breakers.failure(cand.model)
                if (
                    kind in retry.on_failure
                    and n + 1 < retry.max_attempts
                    and total < retry.max_total_attempts
                ):
                    wait = backoff_s(retry, n, exc, runtime.rng)
                    if wait is not None:
                        await asyncio.sleep(wait)
                        continue
                if kind not in decision.fallback_on:
                    raise
                break
            except BaseException:
                breakers.release(cand.model)  # cancelled (the caller left): no verdict
                raise
            total = ctx.attempt
            if ctx.outcome_status >= 500:
                breakers.failure(cand.model)  # a stream that broke after it began
            else:
                breakers.success(cand.model)
            return response
        if total >= retry.max_total_attempts:
            break
    if last is None:  # every candidate's breaker is open
        raise GatewayError(
            503, "api_error", "no_healthy_target", "Every target of this route is unavailable.", stage="route"
        )
    raise last
