"""Where a request goes: the routing rule of the requested model picks the
candidates (``ingress.routing``; at intake, ``choose``), and this stage
walks them — retries with backoff, failover to the next candidate, circuit
breakers per target, credentials drawn from a provider's pool — calling the
rest of the pipeline (the provider call) for each attempt.

An attempt can be retried or handed to the next candidate only while
nothing has been sent to the caller: a unary call fails by raising, a
stream fails before its first byte by raising too (the stream pump opens
the upstream before it starts the answer).  A stream that breaks mid-way
has already spoken; it is reported in the caller's format by the pump and
counts as a failure for the target's breaker.

A smart rule (``model: auto``) asks its router model once the request
hooks have run (they must see, block or redact a prompt before any
provider does, the router included).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from ingress.pipeline import errors
from ingress.pipeline.errors import GatewayError
from ingress.pipeline.exchange import Exchange, Next
from ingress.pipeline.stages import quota
from ingress.pipeline.stages.authentication import may_use
from ingress.pipeline.stages.smart import pick
from ingress.pipeline.target import aim
from ingress.routing import Decision, RouteContext
from streams.config import Model, VirtualKey
from streams.config_routing import Retry, Rule, Smart, root_smart
from streams.config_snapshot import ConfigSnapshot

_UNREACHABLE = errors.upstream_unreachable().message


@dataclasses.dataclass(frozen=True)
class SmartPending:
    """A smart rule whose router is asked once the request stage has run."""

    rule: Rule
    node: Smart
    route: RouteContext
    allowed: Callable[[str], bool]


class RoutingState:
    """A routed request's decision (the candidates, in order) and a smart
    rule's pending router call."""

    __slots__ = ("decision", "smart")

    def __init__(self, decision: Decision, smart: SmartPending | None) -> None:
        self.decision = decision
        self.smart = smart


def no_route(requested: str) -> GatewayError:
    return GatewayError(
        400,
        "invalid_request_error",
        "no_route",
        f"No routing target of {requested!r} applies to this request.",
        param="model",
        stage="route",
    )


def _fit(decision: Decision, models: Mapping[str, Model], kind: str) -> Decision:
    # Capability filter: an embeddings call only goes to embedding models.
    fit = tuple(c for c in decision.candidates if models[c.model].kind == kind)
    return dataclasses.replace(decision, candidates=fit)


def key_metadata(snapshot: ConfigSnapshot, key: VirtualKey) -> dict[str, Any]:
    """What ``metadata.<name>`` conditions see: the org's labels, then the
    project's, then the key's (the nearer one wins)."""
    org, project = snapshot.orgs.get(key.org), snapshot.projects.get(key.project)
    return {
        **(org.metadata if org is not None else {}),
        **(project.metadata if project is not None else {}),
        **key.metadata,
    }


def choose(ex: Exchange, kind: str) -> Model | None:
    """At intake: the first candidate of the rule that matches the requested
    model (None: no rule; the model is looked up as named).  A smart rule
    is admitted for its default (or, when the key may not call that, the
    first catalog model it may); the stage asks its router later."""
    runtime = ex.rt.routing
    rule = runtime.rule_for(ex.requested_model)
    if rule is None:
        return None
    key = ex.key
    assert key is not None
    meta = {"id": key.id, "org": key.org, "project": key.project, "user": key.user}
    route_ctx = RouteContext(
        model=ex.requested_model,
        endpoint=ex.endpoint,
        stream=ex.stream,
        headers={k.lower(): v for k, v in ex.inbound.headers.items() if k.lower() != "authorization"},
        key=meta,
        metadata=key_metadata(ex.rt.snapshot, key),
    )
    models = runtime.models

    def allowed(name: str) -> bool:
        return may_use(key, models[name], name)

    decision = _fit(runtime.decide(rule, route_ctx, allowed), models, kind)
    smart = root_smart(rule.strategy)
    pending: SmartPending | None = None
    if smart is not None and kind == "chat":
        pending = SmartPending(rule, smart, route_ctx, allowed)
        for entry in smart.catalog:
            if decision.candidates:
                break
            decision = _fit(runtime.decide(rule, route_ctx, allowed, entry.model), models, kind)
    ex.routing = RoutingState(decision, pending)
    ex.routing_rule = rule.name
    if not decision.candidates:
        if decision.refused:
            raise errors.model_not_allowed(ex.requested_model)
        raise no_route(ex.requested_model)
    return models[decision.candidates[0].model]


