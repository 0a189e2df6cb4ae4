"""One request on its way through the pipeline, and the two ends a front
end plugs in: how the request came in (``Inbound``) and how the answer goes
out (``Outbound``).

A front end — the gateway's ``/v1`` HTTP API, the proxy's decrypted flows,
the agent's local listener — turns bytes into an ``Inbound`` and gives an
``Outbound`` to write the answer with; the stages never see the HTTP
framework.  An ``Exchange`` carries what every stage reads: who is calling,
what they asked for, where it goes, and the record its events are built
from.  What a feature needs only for itself it keeps in its own object
(``compliance``, ``quota``, ``routing``, ``cache``), written only by that
feature's stage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from streams.events import Interception, RequestReceived, Tenant, Usage

if TYPE_CHECKING:
    from adapters.base import Codec
    from adapters.canonical import ChatRequest
    from ingress.pipeline.call.targets import Route
    from ingress.pipeline.endpoint import Endpoint
    from ingress.pipeline.runtime import Runtime
    from ingress.pipeline.stages.cache import CacheState
    from ingress.pipeline.stages.compliance import RequestCompliance
    from ingress.pipeline.stages.passthrough import PassThrough
    from ingress.pipeline.stages.routing import RoutingState
    from ingress.quota import QuotaDecision
    from ingress.translate.grammar import Grammar
    from ingress.upstream import Upstream
    from streams.config import Model, VirtualKey


class Headers(Protocol):
    """A request's headers, looked up without regard to case (aiohttp's
    CIMultiDictProxy is one, as is ``ingress.http1.Headers``)."""

    def get(self, name: str, /) -> str | None: ...

    def __contains__(self, name: object, /) -> bool: ...

    def items(self) -> Iterable[tuple[str, str]]: ...


class Inbound(Protocol):
    """A request as a front end received it."""

    # Read-only members: a front end's own header type (aiohttp's
    # CIMultiDictProxy, ingress.http1's Headers) satisfies ``Headers``.
    @property
    def method(self) -> str: ...

    @property
    def path(self) -> str: ...

    @property
    def query(self) -> str:
        """The raw query string, without the "?" ("" when none)."""
        ...

    @property
    def headers(self) -> Headers: ...

    @property
    def client_ip(self) -> str: ...

    async def body(self, limit: int) -> bytes:
        """The whole body, decoded (Content-Encoding); raises the caller's
        GatewayError when it is over ``limit`` bytes or malformed."""
        ...


class BodyWriter(Protocol):
    """A started answer's body: chunks, then the end."""

    async def write(self, data: bytes) -> None:
        """Raises ``ClientGone`` when the caller is no longer there."""
        ...

    async def end(self) -> None: ...


class Outbound(Protocol):
    """How a front end answers: whole at once, or started and streamed.
    ``status`` is what was sent (0: nothing yet)."""

    @property
    def started(self) -> bool: ...

    @property
    def status(self) -> int: ...

    async def send(self, status: int, headers: dict[str, str], body: bytes, *, close: bool = False) -> None:
        """The whole answer; ``close``: the connection cannot be reused
        (what the caller sent was not read to its end)."""
        ...

    async def start(self, status: int, headers: dict[str, str]) -> BodyWriter: ...


class ClientGone(Exception):
    """The caller closed the connection while its answer was being written."""


