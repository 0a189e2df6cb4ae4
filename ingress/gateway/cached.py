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

The semantic cache (``ingress.gateway.semantic``) is asked after the exact
cache misses: a hit is replayed the same way, with ``cache_status``
"semantic_hit" and ``X-Nexus-Cache: SEMANTIC_HIT``; the answer a miss
leads to fills both caches.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from adapters.base import CodecError
from adapters.canonical import ChatRequest
from ingress.cache import Coalescer, Entry, ExactCache, Flight, exact_key, time_sensitive
from ingress.gateway import recording
from ingress.gateway import semantic as semantic_gw
from ingress.gateway.errors import GatewayError
from ingress.gateway.intake import Admitted
from ingress.gateway.state import STATE
from streams.config import ConfigSnapshot
from streams.config_cache import CacheConfig

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


CACHE = web.AppKey("nexus_cache", CacheRuntime)


class _Tap:
    """The bytes a leader's caller receives, as they are written."""

    __slots__ = ("cap", "entry", "flight", "gone", "parts", "size")

    def __init__(self, cap: int, flight: Flight | None) -> None:
        self.cap = cap
        self.entry = ""  # the semantic entry this answer fills, for poison feedback
        self.flight = flight
        self.parts: list[bytes] | None = []  # None: over the size cap, not stored
        self.size = 0
        self.gone = False  # the leader's own caller disconnected

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


TAP = web.RequestKey("nexus_cache_tap", _Tap)


