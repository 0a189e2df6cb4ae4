"""The one stream pump.  The provider's stream is decoded into canonical
chunks as bytes arrive (for accounting, quotas and the response guard), and
what the caller sees is the pump's ``Output``: the chunks written again in
the caller's grammar (``Reencoded``), or, for a same-format call, the
provider's own bytes with only the model name rewritten (``Relayed``).  The
chunks are folded into one response for the shared recording path.  A
provider error mid-stream, a dropped connection or a timeout ends the stream
with the gateway's error frame in the caller's grammar (a provider's own
error event is never relayed).  Provider quirks live behind the codec
(``two_step_stream``, its decoder's notion of a finished stream)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Protocol

import msgspec

from adapters.base import CodecError, StreamDecoder, StreamError, WireRequest
from adapters.canonical import CanonicalError, ChatChunk, ChatRequest
from adapters.wirekit.fold import fold
from ingress.pipeline import errors, record
from ingress.pipeline.call.firsttoken import TTFT_TIMED_OUT, FirstToken
from ingress.pipeline.call.unary import Normalise, credential_refused, failed_attempt, guard
from ingress.pipeline.call.usage import event_usage, record_response, sent_prompt, stream_timings
from ingress.pipeline.errors import GatewayError
from ingress.pipeline.exchange import ClientGone, Exchange
from ingress.pipeline.metrics import UPSTREAM_ERRORS
from ingress.pipeline.runtime import Runtime
from ingress.pipeline.stages import compliance, quota
from ingress.pipeline.stages.compliance import RequestCompliance, StreamBlocked
from ingress.quota import StreamMeter
from ingress.translate.grammar import Failure, StreamEncoder
from ingress.translate.shown_model import RelayedStream
from ingress.upstream.transport import FAILURES, Response

if TYPE_CHECKING:
    from ingress.pipeline.call.responses_stream import ResponsesStreamGate

_DROPPED = CanonicalError(
    code="upstream_error", message="The provider's stream ended unexpectedly.", status=502
)
_TIMED_OUT = CanonicalError(code="timeout", message="The provider's stream timed out.", status=504)
_CLIENT_GONE = GatewayError(
    499, "client_error", "client_closed", "The caller closed the connection.", stage="stream"
)


def _text_chars(chunks: list[ChatChunk]) -> int:
    n = 0
    for chunk in chunks:
        for c in chunk.choices:
            d = c.delta
            n += len(d.content or "") + len(d.reasoning_content or "")
    return n


def _has_token(chunk: ChatChunk) -> bool:
    for c in chunk.choices:
        d = c.delta
        if d.content or d.reasoning_content or d.tool_calls or d.refusal:
            return True
    return False


async def _open(
    ex: Exchange,
    wire: WireRequest,
    normalise: Normalise,
    deadline: float,
) -> Response:
    """The provider's streaming response (status 200), or a GatewayError."""
    upstream, route = ex.upstream, ex.route
    assert upstream is not None and route is not None
    sent = time.perf_counter()
    try:
        async with asyncio.timeout_at(deadline):
            resp = await upstream.http.request(wire.method, wire.url, wire.headers, wire.body)
            if 200 <= resp.status < 300 and ex.codec.two_step_stream:
                # The first answer (Replicate's prediction) names the
                # stream's URL, which is then read as SSE.
                try:
                    created = await resp.read()
                finally:
                    resp.release()
                try:
                    url = ex.codec.stream_url(created)
                except CodecError as exc:
                    failed_attempt(ex, sent, 200, exc.error.code)
                    raise errors.from_canonical(exc.error) from None
                guard(upstream, url)
                headers = {"accept": "text/event-stream", "cache-control": "no-store"}
                if "authorization" in wire.headers:
                    headers["authorization"] = wire.headers["authorization"]
                resp = await upstream.http.request("GET", url, headers, None)
    except TimeoutError:
        failed_attempt(ex, sent, 0, "timeout")
        raise errors.upstream_timeout() from None
    except FAILURES:
        failed_attempt(ex, sent, 0, "upstream_unreachable")
        raise errors.upstream_unreachable() from None
    if resp.status != 200:
        try:
            payload = await resp.read()
        finally:
            resp.release()
        credential_refused(ex, resp.status)
        err = normalise(resp.status, payload, resp.headers)
        failed_attempt(ex, sent, resp.status, err.code)
        raise errors.from_canonical(err)
    return resp


