"""The exact cache and request coalescing around a chat call.

After the request stage (hooks have blocked or redacted, quota reserved),
before routing: a request is keyed (``ingress.cache.exact_key``); a hit
replays the bytes a caller once received (a JSON answer, or the whole SSE
stream, in the caller's format: the endpoint is in the key); a miss may
join an identical request in flight (coalescing) or lead one, whose bytes
are captured as they are written and stored when the answer completed.

Accounting: a hit or a joiner made no upstream call, so it records no
UpstreamResult and no UsageRecorded (nothing is charged; the quota
reservation is released); its RequestCompleted says ``cache_status``
("hit" / "coalesced"), ``attempts`` 0 and, for a hit, the USD the original
answer cost (``cache_saving_usd``).  ``X-Nexus-Cache``: HIT, MISS,
COALESCED, BYPASS or SKIP.

The semantic cache (``ingress.pipeline.stages.semantic``) is asked after the exact
cache misses: a hit is replayed the same way, with ``cache_status``
"semantic_hit" and ``X-Nexus-Cache: SEMANTIC_HIT``; the answer a miss
leads to fills both caches.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from adapters.base import CodecError
from adapters.canonical import ChatRequest
from ingress.cache import Coalescer, Entry, ExactCache, Flight, exact_key, time_sensitive
from ingress.pipeline import record
from ingress.pipeline.errors import GatewayError
from ingress.pipeline.exchange import BodyWriter, ClientGone, Exchange, Next, Outbound, answer_headers
from ingress.pipeline.stages import quota
from ingress.pipeline.stages import semantic as semantic_gw
from streams.config_cache import CacheConfig
from streams.config_snapshot import ConfigSnapshot

if TYPE_CHECKING:
    # numpy (~11 MB resident) loads only when the semantic cache starts.
    from ingress.cache.semantic.cache import Probe, SemanticCache

log = logging.getLogger("nexus.cache")

NO_CACHE_HEADER = "x-nexus-aigw-no-cache"
CACHE_HEADER = "X-Nexus-Cache"
_SSE = "text/event-stream"


class CacheRuntime:
    def __init__(self, snapshot: ConfigSnapshot) -> None:
        self.config: CacheConfig = snapshot.config.cache
        self.exact: ExactCache | None = None  # set on start-up when Valkey is there
        self.semantic: SemanticCache | None = None  # likewise, when its model loads
        self.coalescer = Coalescer()

    @property
    def active(self) -> bool:
        return self.config.enabled or self.config.coalesce or self.config.semantic.enabled


class CacheState:
    """A leader's tap: the bytes its caller receives, as they are written
    (what joiners follow and what the caches store), and whether the
    caller is still there."""

    __slots__ = ("cap", "content_type", "entry", "flight", "gone", "parts", "size", "status", "streamed")

    def __init__(self, cap: int, flight: Flight | None) -> None:
        self.cap = cap
        self.entry = ""  # the semantic entry this answer fills, for poison feedback
        self.flight = flight
        self.parts: list[bytes] | None = []  # None: over the size cap, not stored
        self.size = 0
        self.gone = False  # the leader's own caller disconnected
        self.status = 0
        self.content_type = ""
        self.streamed = False

    def take(self, data: bytes) -> None:
        if self.flight is not None:
            self.flight.push(data)
        if self.parts is None:
            return
        self.size += len(data)
        if self.size > self.cap:
            self.parts = None
        else:
            self.parts.append(data)


class _TapOutbound:
    """The leader's answer, kept as it is written (``CacheState``) on its way
    to the caller; once the caller left, only kept (joiners still follow)."""

    __slots__ = ("inner", "tap")

    def __init__(self, inner: Outbound, tap: CacheState) -> None:
        self.inner = inner
        self.tap = tap

    @property
    def started(self) -> bool:
        return self.inner.started

    @property
    def status(self) -> int:
        return self.tap.status or self.inner.status

    async def send(self, status: int, headers: dict[str, str], body: bytes, *, close: bool = False) -> None:
        tap = self.tap
        tap.status, tap.content_type = status, headers.get("Content-Type", "application/json")
        if tap.parts is not None:
            tap.parts.append(body)
        if status == 200:
            headers[CACHE_HEADER] = "MISS"
            if tap.entry:
                headers[semantic_gw.ENTRY_HEADER] = tap.entry
        if not tap.gone:
            await self.inner.send(status, headers, body, close=close)

    async def start(self, status: int, headers: dict[str, str]) -> BodyWriter:
        tap = self.tap
        tap.status, tap.content_type, tap.streamed = status, _SSE, True
        headers[CACHE_HEADER] = "MISS"
        if tap.entry:
            headers[semantic_gw.ENTRY_HEADER] = tap.entry
        if tap.flight is not None:
            tap.flight.begin("stream", _SSE)
        inner = None if tap.gone else await self.inner.start(status, headers)
        return _TapWriter(inner, tap)


class _TapWriter:
    __slots__ = ("inner", "tap")

    def __init__(self, inner: BodyWriter | None, tap: CacheState) -> None:
        self.inner = inner
        self.tap = tap

    async def write(self, data: bytes) -> None:
        tap = self.tap
        tap.take(data)
        if tap.gone or self.inner is None:
            return
        try:
            await self.inner.write(data)
        except ClientGone:
            # The leader's caller left; joiners still follow this stream, so
            # it keeps being read for them rather than cut for everyone.
            if tap.flight is None or not tap.flight.waiters:
                raise
            tap.gone = True

    async def end(self) -> None:
        if self.inner is not None and not self.tap.gone:
            await self.inner.end()


async def start(rt: CacheRuntime, clients: Any, previous: CacheRuntime | None) -> None:
    """The caches of a new snapshot on the node's Valkey client (``clients``:
    ``ingress.pipeline.swapper.Clients``).  The semantic cache (its model
    and index) is taken over from ``previous`` when its settings did not
    change; a coalescing flight in progress stays with the runtime it
    began on."""
    if not (rt.config.enabled or rt.config.semantic.enabled):
        return
    client = clients.valkey()
    if client is None:
        log.warning("the response cache is enabled but no Valkey is configured: it stays off")
        return
    c = rt.config
    if c.enabled:
        rt.exact = ExactCache(client, clients.prefix, c.ttl_s, c.max_entry_bytes, c.lookup_timeout_ms / 1000)
    if c.semantic.enabled:
        old = previous.semantic if previous is not None else None
        if old is not None and previous is not None and _same_semantic(previous.config, c):
            rt.semantic = old
        else:
            rt.semantic = await semantic_gw.start(client, clients.prefix, c)


def _same_semantic(a: CacheConfig, b: CacheConfig) -> bool:
    return a.semantic == b.semantic and a.ttl_s == b.ttl_s and a.max_entry_bytes == b.max_entry_bytes


def scope(ex: Exchange, how: str) -> str:
    t = ex.tenant
    return {"key": f"key:{t.key_id}", "project": f"project:{t.project_id}", "org": f"org:{t.org_id}"}[how]


def _last_user_text(chat: ChatRequest) -> list[str]:
    for m in reversed(chat.messages):
        if m.role == "user":
            return [m.text()]
    return []


def _key(ex: Exchange, chat: ChatRequest, rt: CacheRuntime) -> str | None:
    route = ex.route
    if route is None or route.codec is None:
        return None
    try:
        prepared = route.codec.encode_chat(chat, route.target).body
    except CodecError:
        return None  # the call itself reports it
    return exact_key(
        config_version=ex.rt.snapshot.version,
        endpoint=ex.endpoint,
        requested_model=ex.requested_model,
        provider=ex.provider,
        provider_model=ex.provider_model,
        prepared_body=prepared,
        caller_body=ex.raw,
        scope=scope(ex, rt.config.scope),
    )


def _answered(ex: Exchange, status: str, *, provider: str = "", saving: float = 0.0) -> None:
    ex.cache_status = status
    ex.attempt = 0
    ex.cache_saving_usd = saving
    if provider:
        ex.provider = provider
    record.completed(ex)


async def _replay(
    ex: Exchange, entry: Entry, status: str = "hit", extra: dict[str, str] | None = None
) -> None:
    ex.provider_model = entry.provider_model or ex.provider_model
    if entry.provider:
        ex.provider = entry.provider
    headers = answer_headers(ex)
    headers[CACHE_HEADER] = status.upper()
    headers.update(extra or {})
    if entry.kind == "response":
        headers["Content-Type"] = entry.content_type
        await ex.outbound.send(200, headers, entry.body)
    else:
        headers.update({"Content-Type": _SSE, "Cache-Control": "no-cache"})
        out = await ex.outbound.start(200, headers)
        await out.write(entry.body)
        await out.end()
    _answered(ex, status, provider=entry.provider, saving=entry.cost_usd)


async def _semantic(ex: Exchange, chat: ChatRequest, rt: CacheRuntime) -> Probe | None:
    sem = rt.semantic
    if sem is None:
        return None
    found = semantic_gw.partition(ex, chat, scope(ex, rt.config.scope), rt.config)
    if found is None:
        return None
    part, text = found
    return await sem.lookup(part, scope(ex, rt.config.scope), text)


async def _join(ex: Exchange, flight: Flight) -> bool:
    """A joiner's answer from the leader's bytes; False when the leader
    failed before writing anything (the joiner then makes its own call)."""
    ev = await flight.follow()
    try:
        while not flight.kind and not flight.done:
            ev.clear()
            await ev.wait()
        if flight.kind == "response":
            while not flight.done:
                ev.clear()
                await ev.wait()
            if not flight.ok:
                return False
            headers = answer_headers(ex)
            headers.update({CACHE_HEADER: "COALESCED", "Content-Type": flight.content_type})
            await ex.outbound.send(200, headers, flight.chunks[0])
            _answered(ex, "coalesced")
            return True
        if not flight.kind:
            return False  # done without an answer: the leader failed
        headers = answer_headers(ex)
        headers.update({"Content-Type": _SSE, "Cache-Control": "no-cache", CACHE_HEADER: "COALESCED"})
        out = await ex.outbound.start(200, headers)
        sent = 0
        while True:
            ev.clear()
            while sent < len(flight.chunks):
                await out.write(flight.chunks[sent])
                sent += 1
            if flight.done:
                break
            await ev.wait()
        await out.end()
    finally:
        flight.leave(ev)
    if flight.ok:
        _answered(ex, "coalesced")
    else:
        ex.cache_status = "coalesced"
        ex.attempt = 0
        record.failed(
            ex,
            GatewayError(502, "api_error", "upstream_error", "The provider's stream broke.", stage="stream"),
        )
        ex.outcome_status = 502
    return True


async def cache(ex: Exchange, next: Next) -> None:
    """The stage: a hit replays what a caller once received (a JSON answer,
    or the whole SSE stream, in the caller's format: the endpoint is in the
    key); a miss may join an identical request in flight (coalescing) or
    lead one, whose bytes are captured as they are written and stored when
    the answer completed."""
    rt = ex.rt.cache
    spec = ex.spec
    chat = ex.chat
    if not rt.active or chat is None or spec is None or not spec.may_cache(ex):
        await next(ex)
        return
    cfg = rt.config
    headers = ex.inbound.headers
    bad = headers.get(semantic_gw.POISON_HEADER)
    if bad and rt.semantic is not None:
        exact_prefix = rt.exact.prefix if rt.exact is not None else ""
        await semantic_gw.poison_own(rt.semantic, exact_prefix, bad, scope(ex, cfg.scope))
    if headers.get(NO_CACHE_HEADER) == "1":
        await _through(ex, "bypass", "BYPASS", next)
        return
    if (ex.stream and not cfg.streams) or time_sensitive(_last_user_text(chat), cfg.skip_patterns):
        await _through(ex, "skipped", "SKIP", next)
        return
    key = _key(ex, chat, rt)
    if key is None:
        await next(ex)
        return
    if cfg.enabled and rt.exact is not None:
        entry = await rt.exact.get(key)
        if entry is not None and (entry.kind == "stream") == ex.stream:
            await _replay(ex, entry)
            return
    probe = await _semantic(ex, chat, rt)
    if probe is not None and probe.hit is not None and (probe.hit.entry.kind == "stream") == ex.stream:
        extra = {
            semantic_gw.ENTRY_HEADER: probe.hit_id,
            semantic_gw.SIMILARITY_HEADER: f"{probe.similarity:.4f}",
        }
        await _replay(ex, probe.hit.entry, "semantic_hit", extra)
        return
    flight: Flight | None = None
    if cfg.coalesce:
        flight, leader = rt.coalescer.join_or_lead(key)
        if not leader:
            if await _join(ex, flight):
                return
            flight = None  # the leader failed: this request makes its own call
    try:
        await _lead(ex, rt, key, flight, next, probe)
    finally:
        if flight is not None:
            rt.coalescer.land(key, flight)


async def _through(ex: Exchange, status: str, header: str, next: Next) -> None:
    ex.cache_status = status
    ex.headers_out[CACHE_HEADER] = header
    await next(ex)


async def _lead(
    ex: Exchange, rt: CacheRuntime, key: str, flight: Flight | None, next: Next, probe: Probe | None
) -> None:
    ex.cache_status = "miss"
    tap = ex.cache = CacheState(rt.config.max_entry_bytes, flight)
    if probe is not None and probe.vector is not None and rt.semantic is not None:
        from ingress.cache.semantic.cache import entry_id

        tap.entry = entry_id(probe.partition, probe.text)
    caller = ex.outbound
    ex.outbound = _TapOutbound(caller, tap)
    try:
        if flight is None:
            await next(ex)
            _landed(ex, rt, key, None, tap, probe)
            return
        # Joiners follow this call: it runs as a task of its own, so that
        # when only the leader's caller leaves (its request is cancelled)
        # the call goes on for them rather than being cut for everyone.
        task: asyncio.Future[None] = asyncio.ensure_future(next(ex))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done() or not flight.waiters:
                task.cancel()
                flight.finish(False)
                raise
            ex.detached = True  # its usage settles the reservation (see the quota stage)
            tap.gone = True  # nothing more is written to the leader's closed connection
            ex.rt.acquire()  # the detached call keeps its snapshot until it ends
            ex.rt.background.add(task)
            task.add_done_callback(lambda t: _detached_done(t, ex, rt, key, flight, tap, probe))
            raise
        except BaseException:
            flight.finish(False)
            raise
        _landed(ex, rt, key, flight, tap, probe)
    finally:
        # A detached call goes on writing through the tap (only kept).
        if not ex.detached:
            ex.outbound = caller


def _detached_done(
    task: asyncio.Future[None],
    ex: Exchange,
    rt: CacheRuntime,
    key: str,
    flight: Flight,
    tap: CacheState,
    probe: Probe | None,
) -> None:
    ex.rt.background.discard(task)
    if task.cancelled() or task.exception() is not None:
        flight.finish(False)
    else:
        _landed(ex, rt, key, flight, tap, probe)
    # A call that ended without usage holds its reservation no longer.
    release = asyncio.get_running_loop().create_task(quota.release_unsettled_of(ex))
    ex.rt.background.add(release)
    release.add_done_callback(ex.rt.background.discard)
    release.add_done_callback(lambda _t: ex.rt.release())


def _landed(
    ex: Exchange, rt: CacheRuntime, key: str, flight: Flight | None, tap: CacheState, probe: Probe | None
) -> None:
    """The leader's answer: to its joiners, and into the caches."""
    entry: Entry | None = None
    if not tap.streamed:
        ok = tap.status == 200 and tap.parts is not None and len(tap.parts) == 1
        body = tap.parts[0] if ok and tap.parts else b""
        if flight is not None:
            if ok:
                flight.begin("response", tap.content_type)
                flight.push(body)
            flight.finish(ok)
        if ok:
            entry = Entry(kind="response", content_type=tap.content_type, body=body)
    else:
        ok = ex.outcome_status == 0 and tap.status == 200
        if flight is not None:
            flight.finish(ok)
        parts = tap.parts
        if ok and parts:
            entry = Entry(kind="stream", content_type=_SSE, body=b"".join(parts))
    exact = rt.exact if rt.config.enabled else None
    fill = probe if probe is not None and probe.vector is not None and rt.semantic is not None else None
    if entry is not None and (exact is not None or fill is not None):
        entry = Entry(
            kind=entry.kind,
            content_type=entry.content_type,
            body=entry.body,
            cost_usd=ex.cost_usd,
            provider=ex.provider,
            provider_model=ex.provider_model,
            model=ex.model_name,
        )
        sem = (rt.semantic, fill) if rt.semantic is not None and fill is not None else None
        task = asyncio.get_running_loop().create_task(_store(exact, key, entry, sem))
        ex.rt.background.add(task)
        task.add_done_callback(ex.rt.background.discard)


async def _store(
    exact: ExactCache | None, key: str, entry: Entry, sem: tuple[SemanticCache, Probe] | None = None
) -> None:
    if exact is not None:
        await exact.put(key, entry)
    if sem is not None:
        await sem[0].fill(sem[1], entry, exact_key=key if exact is not None else "")


__all__ = ["CacheRuntime", "CacheState", "cache", "start"]
