"""Live configuration: building the ``Runtime`` of a snapshot, and swapping
it in while the node serves.

``Swapper.apply(snapshot)`` compiles a snapshot into a ``Runtime`` — the
compliance engine and the token tables in a worker thread, never on the
event loop — and makes it current in one assignment.  Requests already in
progress finish on the runtime they started with; the replaced runtime
closes what the new one did not take over (a removed provider's session,
an engine whose hooks changed) once its last request is done.  A snapshot
that fails to build raises, and the gateway keeps serving the one it has
(fail static): the caller reports the failure.

Carried over from one runtime to the next, so that a configuration change
does not reset what the node has learnt about its upstreams: the upstream
sessions of unchanged providers (their keep-alive connections), the
circuit breakers of the models still there, the cool-downs of credential
pools that did not change, the compliance engine when the hooks did not
change, and the semantic cache when its settings did not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ingress import heap
from ingress.pipeline.call.targets import build_routes
from ingress.pipeline.runtime import Node, Runtime
from ingress.pipeline.stages import quota
from ingress.pipeline.stages.cache import CacheRuntime
from ingress.pipeline.stages.cache import start as start_cache
from ingress.pipeline.stages.compliance import build_engine, wants_engine
from ingress.quota.resp import PipelinedValkey
from ingress.routing import RoutingRuntime
from ingress.upstream import UpstreamPool
from streams.config_snapshot import ConfigSnapshot
from streams.settings import Settings

if TYPE_CHECKING:
    from ingress.hooks import ComplianceEngine

log = logging.getLogger("nexus.gateway")


class Clients:
    """The node's connections to the shared stores, opened when a snapshot
    first needs them and kept for the node's life (a later snapshot that
    needs them again finds them open).  Clients handed in by the caller are
    the caller's to close."""

    def __init__(self, valkey: Any, quota_client: Any, prefix: str, settings: Settings) -> None:
        self._valkey = valkey
        self._valkey_given = valkey is not None
        self._quota = quota_client
        self._owned: list[Any] = []
        self.url = settings.valkey_url
        # Keys on a client the caller hands in go under the prefix it gives;
        # on one the app opens, under the settings' (the quota processor's).
        given = valkey is not None or quota_client is not None
        self.prefix = prefix if given else settings.valkey_prefix

    def valkey(self) -> Any:
        """A ``valkey.asyncio`` client (rate-limit hooks, caches), or None
        when none was given and no NEXUS_VALKEY_URL is set."""
        if self._valkey is None and self.url:
            import valkey.asyncio as avalkey

            self._valkey = avalkey.from_url(self.url)  # type: ignore[no-untyped-call]
            self._owned.append(self._valkey)
        return self._valkey

    def quota(self) -> Any:
        """The reservation client: one pipelined connection, so concurrent
        requests share its writes and reads (``ingress.quota.resp``).  The
        caller's ``valkey`` client only when it handed in no quota client
        and there is no URL to open one: a valkey-py client the app opened
        itself (for the hooks, before the quota gate asked) cost each
        production request about 0.33 M instructions of command packing and
        reply parsing (issue 17)."""
        if self._quota is None:
            if self.url and not self._valkey_given:
                self._quota = PipelinedValkey.from_url(self.url)
                self._owned.append(self._quota)
            elif self._valkey is not None:
                self._quota = self._valkey
            elif self.url:
                self._quota = PipelinedValkey.from_url(self.url)
                self._owned.append(self._quota)
        return self._quota

    async def aclose(self) -> None:
        for client in self._owned:
            await client.aclose()
        self._owned.clear()