class Output(Protocol):
    """What the caller sees of a stream."""

    raw: bool  # the provider's own bytes (a same-format call)

    def take(self, chunks: list[ChatChunk], data: bytes) -> bytes:
        """For one read: ``chunks`` decoded from ``data`` (``data`` empty: the
        stream ended, and what was held goes out)."""
        ...

    def before_error(self, chunks: list[ChatChunk], data: bytes) -> bytes:
        """A read that carried the provider's error: what preceded it."""
        ...

    def finish(self) -> bytes: ...

    def error(self, failure: Failure) -> bytes: ...


class Reencoded:
    """The chunks written in the caller's grammar."""

    __slots__ = ("encoder",)
    raw = False

    def __init__(self, encoder: StreamEncoder) -> None:
        self.encoder = encoder

    def take(self, chunks: list[ChatChunk], data: bytes) -> bytes:
        feed = self.encoder.feed
        return b"".join(feed(c) for c in chunks)

    def before_error(self, chunks: list[ChatChunk], data: bytes) -> bytes:
        return self.take(chunks, data)

    def finish(self) -> bytes:
        return self.encoder.finish()

    def error(self, failure: Failure) -> bytes:
        return self.encoder.error(failure)


class Relayed:
    """The provider's bytes as they came (model name rewritten); the
    caller's grammar writes only the gateway's own error frame."""

    __slots__ = ("encoder", "stream")
    raw = True

    def __init__(self, stream: RelayedStream, encoder: StreamEncoder) -> None:
        self.stream = stream
        self.encoder = encoder

    def take(self, chunks: list[ChatChunk], data: bytes) -> bytes:
        return self.stream.feed(data) if data else self.stream.close()

    def before_error(self, chunks: list[ChatChunk], data: bytes) -> bytes:
        return self.stream.until_error(data)

    def finish(self) -> bytes:
        return b""  # the provider's own end ([DONE], message_stop) went out

    def error(self, failure: Failure) -> bytes:
        return self.encoder.error(failure)


class Gated:
    """A native Responses stream under the response hooks: the gate (the
    decoder too) writes the provider's events as the guard releases their
    text, its own end included; the caller's grammar writes only the
    gateway's error frame."""

    __slots__ = ("encoder",)
    raw = True

    def __init__(self, encoder: StreamEncoder) -> None:
        self.encoder = encoder

    def take(self, chunks: list[ChatChunk], data: bytes) -> bytes:
        return b""

    def before_error(self, chunks: list[ChatChunk], data: bytes) -> bytes:
        return b""

    def finish(self) -> bytes:
        return b""

    def error(self, failure: Failure) -> bytes:
        return self.encoder.error(failure)