class Exchange:
    """One request.  The fields in groups, with the stage that sets them:

    - receipt: ``request_id``, ``started``, ``rt`` (the runtime the request
      keeps to its end), ``inbound``, ``outbound``, ``ingress``,
      ``client_ip``, ``pending_received``;
    - authentication: ``key``, ``tenant``;
    - intake: ``endpoint`` and ``spec``, ``grammar`` (set from the path
      even before),
      ``raw``, ``body``, ``parsed``, ``chat``, ``requested_model``, ``stream``, and the
      target: ``model``, ``route``, ``upstream``, ``provider``,
      ``provider_model`` (routing moves the target on a retry or failover);
    - the record, read by the events: ``attempt``, ``credential_id``,
      ``routing_rule``, ``cache_status``, ``cache_saving_usd``,
      ``cost_usd``, ``usage_recorded``, ``outcome_status``,
      ``outcome_recorded``, ``prompt_sent``, ``detached``;
    - the answer's extra headers, which any stage may add: ``headers_out``;
    - each feature's own state: ``compliance``, ``quota``, ``routing``,
      ``cache``;
    - set by an intercepting front end (the proxy) before the stages run:
      ``interception`` (the connection's facts, for the record) and
      ``passthrough`` (the caller's own provider and credential: the
      request goes where it was addressed, ``stages/passthrough.py``).
    """

    __slots__ = (
        "attempt",
        "body",
        "cache",
        "cache_saving_usd",
        "cache_status",
        "chat",
        "client_ip",
        "compliance",
        "cost_usd",
        "credential_id",
        "detached",
        "endpoint",
        "grammar",
        "headers_out",
        "inbound",
        "ingress",
        "interception",
        "key",
        "model",
        "outbound",
        "outcome_recorded",
        "outcome_status",
        "parsed",
        "passthrough",
        "pending_received",
        "prompt_sent",
        "provider",
        "provider_model",
        "quota",
        "raw",
        "request_id",
        "requested_model",
        "route",
        "routing",
        "routing_rule",
        "rt",
        "spec",
        "started",
        "stream",
        "tenant",
        "upstream",
        "usage_recorded",
    )

    def __init__(
        self,
        request_id: str,
        rt: Runtime,
        inbound: Inbound,
        outbound: Outbound,
        grammar: Grammar,
        *,
        ingress: str = "gateway",
    ) -> None:
        self.request_id = request_id
        self.started = time.perf_counter()
        self.rt = rt
        self.inbound = inbound
        self.outbound = outbound
        self.ingress = ingress
        self.grammar = grammar  # the caller's format: errors are written in it
        self.client_ip = inbound.client_ip
        self.pending_received: tuple[RequestReceived, bytes | None] | None = None
        self.endpoint = ""  # its name, for the events and metrics: chat, messages, responses...
        self.spec: Endpoint | None = None  # what the endpoint is (intake sets it)
        self.key: VirtualKey | None = None
        self.tenant = Tenant()
        self.raw = b""  # the body as received (as redacted, once a hook redacted it)
        self.body: dict[str, Any] = {}  # the caller's JSON object
        self.parsed: Any = None  # the endpoint's canonical decode of it
        # The canonical chat request to forward (None: embeddings, or a
        # Responses call only a native target can read), as the request
        # hooks and the quota cap left it.
        self.chat: ChatRequest | None = None
        self.requested_model = ""
        self.stream = False
        self.model: Model | None = None  # the public model served
        self.route: Route | None = None  # its codec and target
        self.upstream: Upstream | None = None  # its provider's session
        self.provider = ""
        self.provider_model = ""
        self.attempt = 1  # the upstream attempt in progress (retries and fallbacks count up)
        self.credential_id = ""  # the pooled credential of that attempt
        self.routing_rule = ""
        self.cache_status = ""  # hit | miss | coalesced | bypass | skipped | semantic_hit ("": no cache)
        self.cache_saving_usd = 0.0
        self.cost_usd = 0.0  # what the recorded usage cost (a cache entry remembers it)
        self.usage_recorded = False  # a usage event settles the quota reservation
        self.outcome_status = 0  # set when the HTTP status is not the outcome (a stream that failed)
        self.outcome_recorded = False  # one RequestCompleted or RequestFailed per request
        # A caller who leaves: the estimated usage of a prompt a provider was
        # working on (None: no call in flight), and whether the call went on
        # for coalesced joiners.
        self.prompt_sent: Callable[[], Usage] | None = None
        self.detached = False
        self.headers_out: dict[str, str] = {}
        self.compliance: RequestCompliance | None = None
        self.quota: QuotaDecision | None = None
        self.routing: RoutingState | None = None
        self.cache: CacheState | None = None
        self.interception: Interception | None = None
        self.passthrough: PassThrough | None = None

    @property
    def model_name(self) -> str:
        """The public model served (a metrics label: never caller-chosen text;
        a pass-through request to a model the config does not list is
        ``unlisted``)."""
        if self.passthrough is not None and not self.passthrough.listed:
            return "unlisted"
        return self.model.name if self.model is not None else ""

    @property
    def codec(self) -> Codec:
        route = self.route
        assert route is not None and route.codec is not None  # intake refused providers without one
        return route.codec

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def set_key(self, key: VirtualKey) -> None:
        self.key = key
        self.tenant = Tenant(org_id=key.org, project_id=key.project, key_id=key.id, user_id=key.user)


Next = Callable[[Exchange], Awaitable[None]]


REQUEST_ID_HEADER = "x-nexus-request-id"
_SSE = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def answer_headers(ex: Exchange) -> dict[str, str]:
    """What every answer says besides its body, errors and streams
    included: the request id, where it was routed (once known), the quota
    headers of the limits that applied, and what stages added."""
    h = {REQUEST_ID_HEADER: ex.request_id}
    if ex.provider:
        h["X-Nexus-Routed-Provider"] = ex.provider
        h["X-Nexus-Routed-Model"] = ex.provider_model
    if ex.quota is not None:
        try:
            h.update(ex.quota.headers())
        except Exception:  # headers must never cost the caller the answer
            logging.getLogger("nexus.gateway").exception("quota headers of %s", ex.request_id)
    if ex.headers_out:
        h.update(ex.headers_out)
    return h


async def send_json(
    ex: Exchange, body: bytes, status: int = 200, content_type: str = "application/json"
) -> None:
    headers = answer_headers(ex)
    headers["Content-Type"] = content_type
    await ex.outbound.send(status, headers, body)


async def start_stream(ex: Exchange) -> BodyWriter:
    """Start a server-sent-events answer."""
    headers = answer_headers(ex)
    headers.update(_SSE)
    return await ex.outbound.start(200, headers)
