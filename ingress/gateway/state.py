"""The gateway's typed state: what the app holds for its lifetime, and what
each request carries through the middleware and handlers."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from ingress.gateway.admission import Admission
from ingress.gateway.targets import Route
from ingress.translate.grammar import OPENAI_CHAT, Grammar
from ingress.upstream import UpstreamPool
from streams.config import ConfigSnapshot, VirtualKey
from streams.events import Event, Node, RequestReceived, Tenant
from streams.spill import SpillStore

if TYPE_CHECKING:
    # Typing only: importing the engine loads presidio (seconds), which a
    # gateway without hooks never pays.
    from ingress.gateway.compliance import RequestCompliance
    from ingress.gateway.quota import QuotaRuntime
    from ingress.hooks import BreakGlassLatch, ComplianceEngine
    from ingress.quota import QuotaDecision
    from ingress.routing import Decision


class EventSink(Protocol):
    """What the gateway needs of a publisher: a sync, non-blocking emit
    (``streams.publisher.Publisher`` is one)."""

    def emit(self, event: Event) -> None: ...


class GatewayState:
    __slots__ = (
        "admission",
        "background",
        "break_glass",
        "compliance",
        "inflight",
        "max_body_bytes",
        "max_inflight",
        "node",
        "publisher",
        "quota",
        "request_timeout_s",
        "routes",
        "snapshot",
        "spill",
        "upstreams",
        "valkey",
    )

    def __init__(
        self,
        snapshot: ConfigSnapshot,
        publisher: EventSink,
        node: Node,
        upstreams: UpstreamPool,
        spill: SpillStore | None,
        routes: dict[str, Route] | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.publisher = publisher
        self.node = node
        self.upstreams = upstreams
        self.spill = spill
        self.routes = routes or {}
        # Read once: nothing on the request path goes back to the config.
        gw = snapshot.config.gateway
        self.max_body_bytes = gw.max_body_bytes
        self.max_inflight = gw.max_inflight
        self.request_timeout_s = gw.request_timeout_s
        self.inflight = 0
        self.admission = Admission(
            max_inflight=gw.max_inflight,
            lag_threshold_s=gw.shed_loop_lag_ms / 1000,
            probe_interval_s=gw.loop_probe_interval_ms / 1000,
            inflight=lambda: self.inflight,
        )
        self.background: set[asyncio.Task[None]] = set()
        # The compliance engine of this snapshot (None: no hook configured)
        # and what it needs: a Valkey client (rate limiter) and this node's
        # break-glass latch.  Set by the app's start-up.
        self.compliance: ComplianceEngine | None = None
        self.valkey: Any = None
        self.break_glass: BreakGlassLatch | None = None
        # The snapshot's quota policy and gate (None: no quota configured).
        self.quota: QuotaRuntime | None = None


class RequestContext:
    """What one request accumulates as it goes; events and metrics read it."""

    __slots__ = (
        "attempt",
        "cache_saving_usd",
        "cache_status",
        "client_ip",
        "compliance",
        "cost_usd",
        "credential_id",
        "endpoint",
        "grammar",
        "model",
        "outcome_status",
        "pending_received",
        "provider",
        "provider_model",
        "quota",
        "request_id",
        "requested_model",
        "routing",
        "routing_rule",
        "started",
        "stream",
        "tenant",
        "usage_recorded",
    )

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.started = time.perf_counter()
        self.tenant = Tenant()
        self.endpoint = ""
        self.grammar: Grammar = OPENAI_CHAT  # the caller's format: errors are written in it
        self.requested_model = ""
        self.model = ""  # the resolved public model name (a metrics label: never caller-chosen text)
        self.provider = ""
        self.provider_model = ""
        self.stream = False
        self.outcome_status = 0  # set when the HTTP status is not the outcome (a failed stream)
        # Compliance: the request's stage state, and its RequestReceived held
        # back until the request stage decided what body to record.
        self.compliance: RequestCompliance | None = None
        self.client_ip = ""
        self.pending_received: tuple[RequestReceived, bytes] | None = None
        # Quota: the check's decision (None: no limit applied), and whether
        # a usage event was recorded (it settles the reservation; else the
        # reservation is released when the request ends).
        self.quota: QuotaDecision | None = None
        self.usage_recorded = False
        # Routing: the decision for a routed model name (None: the model was
        # named directly), its rule, and the number of the upstream attempt
        # in progress (retries and fallbacks count up).
        self.routing: Decision | None = None
        self.routing_rule = ""
        self.attempt = 1
        self.credential_id = ""  # the pooled credential of the attempt in progress
        # Cache: hit | miss | coalesced | bypass | skipped ("" = no cache),
        # what a hit saved, and what this request's usage cost (a cache
        # entry remembers it).
        self.cache_status = ""
        self.cache_saving_usd = 0.0
        self.cost_usd = 0.0

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def set_key(self, key: VirtualKey) -> None:
        self.tenant = Tenant(org_id=key.org, project_id=key.project, key_id=key.id, user_id=key.user)


STATE = web.AppKey("nexus_gateway_state", GatewayState)
CTX = web.RequestKey("nexus_request_context", RequestContext)
