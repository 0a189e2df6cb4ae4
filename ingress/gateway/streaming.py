"""Streams through a codec: the provider's stream is decoded into canonical
chunks as bytes arrive and written in the caller's grammar (or, for a
same-format call, forwarded as the provider sent it while the decoder reads
along for accounting).  The chunks are folded into one response for the
shared recording path.  A provider error mid-stream, a dropped connection or
a timeout ends the stream with an error frame in the caller's grammar."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from aiohttp import web

from adapters.base import CodecError, StreamDecoder, StreamError, WireRequest
from adapters.canonical import CanonicalError, ChatChunk, ChatRequest
from adapters.replicate.codec import stream_url
from adapters.wirekit.fold import fold
from ingress.gateway import compliance, errors, quota, recording
from ingress.gateway.compliance import RequestCompliance, StreamBlocked
from ingress.gateway.errors import GatewayError
from ingress.gateway.firsttoken import TTFT_TIMED_OUT, FirstToken
from ingress.gateway.intake import Admitted
from ingress.gateway.metrics import UPSTREAM_ERRORS
from ingress.gateway.pipeline import event_usage, record_response, stream_timings
from ingress.gateway.state import GatewayState, RequestContext
from ingress.gateway.unary import Normalise, as_sent, credential_refused, failed_attempt, guard
from ingress.quota import StreamMeter
from ingress.translate.grammar import StreamEncoder

_DROPPED = CanonicalError(
    code="upstream_error", message="The provider's stream ended unexpectedly.", status=502
)
_TIMED_OUT = CanonicalError(code="timeout", message="The provider's stream timed out.", status=504)
_CLIENT_GONE = GatewayError(
    499, "client_error", "client_closed", "The caller closed the connection.", stage="stream"
)


class _ClientGone(Exception):
    pass


def _has_token(chunk: ChatChunk) -> bool:
    for c in chunk.choices:
        d = c.delta
        if d.content or d.reasoning_content or d.tool_calls or d.refusal:
            return True
    return False


async def _open(
    state: GatewayState,
    ctx: RequestContext,
    a: Admitted[Any],
    wire: WireRequest,
    normalise: Normalise,
    deadline: float,
) -> aiohttp.ClientResponse:
    """The provider's streaming response (status 200), or a GatewayError."""
    upstream = a.upstream
    sent = time.perf_counter()
    try:
        async with asyncio.timeout_at(deadline):
            resp = await upstream.session.request(
                wire.method, as_sent(wire.url), data=wire.body, headers=wire.headers
            )
            if 200 <= resp.status < 300 and a.route.kind == "replicate":
                # Replicate streams in two steps: the prediction names its
                # stream URL, which is then read as SSE.
                created = await resp.read()
                resp.release()
                try:
                    url = stream_url(created)
                except CodecError as exc:
                    failed_attempt(state, ctx, sent, 200, exc.error.code)
                    raise errors.from_canonical(exc.error) from None
                guard(upstream, url)
                headers = {"accept": "text/event-stream", "cache-control": "no-store"}
                if "authorization" in wire.headers:
                    headers["authorization"] = wire.headers["authorization"]
                resp = await upstream.session.get(url, headers=headers)
    except TimeoutError:
        failed_attempt(state, ctx, sent, 0, "timeout")
        raise errors.upstream_timeout() from None
    except aiohttp.ClientError:
        failed_attempt(state, ctx, sent, 0, "upstream_unreachable")
        raise errors.upstream_unreachable() from None
    if resp.status != 200:
        try:
            payload = await resp.read()
        finally:
            resp.release()
        credential_refused(state, ctx, resp.status)
        err = normalise(resp.status, payload, resp.headers)
        failed_attempt(state, ctx, sent, resp.status, err.code)
        raise errors.from_canonical(err)
    return resp


