"""Smart routing's call: the router model is asked, through its own adapter
and session like any target but under the smart node's short timeout,
which catalog model should answer.  Whatever goes wrong (a timeout, an
error status, an answer that names no catalog model, or a model the key
may not call) leaves the pick empty and the node's default serves; the
caller never sees the router fail.  Nothing of the prompt or the answer is
logged."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client import Counter, Histogram

from adapters.base import CodecError
from ingress.pipeline.call.unary import guard
from ingress.pipeline.errors import GatewayError
from ingress.pipeline.runtime import Runtime
from ingress.routing.smart import read_answer, request_text, router_request
from ingress.upstream.transport import as_sent
from streams.config import Model
from streams.config_routing import Smart

log = logging.getLogger("nexus.gateway.smart")

SMART_DECISIONS = Counter(
    "nexus_smart_routing_total",
    "Smart routing decisions: picked, or why the default served",
    ["rule", "outcome"],
)
ROUTER_LATENCY = Histogram(
    "nexus_smart_router_duration_seconds",
    "The router model's answer time",
    ["rule"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
)


@dataclass(frozen=True)
class SmartPick:
    model: str | None  # None: the default serves
    # picked | timeout | router_error | unparseable | unknown_model | not_allowed
    outcome: str

    def routing_rule(self, rule: str) -> str:
        """What events and traffic_event record as the routing rule."""
        return f"{rule}:smart" if self.model is not None else f"{rule}:smart-default:{self.outcome}"


async def _answer(rt: Runtime, node: Smart, models: Mapping[str, Model], text: str) -> str | SmartPick:
    route = rt.routes.get(node.router)
    if route is None or route.codec is None:
        return SmartPick(None, "router_error")
    codec = route.codec
    upstream = rt.upstreams.get(route.provider.name)
    credential = route.pool.pick(random.random()) if route.pool is not None else None
    if credential is not None:
        route = route.with_credential(credential.secret)
    try:
        async with asyncio.timeout(node.timeout_ms / 1000):
            await route.refresh(upstream.session, node.timeout_ms / 1000)
            wire = codec.encode_chat(router_request(node, models, text), route.target)
            guard(upstream, wire.url)
            async with upstream.session.request(
                wire.method, as_sent(wire.url), data=wire.body, headers=wire.headers
            ) as resp:
                payload = await resp.read()
                status = resp.status
    except TimeoutError:
        return SmartPick(None, "timeout")
    except (aiohttp.ClientError, GatewayError, CodecError):
        return SmartPick(None, "router_error")
    if not 200 <= status < 300:
        if credential is not None and route.pool is not None and status in (401, 403, 429):
            route.pool.cool(credential.id, "rate_limited" if status == 429 else "refused")
        return SmartPick(None, "router_error")
    try:
        response = codec.decode_chat(payload, route.target)
    except CodecError:
        return SmartPick(None, "unparseable")
    content = response.choices[0].message.content if response.choices else None
    return content or SmartPick(None, "unparseable")


async def pick(
    rt: Runtime,
    rule: str,
    node: Smart,
    models: Mapping[str, Model],
    body: Mapping[str, Any],
    allowed: Callable[[str], bool],
) -> SmartPick:
    started = time.perf_counter()
    answered = await _answer(rt, node, models, request_text(body))
    ROUTER_LATENCY.labels(rule).observe(time.perf_counter() - started)
    if isinstance(answered, SmartPick):
        result = answered
    else:
        name = read_answer(answered)
        if name is None:
            result = SmartPick(None, "unparseable")
        elif name not in {e.model for e in node.catalog}:
            result = SmartPick(None, "unknown_model")
        elif not allowed(name):
            # The router never widens what a key may call.
            result = SmartPick(None, "not_allowed")
        else:
            result = SmartPick(name, "picked")
    SMART_DECISIONS.labels(rule, result.outcome).inc()
    if result.model is None:
        log.info("smart rule %s: default %s served (%s)", rule, node.default, result.outcome)
    return result