class _Pump:
    __slots__ = (
        "chunks",
        "decoder",
        "fallback_id",
        "first_token",
        "first_token_upstream",
        "forwarded_error",
        "gate",
        "hold",
        "made_chars",
        "meter",
        "output",
        "raw",
        "screen",
        "state",
        "withheld",
    )

    def __init__(self, decoder: StreamDecoder, output: Output, hold: FirstToken) -> None:
        self.hold = hold  # the TTFT bound: what precedes the first token waits
        self.decoder = decoder
        self.output = output
        self.raw = output.raw
        # A native Responses stream the response hooks read: the decoder
        # itself, which also says what of it the caller may see.
        self.gate: ResponsesStreamGate | None = None
        self.fallback_id = ""
        self.chunks: list[ChatChunk] = []
        self.withheld: list[ChatChunk] = []  # decoded past a response-stage block
        self.made_chars = 0  # text the provider wrote, before the guard (guarded streams)
        self.first_token: float | None = None
        self.first_token_upstream: float | None = None
        # The caller already has an error frame (the Responses gate's
        # response.failed).
        self.forwarded_error = False
        # The response-stage guard (compliance), when hooks read this stream.
        self.screen: RequestCompliance | None = None
        self.state: Runtime | None = None
        # Quota: output metered against the reservation (None: no cap).
        self.meter: StreamMeter | None = None

    async def write(self, data: bytes, token: bool = False) -> None:
        if data:
            await self.hold.write(data, token)

    async def flush(self) -> None:
        """Whatever was held back goes out (the stream ended or failed)."""
        await self.hold.release()

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
        if self.gate is not None:
            await self._gated(new)
            return
        send = new
        if self.screen is not None and self.state is not None:
            # The guard rewrites the deltas to what it releases: what the
            # provider wrote is counted first, for the estimate a cut stream
            # (no usage from the provider) is billed by.
            self.made_chars += _text_chars(new)
            try:
                send = await compliance.screen_chunks(self.state, self.screen, new)
            except StreamBlocked as block:
                # What the guard released before the block still goes out,
                # then the error frame.
                self.chunks.extend(new[: block.at])
                # The rest the provider made too, and bills: accounted, but
                # not in the captured body (the caller never saw it).
                self.withheld.extend(new[block.at :])
                if not self.raw:
                    await self.write(self.output.take(block.released, b""))
                raise
        self.chunks.extend(new)  # accounted even when cut: the provider made them
        if self.meter is not None and not quota.within(self.meter, new):
            raise quota.StreamCut
        await self.write(self.output.take(send, data), token)
        if send is not new:
            # The caller's first token is the first text a guard let out.
            token = any(_has_token(c) for c in send)
        if token and self.first_token is None:
            self.first_token = time.perf_counter()

    async def _gated(self, new: list[ChatChunk]) -> None:
        assert self.gate is not None
        released, block = await self.gate.release()
        self.chunks.extend(new)  # their text is what the guard let out
        if block is not None:
            await self.write(released)
            self.forwarded_error = True  # the gate's response.failed went out
            raise StreamBlocked(block, [], 0)
        if self.meter is not None and not quota.within(self.meter, new):
            raise quota.StreamCut
        token = any(_has_token(c) for c in new)
        await self.write(released, token)
        if token and self.first_token is None:
            self.first_token = time.perf_counter()

    async def _before_error(self, chunks: list[ChatChunk], data: bytes) -> None:
        """What the provider sent before its error (or before its stream
        was found cut off) reaches the caller; the error itself does not."""
        if not self.raw or self.gate is not None:
            await self.take(chunks, data)
            return
        self.chunks.extend(chunks)
        token = any(_has_token(c) for c in chunks)
        if token and self.first_token_upstream is None:
            self.first_token_upstream = time.perf_counter()
            await self.flush()
        out = self.output.before_error(chunks, data) if data else self.output.take(chunks, b"")
        await self.write(out, token)
        if token and self.first_token is None:
            self.first_token = time.perf_counter()

    async def run(self, resp: Response) -> CanonicalError | GatewayError | ClientGone | None:
        try:
            async with self.hold.bounded():
                async for data in resp.chunks():
                    try:
                        new = self.decoder.feed(data)
                    except StreamError as exc:
                        await self._before_error(exc.chunks, data)
                        return exc.error
                    await self.take(new, data)
                try:
                    await self.take(self.decoder.close(), b"")
                except StreamError as exc:
                    await self._before_error(exc.chunks, b"")
                    return exc.error
        except ClientGone as gone:
            return gone
        except StreamBlocked as block:
            return block.error
        except quota.StreamCut as cut:
            return cut.error
        except TimeoutError:
            return TTFT_TIMED_OUT if self.hold.holding else _TIMED_OUT
        except FAILURES:
            return _DROPPED
        except CodecError as exc:
            return exc.error
        if not any(c.finish_reason for ch in self.chunks for c in ch.choices):
            return _DROPPED  # closed cleanly, but the provider never said it was done
        return None


