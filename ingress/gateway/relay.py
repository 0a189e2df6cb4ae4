"""The streaming path.  Each complete SSE event from the provider is
forwarded as soon as it arrives, and also decoded and kept so the stream can
be folded into one response for accounting (the same recording path as
unary traffic).  A provider that drops mid-stream gets the caller an
OpenAI-shaped error frame, ``data: {"error": {...}}``, instead of a silent
truncation."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from aiohttp import web

from adapters.base import CodecError
from adapters.canonical import CanonicalError, ChatChunk, ChatRequest
from adapters.openai.codec import OpenAIStreamDecoder
from adapters.openai.errors import normalise_error
from adapters.openai.sse import SSEEvent
from adapters.wirekit.fold import fold
from ingress.gateway import compliance, errors, quota, recording
from ingress.gateway.errors import GatewayError
from ingress.gateway.firsttoken import TTFT_TIMED_OUT, FirstToken
from ingress.gateway.metrics import UPSTREAM_ERRORS
from ingress.gateway.pipeline import event_usage, record_response, stream_timings
from ingress.gateway.state import GatewayState, RequestContext
from ingress.quota import StreamMeter
from ingress.upstream import Upstream
from streams.config import Model

_DROPPED = CanonicalError(
    code="upstream_error", message="The provider's stream ended unexpectedly.", status=502
)
_TIMED_OUT = CanonicalError(code="timeout", message="The provider's stream timed out.", status=504)
_CLIENT_GONE = GatewayError(
    499, "client_error", "client_closed", "The caller closed the connection.", stage="stream"
)


class _ClientGone(Exception):
    pass


class _Relay:
    """Per-stream bookkeeping: what was decoded, what the caller saw."""

    __slots__ = (
        "chunks",
        "cut",
        "decoder",
        "first_token",
        "first_token_upstream",
        "hold",
        "meter",
        "out",
        "wants_usage",
    )

    def __init__(self, out: web.StreamResponse, wants_usage: bool, hold: FirstToken) -> None:
        self.out = out
        self.hold = hold  # the TTFT bound: what precedes the first token waits
        self.wants_usage = wants_usage
        self.decoder = OpenAIStreamDecoder()
        self.chunks: list[ChatChunk] = []
        self.first_token: float | None = None  # when the first token was sent to the caller
        self.first_token_upstream: float | None = None  # when it arrived from the provider
        # Quota: the output metered against the reservation, and whether the
        # stream went past it (cut: what crossed is not forwarded).
        self.meter: StreamMeter | None = None
        self.cut = False

    def select(self, events: list[SSEEvent]) -> tuple[list[bytes], bool]:
        """The raw events to forward, and whether any carries a token."""
        parts: list[bytes] = []
        has_token = False
        for ev in events:
            chunk = self.decoder.decode_event(ev)
            if self.decoder.error is not None:
                break
            if chunk is None:
                if self.decoder.done:
                    parts.append(ev.raw)
                continue
            self.chunks.append(chunk)
            if self.meter is not None and not quota.within(self.meter, [chunk]):
                self.cut = True
                break
            if not chunk.choices:
                # The usage chunk the gateway asked for on the caller's behalf
                # is not forwarded unless the caller asked for it too.
                if chunk.usage is not None and not self.wants_usage:
                    continue
            elif not has_token:
                d = chunk.choices[0].delta
                has_token = bool(d.content or d.reasoning_content or d.tool_calls or d.refusal)
            parts.append(ev.raw)
        return parts, has_token

    async def write(self, data: bytes, token: bool = False) -> None:
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


async def relay_stream(
    request: web.Request,
    state: GatewayState,
    ctx: RequestContext,
    upstream: Upstream,
    wire: bytes,
    chat: ChatRequest,
    model: Model,
    *,
    wants_usage: bool,
) -> web.StreamResponse:
    sent = time.perf_counter()
    now = asyncio.get_running_loop().time()
    deadline = now + (upstream.provider.total_timeout_s or state.request_timeout_s)
    ttft = upstream.provider.ttft_timeout_s
    try:
        async with asyncio.timeout_at(min(deadline, now + ttft) if ttft else deadline):
            resp = await upstream.session.post(upstream.chat_url, data=wire, headers=upstream.headers)
    except TimeoutError:
        _attempt_failed(state, ctx, sent, 0, "timeout")
        raise errors.upstream_timeout() from None
    except aiohttp.ClientError:
        _attempt_failed(state, ctx, sent, 0, "upstream_unreachable")
        raise errors.upstream_unreachable() from None

    try:
        if resp.status != 200:
            payload = await resp.read()
            err = normalise_error(resp.status, payload, resp.headers)
            _attempt_failed(state, ctx, sent, resp.status, err.code)
            raise errors.from_canonical(err)
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
        relay = _Relay(out, wants_usage, hold)
        relay.meter = quota.meter_for(ctx, "openai")
        failure = await _pump(resp, relay)
    finally:
        resp.release()
    if hold.silent_timeout(failure):
        # No first token in time and the caller has heard nothing: a
        # timeout like any other, which failover may take elsewhere.
        _attempt_failed(state, ctx, sent, 200, "ttft_timeout")
        raise errors.upstream_timeout()

    upstream_ms, upstream_ttft, caller_ttft = stream_timings(
        ctx, sent, relay.first_token_upstream, relay.first_token
    )

    # Fold what arrived (all of it, or everything before a failure) into the
    # unary response it stands for; usage and cost come from that.
    folded = fold(relay.chunks)
    usage, estimated = event_usage(folded.usage, chat, folded)
    # Relayed as is, so no response hook reads this stream: the stage is
    # recorded (bypassed or approved with no hooks run) for the audit.
    if ctx.compliance is not None:
        await compliance.stream_summary(state, ctx, ctx.compliance)
    captured = compliance.stream_body(folded)

    if failure is None:
        recording.upstream_result(
            state, ctx, status=200, upstream_ms=upstream_ms, ttft_ms=upstream_ttft, body=captured
        )
        record_response(state, ctx, model, usage, estimated=estimated, ttft_ms=caller_ttft)
        try:
            await relay.flush()
            await out.write_eof()
        except (_ClientGone, ConnectionResetError):
            pass
        return out

    error_code: str
    if isinstance(failure, CanonicalError | GatewayError):
        if isinstance(failure, CanonicalError):
            UPSTREAM_ERRORS.labels(ctx.provider, failure.code).inc()
            gw_err = errors.from_canonical(failure, stage="stream")
            error_code = failure.code
        else:  # cut at its quota reservation: the provider did nothing wrong
            gw_err, error_code = failure, ""
        try:
            await relay.flush()
            await relay.write(b"data: " + gw_err.encode() + b"\n\n")
            await out.write_eof()
        except (_ClientGone, ConnectionResetError):
            pass
    else:
        gw_err = _CLIENT_GONE
        error_code = ""  # the provider did nothing wrong
    recording.upstream_result(
        state,
        ctx,
        status=200,
        upstream_ms=upstream_ms,
        ttft_ms=upstream_ttft,
        error_code=error_code,
        body=captured,
    )
    record_response(state, ctx, model, usage, estimated=estimated, failure=gw_err)
    return out


async def _pump(
    resp: aiohttp.ClientResponse, relay: _Relay
) -> CanonicalError | GatewayError | _ClientGone | None:
    """Relay until the provider finishes.  Returns what went wrong, if anything."""
    decoder = relay.decoder
    try:
        async with relay.hold.bounded():
            async for data in resp.content.iter_any():
                parts, has_token = relay.select(decoder.sse.feed(data))
                if has_token and relay.first_token_upstream is None:
                    relay.first_token_upstream = time.perf_counter()
                    await relay.flush()  # the provider has spoken: the TTFT bound is met
                if parts:
                    await relay.write(b"".join(parts), has_token)
                    if has_token and relay.first_token is None:
                        relay.first_token = time.perf_counter()
                if relay.cut:
                    return quota.cut_error()
                if decoder.error is not None:
                    return decoder.error
            parts, _ = relay.select(decoder.sse.close())
            if parts:
                await relay.write(b"".join(parts))
    except _ClientGone as gone:
        return gone
    except TimeoutError:
        return TTFT_TIMED_OUT if relay.hold.holding else _TIMED_OUT
    except aiohttp.ClientError:
        return _DROPPED
    except CodecError as exc:
        return exc.error
    if decoder.error is not None:
        return decoder.error
    if not decoder.done:
        return _DROPPED  # the connection closed cleanly, but without [DONE]
    return None


def _attempt_failed(state: GatewayState, ctx: RequestContext, sent: float, status: int, code: str) -> None:
    UPSTREAM_ERRORS.labels(ctx.provider, code).inc()
    recording.upstream_result(
        state, ctx, status=status, upstream_ms=(time.perf_counter() - sent) * 1000, error_code=code
    )