async def _ask_router(ex: Exchange, state: RoutingState) -> None:
    """A smart rule's router call, on the request as the request stage let
    it through (redactions applied); its pick's decision (or the default's)
    replaces the one made at intake."""
    pending = state.smart
    if pending is None:
        return
    state.smart = None
    chat = ex.chat
    body = msgspec.to_builtins(chat) if chat is not None else {}
    models = ex.rt.routing.models
    picked = await pick(ex.rt, pending.rule.name, pending.node, models, body, pending.allowed)
    state.decision = _fit(
        ex.rt.routing.decide(pending.rule, pending.route, pending.allowed, picked.model), models, "chat"
    )
    ex.routing_rule = picked.routing_rule(pending.rule.name)
    if not state.decision.candidates:
        # The router failed and the key may not call the default.
        raise errors.model_not_allowed(ex.requested_model)


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


async def _aim(ex: Exchange, model: Model) -> None:
    """Aim the request at another candidate, reserving for it (its price,
    its budgets)."""
    if ex.model is not None and model.name == ex.model.name:
        return  # still aimed there (a smart pick may have moved it away and back)
    await aim(ex, model.name)
    await quota.retarget(ex)


def benched(exc: GatewayError) -> str | None:
    """Why a failed attempt benches its credential: the provider refused it
    (401/403) or rate limited it (429); None for anything else."""
    if exc.stage != "upstream":
        return None
    if exc.code == "auth_failed":
        return "refused"
    return "rate_limited" if exc.status == 429 else None


async def _pooled(ex: Exchange, next: Next, rng: random.Random, more: Callable[[], bool]) -> None:
    """The call with a credential drawn from the target's pool by weight;
    one refused or rate limited is benched and the next one tried at once
    (each try is an attempt of its own; ``more``: whether the request may
    make another).  A target without a pool is one plain call."""
    route, upstream = ex.route, ex.upstream
    assert route is not None and upstream is not None
    pool = route.pool
    if pool is None:
        ex.credential_id = ""  # a previous candidate's pool is no longer in play
        await next(ex)
        return
    tried: set[str] = set()
    try:
        while True:
            cred = pool.pick(rng.random(), tried)
            assert cred is not None  # a pool is never empty, and we stop before all were tried
            tried.add(cred.id)
            ex.credential_id = cred.id
            ex.route = route.with_credential(cred.secret)
            try:
                await next(ex)
                return
            except GatewayError as exc:
                reason = benched(exc)
                if reason is None:
                    raise
                pool.cool(cred.id, reason, exc.retry_after_s)
                if not pool.has_another(tried) or not more():
                    raise
                ex.attempt += 1
    finally:
        ex.route, ex.upstream = route, upstream


async def routing(ex: Exchange, next: Next) -> None:
    """The rest of the pipeline on the routed candidates in order, with the
    rule's retries; a request that was not routed is one plain call."""
    runtime = ex.rt.routing
    state = ex.routing
    spec = ex.spec
    if state is None or (spec is not None and not spec.routed):
        await _pooled(ex, next, runtime.rng, lambda: True)
        return
    await _ask_router(ex, state)
    decision = state.decision
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
        await _aim(ex, runtime.models[cand.model])
        for n in range(retry.max_attempts):
            if total >= retry.max_total_attempts:
                break
            if n > 0 and not breakers.allow(cand.model):
                break  # the failures so far opened its breaker: next candidate
            total += 1
            ex.attempt = total
            try:
                await _pooled(ex, next, runtime.rng, lambda: ex.attempt < retry.max_total_attempts)
            except GatewayError as exc:
                total = ex.attempt  # credentials of a pool tried in between
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
            total = ex.attempt
            if ex.outcome_status >= 500:
                breakers.failure(cand.model)  # a stream that broke after it began
            else:
                breakers.success(cand.model)
            return
        if total >= retry.max_total_attempts:
            break
    if last is None:  # every candidate's breaker is open
        raise GatewayError(
            503, "api_error", "no_healthy_target", "Every target of this route is unavailable.", stage="route"
        )
    raise last