async def tap_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: a leader's stream is tapped as it is written
    (the stream relays write through ``response.write``)."""
    tap = request.get(TAP)
    if tap is None or isinstance(response, web.Response):
        return
    response.headers[CACHE_HEADER] = "MISS"
    if tap.entry:
        response.headers[semantic_gw.ENTRY_HEADER] = tap.entry
    if tap.flight is not None:
        tap.flight.begin("stream", _SSE)
    original = response.write

    async def write(data: bytes | bytearray | memoryview) -> None:
        tap.take(bytes(data))
        if tap.gone:
            return
        try:
            await original(data)
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            # The leader's caller left; joiners still follow this stream, so
            # it keeps being read for them rather than cut for everyone.
            if tap.flight is None or not tap.flight.waiters:
                raise
            tap.gone = True

    response.write = write  # type: ignore[method-assign]


def lifecycle(valkey: Any, key_prefix: str, env: Mapping[str, str]) -> Any:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        rt = app[CACHE]
        owned: Any = None
        if rt.config.enabled or rt.config.semantic.enabled:
            client = valkey
            url = env.get("NEXUS_VALKEY_URL", "")
            if client is None and url:
                import valkey.asyncio as avalkey

                client = owned = avalkey.from_url(url)  # type: ignore[no-untyped-call]
            if client is None:
                log.warning("the response cache is enabled but no Valkey is configured: it stays off")
            else:
                prefix = env.get("NEXUS_VALKEY_PREFIX", key_prefix) if valkey is None else key_prefix
                c = rt.config
                if c.enabled:
                    rt.exact = ExactCache(
                        client, prefix, c.ttl_s, c.max_entry_bytes, c.lookup_timeout_ms / 1000
                    )
                if c.semantic.enabled:
                    rt.semantic = await semantic_gw.start(client, prefix, c)
        yield
        if rt.semantic is not None:
            await rt.semantic.close()
        if owned is not None:
            await owned.aclose()

    return ctx


def _scope(a: Admitted[Any], how: str) -> str:
    t = a.ctx.tenant
    return {"key": f"key:{t.key_id}", "project": f"project:{t.project_id}", "org": f"org:{t.org_id}"}[how]


def _last_user_text(chat: ChatRequest) -> list[str]:
    for m in reversed(chat.messages):
        if m.role == "user":
            return [m.text()]
    return []


def _key(a: Admitted[Any], chat: ChatRequest, rt: CacheRuntime) -> str | None:
    codec = a.route.codec
    if codec is None:
        return None
    try:
        prepared = codec.encode_chat(chat, a.route.target).body
    except CodecError:
        return None  # the call itself reports it
    ctx = a.ctx
    return exact_key(
        config_version=a.state.snapshot.version,
        endpoint=ctx.endpoint,
        requested_model=ctx.requested_model,
        provider=ctx.provider,
        provider_model=ctx.provider_model,
        prepared_body=prepared,
        caller_body=a.raw,
        scope=_scope(a, rt.config.scope),
    )


def _answered(a: Admitted[Any], status: str, *, provider: str = "", saving: float = 0.0) -> None:
    ctx = a.ctx
    ctx.cache_status = status
    ctx.attempt = 0
    ctx.cache_saving_usd = saving
    if provider:
        ctx.provider = provider
    recording.completed(a.state, ctx)


async def _replay(
    request: web.Request,
    a: Admitted[Any],
    entry: Entry,
    status: str = "hit",
    extra: dict[str, str] | None = None,
) -> web.StreamResponse:
    headers = {CACHE_HEADER: status.upper(), **(extra or {})}
    resp: web.StreamResponse
    if entry.kind == "response":
        resp = web.Response(body=entry.body, content_type=entry.content_type, headers=headers)
    else:
        resp = web.StreamResponse(headers={"Content-Type": _SSE, "Cache-Control": "no-cache", **headers})
        await resp.prepare(request)
        await resp.write(entry.body)
        await resp.write_eof()
    ctx = a.ctx
    ctx.provider_model = entry.provider_model or ctx.provider_model
    _answered(a, status, provider=entry.provider, saving=entry.cost_usd)
    return resp


async def _semantic(
    request: web.Request, a: Admitted[Any], chat: ChatRequest, rt: CacheRuntime
) -> Probe | None:
    sem = rt.semantic
    if sem is None:
        return None
    found = semantic_gw.partition(a, chat, _scope(a, rt.config.scope), rt.config)
    if found is None:
        return None
    part, text = found
    return await sem.lookup(part, _scope(a, rt.config.scope), text)


async def _join(request: web.Request, a: Admitted[Any], flight: Flight) -> web.StreamResponse | None:
    """A joiner's answer from the leader's bytes; None when the leader
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
                return None
            _answered(a, "coalesced")
            headers = {CACHE_HEADER: "COALESCED"}
            return web.Response(body=flight.chunks[0], content_type=flight.content_type, headers=headers)
        if not flight.kind:
            return None  # done without an answer: the leader failed
        out = web.StreamResponse(
            headers={"Content-Type": _SSE, "Cache-Control": "no-cache", CACHE_HEADER: "COALESCED"}
        )
        await out.prepare(request)
        sent = 0
        while True:
            ev.clear()
            while sent < len(flight.chunks):
                await out.write(flight.chunks[sent])
                sent += 1
            if flight.done:
                break
            await ev.wait()
        await out.write_eof()
    finally:
        flight.leave(ev)
    if flight.ok:
        _answered(a, "coalesced")
    else:
        a.ctx.cache_status = "coalesced"
        a.ctx.attempt = 0
        recording.failed(
            a.state,
            a.ctx,
            GatewayError(502, "api_error", "upstream_error", "The provider's stream broke.", stage="stream"),
        )
        a.ctx.outcome_status = 502
    return out