async def stream_call(
    ex: Exchange,
    chat: ChatRequest | None,
    wire: WireRequest,
    decoder: StreamDecoder,
    output: Output,
    normalise: Normalise,
    *,
    gate: ResponsesStreamGate | None = None,
) -> None:
    """``output``: what the caller sees (re-encoded or relayed); ``gate``: a
    native Responses stream under the response hooks (it is the decoder
    too), relayed event by event as the guard releases its text."""
    sent = time.perf_counter()
    upstream, route, model = ex.upstream, ex.route, ex.model
    assert upstream is not None and route is not None and model is not None
    provider = upstream.provider
    now = asyncio.get_running_loop().time()
    deadline = now + (provider.total_timeout_s or ex.rt.request_timeout_s)
    ttft = provider.ttft_timeout_s
    guard(upstream, wire.url)
    rc = ex.compliance
    ex.prompt_sent = sent_prompt(chat, ex.raw)  # billed if the caller leaves before any answer
    resp = await _open(ex, wire, normalise, min(deadline, now + ttft) if ttft else deadline)
    cancelled = False
    hold = FirstToken(ex, deadline, ttft, now)
    try:
        pump = _Pump(decoder, output, hold)
        pump.gate = gate
        pump.fallback_id = "nexus-" + ex.request_id
        pump.meter = quota.meter_for(ex, route.kind)
        if rc is not None and rc.response_hooks:
            pump.screen, pump.state = rc, ex.rt
        try:
            if ttft is None:
                await hold.release()  # nothing to hold back: the answer starts now
            failure = await pump.run(resp)
        except asyncio.CancelledError:
            # The caller left (handler cancellation): what the provider made
            # so far is recorded below, then the cancellation goes on.
            cancelled, failure = True, ClientGone()
    finally:
        resp.release()
    if hold.silent_timeout(failure):
        # No first token in time and the caller has heard nothing: a
        # timeout like any other, which failover may take elsewhere.
        failed_attempt(ex, sent, 200, "ttft_timeout")
        raise errors.upstream_timeout()

    upstream_ms, upstream_ttft, caller_ttft = stream_timings(
        ex, sent, pump.first_token_upstream, pump.first_token
    )
    folded = fold(pump.chunks)
    made = fold(pump.chunks + pump.withheld) if pump.withheld else folded
    usage, estimated = event_usage(made.usage, chat, made)
    if estimated and pump.made_chars:
        completion = max(usage.completion_tokens, (pump.made_chars + 3) // 4)
        usage = msgspec.structs.replace(
            usage, completion_tokens=completion, total_tokens=usage.prompt_tokens + completion
        )
    screened = await compliance.stream_summary(ex, rc) if rc is not None else None
    captured = compliance.stream_body(folded)
    redacted = screened is not None and screened.redacted

    if failure is None:
        try:
            await pump.flush()
            await pump.write(output.finish())
            await hold.end()
        except ClientGone:
            pass
        record.upstream_result(
            ex,
            status=200,
            upstream_ms=upstream_ms,
            ttft_ms=upstream_ttft,
            body=captured,
            redacted=redacted,
        )
        record_response(ex, model, usage, estimated=estimated, ttft_ms=caller_ttft)
        return

    if isinstance(failure, CanonicalError | GatewayError):
        if isinstance(failure, CanonicalError):
            UPSTREAM_ERRORS.labels(ex.provider, failure.code).inc()
            gw_err = errors.from_canonical(failure, stage="stream")
            error_code: str = failure.code
        else:
            # A compliance block: the provider did nothing wrong.
            gw_err, error_code = failure, ""
        try:
            await pump.flush()
            if not pump.forwarded_error:
                await pump.write(output.error(gw_err.failure()))
            await hold.end()
        except ClientGone:
            pass
    else:
        gw_err, error_code = _CLIENT_GONE, ""
    record.upstream_result(
        ex,
        status=200,
        upstream_ms=upstream_ms,
        ttft_ms=upstream_ttft,
        error_code=error_code,
        body=captured,
        redacted=redacted,
    )
    record_response(ex, model, usage, estimated=estimated, failure=gw_err)
    if cancelled:
        raise asyncio.CancelledError