class _Pump:
    __slots__ = (
        "chunks",
        "decoder",
        "encoder",
        "fallback_id",
        "first_token",
        "first_token_upstream",
        "forwarded_error",
        "hold",
        "meter",
        "out",
        "raw",
        "screen",
        "state",
    )

    def __init__(
        self,
        out: web.StreamResponse,
        decoder: StreamDecoder,
        encoder: StreamEncoder,
        raw: bool,
        hold: FirstToken,
    ) -> None:
        self.out = out
        self.hold = hold  # the TTFT bound: what precedes the first token waits
        self.decoder = decoder
        self.encoder = encoder
        self.raw = raw  # forward the provider's bytes as they are (same-format call)
        self.fallback_id = ""
        self.chunks: list[ChatChunk] = []
        self.first_token: float | None = None
        self.first_token_upstream: float | None = None
        # A same-format stream already carried the provider's own error frame.
        self.forwarded_error = False
        # The response-stage guard (compliance), when hooks read this stream.
        self.screen: RequestCompliance | None = None
        self.state: GatewayState | None = None
        # Quota: output metered against the reservation (None: no cap).
        self.meter: StreamMeter | None = None

    async def write(self, data: bytes, token: bool = False) -> None:
        if not data:
            return
        try:
            await self.hold.write(data, token)
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            raise _ClientGone from None

    async def flush(self) -> None:
        """Whatever was held back goes out (the stream ended or failed)."""
        try:
            await self.hold.release()
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            raise _ClientGone from None

    async def take(self, new: list[ChatChunk], data: bytes) -> None:
        for c in new:
            if not c.id:  # Bedrock and Replicate streams name none; clients expect one
                c.id = self.fallback_id
        token = any(_has_token(c) for c in new)
        if token and self.first_token_upstream is None:
            self.first_token_upstream = time.perf_counter()
            # The provider has spoken: the TTFT bound is met even if a
            # guard below holds this token back from the caller.
            await self.flush()
        send = new
        if self.screen is not None and self.state is not None:
            send = []
            for n, chunk in enumerate(new):
                try:
                    if await compliance.screen_chunk(self.state, self.screen, chunk):
                        send.append(chunk)
                except StreamBlocked:
                    # What the guard released before the block still goes
                    # out, then the error frame.
                    self.chunks.extend(new[:n])
                    if not self.raw:
                        await self.write(b"".join(self.encoder.feed(c) for c in send))
                    raise
        self.chunks.extend(new)  # accounted even when cut: the provider made them
        if self.meter is not None and not quota.within(self.meter, new):
            raise quota.StreamCut
        if self.raw:
            await self.write(data, token)
        elif send:
            await self.write(b"".join(self.encoder.feed(c) for c in send), token)
        if send is not new:
            # The caller's first token is the first text a guard let out.
            token = any(_has_token(c) for c in send)
        if token and self.first_token is None:
            self.first_token = time.perf_counter()

    async def run(self, resp: aiohttp.ClientResponse) -> CanonicalError | GatewayError | _ClientGone | None:
        try:
            async with self.hold.bounded():
                async for data in resp.content.iter_any():
                    try:
                        new = self.decoder.feed(data)
                    except StreamError as exc:
                        await self.take(exc.chunks, data)
                        self.forwarded_error = self.raw
                        return exc.error
                    await self.take(new, data)
                try:
                    await self.take(self.decoder.close(), b"")
                except StreamError as exc:
                    await self.take(exc.chunks, b"")
                    return exc.error
        except _ClientGone as gone:
            return gone
        except StreamBlocked as block:
            return block.error
        except quota.StreamCut as cut:
            return cut.error
        except TimeoutError:
            return TTFT_TIMED_OUT if self.hold.holding else _TIMED_OUT
        except aiohttp.ClientError:
            return _DROPPED
        except CodecError as exc:
            return exc.error
        if not any(c.finish_reason for ch in self.chunks for c in ch.choices):
            return _DROPPED  # closed cleanly, but the provider never said it was done
        return None


async def stream_call(
    request: web.Request,
    a: Admitted[Any],
    chat: ChatRequest | None,
    wire: WireRequest,
    decoder: StreamDecoder,
    encoder: StreamEncoder,
    normalise: Normalise,
    *,
    raw: bool = False,
) -> web.StreamResponse:
    state, ctx = a.state, a.ctx
    sent = time.perf_counter()
    provider = a.upstream.provider
    now = asyncio.get_running_loop().time()
    deadline = now + (provider.total_timeout_s or state.request_timeout_s)
    ttft = provider.ttft_timeout_s
    guard(a.upstream, wire.url)
    rc = ctx.compliance
    resp = await _open(state, ctx, a, wire, normalise, min(deadline, now + ttft) if ttft else deadline)
    try:
        out = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        hold = FirstToken(request, out, deadline, ttft, now)
        if ttft is None:
            await hold.release()  # nothing to hold back: the headers go out now
        pump = _Pump(out, decoder, encoder, raw, hold)
        pump.fallback_id = "nexus-" + ctx.request_id
        pump.meter = quota.meter_for(ctx, a.route.kind)
        if rc is not None and rc.response_hooks:
            pump.screen, pump.state = rc, state
        failure = await pump.run(resp)
    finally:
        resp.release()
    if hold.silent_timeout(failure):
        # No first token in time and the caller has heard nothing: a
        # timeout like any other, which failover may take elsewhere.
        failed_attempt(state, ctx, sent, 200, "ttft_timeout")
        raise errors.upstream_timeout()

    upstream_ms, upstream_ttft, caller_ttft = stream_timings(
        ctx, sent, pump.first_token_upstream, pump.first_token
    )
    folded = fold(pump.chunks)
    usage, estimated = event_usage(folded.usage, chat, folded)
    screened = await compliance.stream_summary(state, ctx, rc) if rc is not None else None
    captured = compliance.stream_body(folded)
    redacted = screened is not None and screened.redacted

    if failure is None:
        try:
            await pump.flush()
            await pump.write(encoder.finish() if not raw else b"")
            await out.write_eof()
        except (_ClientGone, ConnectionResetError):
            pass
        recording.upstream_result(
            state,
            ctx,
            status=200,
            upstream_ms=upstream_ms,
            ttft_ms=upstream_ttft,
            body=captured,
            redacted=redacted,
        )
        record_response(state, ctx, a.model, usage, estimated=estimated, ttft_ms=caller_ttft)
        return out

    if isinstance(failure, CanonicalError | GatewayError):
        if isinstance(failure, CanonicalError):
            UPSTREAM_ERRORS.labels(ctx.provider, failure.code).inc()
            gw_err = errors.from_canonical(failure, stage="stream")
            error_code: str = failure.code
        else:
            # A compliance block: the provider did nothing wrong.
            gw_err, error_code = failure, ""
        try:
            await pump.flush()
            if not pump.forwarded_error:
                await pump.write(encoder.error(gw_err.failure()))
            await out.write_eof()
        except (_ClientGone, ConnectionResetError):
            pass
    else:
        gw_err, error_code = _CLIENT_GONE, ""
    recording.upstream_result(
        state,
        ctx,
        status=200,
        upstream_ms=upstream_ms,
        ttft_ms=upstream_ttft,
        error_code=error_code,
        body=captured,
        redacted=redacted,
    )
    record_response(state, ctx, a.model, usage, estimated=estimated, failure=gw_err)
    return out