async def serve_cached(
    request: web.Request,
    a: Admitted[Any],
    chat: ChatRequest,
    call: Callable[[], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    rt = request.app.get(CACHE)
    if rt is None or not rt.active:
        return await call()
    ctx = a.ctx
    cfg = rt.config
    bad = request.headers.get(semantic_gw.POISON_HEADER)
    if bad and rt.semantic is not None:
        exact_prefix = rt.exact.prefix if rt.exact is not None else ""
        await semantic_gw.poison_own(rt.semantic, exact_prefix, bad, _scope(a, cfg.scope))
    if request.headers.get(NO_CACHE_HEADER) == "1":
        return await _through(ctx, "bypass", "BYPASS", call)
    if (ctx.stream and not cfg.streams) or time_sensitive(_last_user_text(chat), cfg.skip_patterns):
        return await _through(ctx, "skipped", "SKIP", call)
    key = _key(a, chat, rt)
    if key is None:
        return await call()
    if cfg.enabled and rt.exact is not None:
        entry = await rt.exact.get(key)
        if entry is not None and (entry.kind == "stream") == ctx.stream:
            return await _replay(request, a, entry)
    probe = await _semantic(request, a, chat, rt)
    if probe is not None and probe.hit is not None and (probe.hit.entry.kind == "stream") == ctx.stream:
        extra = {
            semantic_gw.ENTRY_HEADER: probe.hit_id,
            semantic_gw.SIMILARITY_HEADER: f"{probe.similarity:.4f}",
        }
        return await _replay(request, a, probe.hit.entry, "semantic_hit", extra)
    flight: Flight | None = None
    if cfg.coalesce:
        flight, leader = rt.coalescer.join_or_lead(key)
        if not leader:
            joined = await _join(request, a, flight)
            if joined is not None:
                return joined
            flight = None  # the leader failed: this request makes its own call
    try:
        return await _lead(request, a, rt, key, flight, call, probe)
    finally:
        if flight is not None:
            rt.coalescer.land(key, flight)


async def _through(
    ctx: Any, status: str, header: str, call: Callable[[], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    ctx.cache_status = status
    resp = await call()
    if isinstance(resp, web.Response):
        resp.headers[CACHE_HEADER] = header
    return resp


async def _lead(
    request: web.Request,
    a: Admitted[Any],
    rt: CacheRuntime,
    key: str,
    flight: Flight | None,
    call: Callable[[], Awaitable[web.StreamResponse]],
    probe: Probe | None = None,
) -> web.StreamResponse:
    ctx = a.ctx
    ctx.cache_status = "miss"
    tap = _Tap(rt.config.max_entry_bytes, flight)
    if probe is not None and probe.vector is not None and rt.semantic is not None:
        from ingress.cache.semantic.cache import entry_id

        tap.entry = entry_id(probe.partition, probe.text)
    request[TAP] = tap
    try:
        resp = await call()
    except BaseException:
        if flight is not None:
            flight.finish(False)
        raise
    if isinstance(resp, web.Response):
        body = resp.body
        ok = resp.status == 200 and isinstance(body, bytes)
        content_type = resp.content_type or "application/json"
        resp.headers[CACHE_HEADER] = "MISS"
        if ok and tap.entry:
            resp.headers[semantic_gw.ENTRY_HEADER] = tap.entry
        if flight is not None:
            if ok:
                assert isinstance(body, bytes)
                flight.begin("response", content_type)
                flight.push(body)
            flight.finish(ok)
        entry = Entry(kind="response", content_type=content_type, body=body) if ok else None  # type: ignore[arg-type]
    else:
        ok = ctx.outcome_status == 0 and resp.status == 200
        if flight is not None:
            flight.finish(ok)
        parts = tap.parts
        entry = Entry(kind="stream", content_type=_SSE, body=b"".join(parts)) if ok and parts else None
    exact = rt.exact if rt.config.enabled else None
    fill = probe if probe is not None and probe.vector is not None and rt.semantic is not None else None
    if entry is not None and (exact is not None or fill is not None):
        entry = Entry(
            kind=entry.kind,
            content_type=entry.content_type,
            body=entry.body,
            cost_usd=ctx.cost_usd,
            provider=ctx.provider,
            provider_model=ctx.provider_model,
            model=ctx.model,
        )
        state = a.state
        sem = (rt.semantic, fill) if rt.semantic is not None and fill is not None else None
        task = asyncio.get_running_loop().create_task(_store(exact, key, entry, sem))
        state.background.add(task)
        task.add_done_callback(state.background.discard)
    return resp


async def _store(
    exact: ExactCache | None, key: str, entry: Entry, sem: tuple[SemanticCache, Probe] | None = None
) -> None:
    if exact is not None:
        await exact.put(key, entry)
    if sem is not None:
        await sem[0].fill(sem[1], entry, exact_key=key if exact is not None else "")


__all__ = ["CACHE", "STATE", "CacheRuntime", "lifecycle", "serve_cached", "tap_prepare"]
