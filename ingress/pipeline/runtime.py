"""The node and the configuration it serves on.

``Node`` is the process: what lives as long as it does, whatever the
configuration says.  ``Runtime`` is one config snapshot compiled for the
request path; ``ingress.pipeline.swapper`` builds runtimes and swaps them
in while the node serves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ingress.pipeline.admission import Admission
from ingress.pipeline.call.targets import Route
from ingress.routing import RoutingRuntime
from ingress.upstream import UpstreamPool
from streams.config_snapshot import ConfigSnapshot
from streams.events import Event
from streams.events import Node as NodeId
from streams.spill import SpillStore
from streams.vault.opener import Opener

if TYPE_CHECKING:
    # Typing only: importing the engine loads presidio (seconds), which a
    # gateway without hooks never pays.
    from ingress.hooks import ComplianceEngine
    from ingress.pipeline.breakglass import BreakGlassSwitch
    from ingress.pipeline.stages.cache import CacheRuntime
    from ingress.pipeline.stages.quota import QuotaRuntime
    from ingress.pipeline.swapper import Clients, Swapper

log = logging.getLogger("nexus.gateway")


class EventSink(Protocol):
    """What the gateway needs of a publisher: a sync, non-blocking emit
    (``streams.publisher.Publisher`` is one)."""

    def emit(self, event: Event) -> None: ...


def _backlog_of(sink: EventSink) -> Callable[[], int]:
    """How many events the sink holds in memory, waiting (the publisher's
    ``backlog``); a sink that keeps none waiting, 0."""
    if not hasattr(sink, "backlog"):
        return lambda: 0
    return lambda: int(getattr(sink, "backlog"))  # noqa: B009 - not part of EventSink


class Node:
    """The gateway process: what lives as long as the app does, whatever the
    configuration says — the event sink, this node's identity, load
    shedding, the requests in flight, background work, the break-glass
    latch, the connections to shared stores — and the ``Runtime`` of the
    snapshot it serves now (``ingress.pipeline.swapper`` builds and swaps
    it).  ``env`` is where provider credentials are read from."""

    __slots__ = (
        "admission",
        "background",
        "break_glass",
        "clients",
        "env",
        "id",
        "inflight",
        "publisher",
        "runtime",
        "spill",
        "swaps",
        "vault",
    )

    def __init__(
        self,
        snapshot: ConfigSnapshot,
        publisher: EventSink,
        node: NodeId,
        spill: SpillStore | None,
        env: Mapping[str, str],
        clients: Clients,
        vault: Opener | None = None,
    ) -> None:
        self.publisher = publisher
        # Opens the snapshot's sealed provider credentials (None: no vault:
        # a provider that names one has no credential).
        self.vault = vault
        self.id = node
        self.spill = spill
        self.env = env
        self.clients = clients
        gw = snapshot.config.gateway
        self.inflight = 0
        self.admission = Admission(
            max_inflight=gw.max_inflight,
            lag_threshold_s=gw.shed_loop_lag_ms / 1000,
            probe_interval_s=gw.loop_probe_interval_ms / 1000,
            inflight=lambda: self.inflight,
            backlog=_backlog_of(publisher),
        )
        self.background: set[asyncio.Future[Any]] = set()  # work that outlives a request
        # This node's own kill switch: made when a snapshot first has hooks,
        # or when its endpoint is first called.
        self.break_glass: BreakGlassSwitch | None = None
        # Set by the app's start-up (ingress.pipeline.runtime.Swapper), then
        # replaced by each snapshot applied while serving.
        self.runtime: Runtime | None = None
        self.swaps: Swapper | None = None

    @property
    def current(self) -> Runtime:
        rt = self.runtime
        assert rt is not None, "the gateway has not started"
        return rt


class Runtime:
    """One config snapshot, compiled for the request path: the routes and
    their codecs, the upstream sessions, routing with its breakers, the
    compliance engine, the quota gate, the caches, the limits.  A request
    takes the runtime current when it arrives and keeps it to its end
    (``acquire``/``release``), so a snapshot applied meanwhile never changes
    a request half way; a runtime replaced by a newer one closes what the
    newer one did not take over once its last request is done."""

    __slots__ = (
        "_closers",
        "cache",
        "compliance",
        "host",
        "max_body_bytes",
        "quota",
        "refs",
        "request_timeout_s",
        "retired",
        "routes",
        "routing",
        "snapshot",
        "upstreams",
    )

    def __init__(
        self,
        host: Node,
        snapshot: ConfigSnapshot,
        upstreams: UpstreamPool,
        routes: dict[str, Route],
        routing: RoutingRuntime,
        cache: CacheRuntime,
    ) -> None:
        self.host = host
        self.snapshot = snapshot
        self.upstreams = upstreams
        self.routes = routes
        self.routing = routing
        self.cache = cache
        # Read once: nothing on the request path goes back to the config.
        gw = snapshot.config.gateway
        self.max_body_bytes = gw.max_body_bytes
        self.request_timeout_s = gw.request_timeout_s
        # The compliance engine of this snapshot (None: no hook configured).
        self.compliance: ComplianceEngine | None = None
        # The snapshot's quota policy and gate (None: no quota configured).
        self.quota: QuotaRuntime | None = None
        self.refs = 0
        self.retired = False
        self._closers: list[Callable[[], Awaitable[None]]] = []

    # What every request reads of the node, at hand on its runtime.
    @property
    def publisher(self) -> EventSink:
        return self.host.publisher

    @property
    def node(self) -> NodeId:
        return self.host.id

    @property
    def spill(self) -> SpillStore | None:
        return self.host.spill

    @property
    def background(self) -> set[asyncio.Future[Any]]:
        return self.host.background

    @property
    def break_glass(self) -> BreakGlassSwitch | None:
        return self.host.break_glass

    @property
    def inflight(self) -> int:
        return self.host.inflight

    def on_retire(self, close: Callable[[], Awaitable[None]]) -> None:
        """Run ``close`` once this runtime is replaced and idle."""
        self._closers.append(close)

    def acquire(self) -> Runtime:
        self.refs += 1
        return self

    def release(self) -> None:
        self.refs -= 1
        if self.retired and self.refs == 0:
            self._close_soon()

    def retire(self) -> None:
        self.retired = True
        if self.refs == 0:
            self._close_soon()

    def _close_soon(self) -> None:
        closers, self._closers = self._closers, []
        if not closers:
            return

        async def close() -> None:
            for c in closers:
                try:
                    await c()
                except Exception:  # a failing close must not stop the others
                    logging.getLogger("nexus.gateway").exception("closing a replaced runtime")

        task = asyncio.get_running_loop().create_task(close())
        self.host.background.add(task)
        task.add_done_callback(self.host.background.discard)