class Swapper:
    """Builds runtimes for a node and swaps them in, one at a time."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._lock = asyncio.Lock()

    async def apply(self, snapshot: ConfigSnapshot) -> Runtime:
        """Build ``snapshot``'s runtime and make it current; raises (and
        changes nothing) when it cannot be built."""
        async with self._lock:
            previous = self.node.runtime
            rt = await build(self.node, snapshot, previous)
            self.node.runtime = rt
            gw = snapshot.config.gateway
            self.node.admission.configure(
                max_inflight=gw.max_inflight,
                lag_threshold_s=gw.shed_loop_lag_ms / 1000,
                probe_interval_s=gw.loop_probe_interval_ms / 1000,
            )
            if previous is not None:
                previous.retire()
                log.info(
                    "gateway %s now serves config %s (revision %d)",
                    self.node.id.id,
                    snapshot.version,
                    snapshot.revision,
                )
            return rt

    async def close(self) -> None:
        """At the app's end (no request left): close what the current
        runtime holds."""
        async with self._lock:
            rt, self.node.runtime = self.node.runtime, None
            if rt is not None:
                await close_runtime(rt)


async def build(node: Node, snapshot: ConfigSnapshot, previous: Runtime | None) -> Runtime:
    env = node.env
    kept: list[str] = []  # what the new runtime took over, for the log
    # Sealed credentials are opened now, for this runtime, in memory only.
    sealed = await node.vault.open(snapshot.config) if node.vault is not None else None
    routes = await asyncio.to_thread(build_routes, snapshot, env, sealed)
    if previous is not None:
        _carry_pools(routes, previous)
    upstreams = UpstreamPool(snapshot.providers.values(), env, sealed)
    await upstreams.start(previous.upstreams if previous is not None else None)
    routing = RoutingRuntime(snapshot, admin_token=env.get(snapshot.config.auth.admin_token_env, ""))
    if previous is not None:
        old_models = previous.routing.models
        routing.breakers.adopt(
            previous.routing.breakers,
            lambda name: name in routing.models and old_models.get(name) == routing.models[name],
        )
    cache = CacheRuntime(snapshot)
    rt = Runtime(node, snapshot, upstreams, routes, routing, cache)
    try:
        hooks = snapshot.config.hooks
        if wants_engine(hooks):
            if node.break_glass is None:
                from ingress.pipeline.breakglass import BreakGlassSwitch

                node.break_glass = BreakGlassSwitch(node.id, node.publisher)
            same = previous is not None and previous.compliance is not None
            if same and previous is not None and previous.snapshot.config.hooks == hooks:
                rt.compliance = previous.compliance
                kept.append("compliance engine")
            else:
                rt.compliance = await build_engine(
                    snapshot, valkey=node.clients.valkey(), key_prefix=node.clients.prefix, node_id=node.id.id
                )
        if quota.wants_quota(snapshot):
            client = node.clients.quota()
            if client is None:
                log.warning("quotas are configured but no Valkey is: requests they apply to get 503")
            rt.quota = quota.build_runtime(snapshot, client, node.clients.prefix)
            await quota.preload_encodings(snapshot)
        await start_cache(cache, node.clients, previous.cache if previous is not None else None)
    except BaseException:
        # Nothing of a runtime that never served may stay open.
        await upstreams.close_unshared(previous.upstreams if previous is not None else None)
        if rt.compliance is not None and (previous is None or rt.compliance is not previous.compliance):
            await rt.compliance.aclose()
        raise
    if previous is not None:
        _hand_over(previous, rt)
    await asyncio.to_thread(heap.trim)  # the compiles' garbage: freed, still resident
    if kept:
        log.debug("carried over: %s", ", ".join(kept))
    return rt


def pass_through_runtime(node: Node, snapshot: ConfigSnapshot, engine: ComplianceEngine | None) -> Runtime:
    """A runtime for the pass-through stage list only (``pipeline.
    PASS_THROUGH``: the proxy's decrypted flows): no routes and no upstream
    sessions of its own (the front end brings the session that reaches the
    host the caller addressed), the snapshot's compliance engine (built by
    the front end, which also runs its connection stage)."""
    rt = Runtime(node, snapshot, UpstreamPool(()), {}, RoutingRuntime(snapshot), CacheRuntime(snapshot))
    rt.compliance = engine
    return rt


def _carry_pools(routes: Mapping[str, Any], previous: Runtime) -> None:
    """A provider's credential pool that did not change keeps its state
    (cool-downs of refused or rate-limited credentials)."""
    old = {r.provider.name: r.pool for r in previous.routes.values() if r.pool is not None}
    for route in routes.values():
        pool = old.get(route.provider.name)
        if route.pool is not None and pool is not None and pool.same_credentials(route.pool):
            route.pool = pool


def _hand_over(previous: Runtime, rt: Runtime) -> None:
    """What ``previous`` closes once retired and idle: what ``rt`` did not
    take over."""
    previous.on_retire(lambda: previous.upstreams.close_unshared(rt.upstreams))
    engine = previous.compliance
    if engine is not None and engine is not rt.compliance:
        previous.on_retire(engine.aclose)
    sem = previous.cache.semantic
    if sem is not None and sem is not rt.cache.semantic:
        previous.on_retire(sem.close)


async def close_runtime(rt: Runtime) -> None:
    """The last runtime of an app that stops: everything it holds."""
    await rt.upstreams.close()
    if rt.compliance is not None:
        await rt.compliance.aclose()
    if rt.cache.semantic is not None:
        await rt.cache.semantic.close()
