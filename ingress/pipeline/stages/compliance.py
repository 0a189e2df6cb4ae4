"""The compliance engine (``ingress.hooks``) in the pipeline: the engine
built once per config snapshot, the request-hooks stage (connection and
request stages on the text the caller's body carries, whatever its
format), the response stage of a unary answer and the stream guard of a
streamed one, the audit events of every stage, and the answer to a block
(403, or 429 with Retry-After for the rate limiter) in the caller's
grammar.

The engine knows nothing of the ingress in front of it; this module is
the only place that turns its answers into gateway errors and events.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from typing import TYPE_CHECKING, Any

import msgspec

from adapters.canonical import (
    ChatChunk,
    ChatResponse,
    ChunkChoice,
)
from ingress.pipeline import record
from ingress.pipeline.errors import GatewayError
from ingress.pipeline.exchange import Exchange, Next
from ingress.pipeline.runtime import Runtime
from ingress.pipeline.stages.intake import chat_of, redacted
from ingress.translate.native_text import NativeText, request_text
from streams.config_base import ConfigError
from streams.config_hooks import HooksConfig
from streams.config_snapshot import ConfigSnapshot

if TYPE_CHECKING:
    from ingress.hooks import Bypass, ComplianceEngine, Connection, StageResult, StreamGuard, StreamStep

# ``ingress.hooks`` is imported where it is first needed: it loads presidio
# (seconds), which a gateway without a hook pipeline never pays.

_encoder = msgspec.json.Encoder()


def wants_engine(cfg: HooksConfig) -> bool:
    """An engine costs a pre-scan compile (seconds, once per process): only
    build one when some hook can run."""
    return cfg.enabled and any(s.enabled for s in cfg.pipeline)


async def build_engine(
    snapshot: ConfigSnapshot, *, valkey: Any = None, key_prefix: str = "nexus:", node_id: str = ""
) -> ComplianceEngine | None:
    cfg = snapshot.config.hooks
    if not wants_engine(cfg):
        return None
    from ingress.hooks import ComplianceEngine

    try:
        return await ComplianceEngine.create(cfg, valkey=valkey, key_prefix=key_prefix, node_id=node_id)
    except ValueError as exc:
        # A hook that cannot be built here (the rate limiter without Valkey):
        # one clear start-up error naming it, not a traceback.
        hint = " (set NEXUS_VALKEY_URL)" if valkey is None and "Valkey" in str(exc) else ""
        raise ConfigError(f"hooks: {exc}{hint}") from None


class RequestCompliance:
    """One request's compliance state, carried on its context."""

    __slots__ = ("bypass", "conn", "guards", "request_redacted", "response_enforced", "response_hooks")

    def __init__(
        self, conn: Connection, bypass: Bypass, response_hooks: bool, response_enforced: bool | None = None
    ) -> None:
        self.conn = conn
        self.bypass = bypass
        self.request_redacted = False
        # Whether any response-stage hook applies to this caller (and is not
        # bypassed): the answer must then pass through the engine.
        self.response_hooks = response_hooks
        # Whether one of them may change the answer (not all in monitor
        # mode or excused): a stream is then rewritten as it goes rather
        # than relayed with the guard reading along.
        self.response_enforced = response_hooks if response_enforced is None else response_enforced
        self.guards: dict[int, StreamGuard] = {}


def _applies(
    engine: ComplianceEngine, stage: str, conn: Connection, excused: frozenset[str] | None = None
) -> bool:
    """Whether a hook of ``stage`` applies to ``conn``; with ``excused``,
    one that is enforced on it (not in monitor mode, not excused)."""
    for hook in engine.hooks(stage):
        spec = hook.spec
        if (
            (not spec.ingress or conn.ingress in spec.ingress)
            and (not spec.orgs or conn.org_id in spec.orgs)
            and (not spec.projects or conn.project_id in spec.projects)
            and (not spec.keys or conn.key_id in spec.keys)
            and (excused is None or (spec.mode == "enforce" and spec.id not in excused))
        ):
            return True
    return False


def begin(ex: Exchange, adapter: str) -> RequestCompliance | None:
    """The request's connection metadata and bypass flags (one clock read:
    every stage of the request sees the same passthrough answer)."""
    engine = ex.rt.compliance
    if engine is None:
        return None
    from ingress.hooks import Connection

    t = ex.tenant
    conn = Connection(
        client_ip=ex.client_ip,
        ingress=ex.ingress,
        org_id=t.org_id,
        project_id=t.project_id,
        key_id=t.key_id,
        user_id=t.user_id,
        request_id=ex.request_id,
        provider=ex.provider,
    )
    now = dt.datetime.now(dt.UTC)
    local = ex.rt.break_glass.current() if ex.rt.break_glass is not None else None
    bypass = engine.bypass(now=now, provider=ex.provider, adapter=adapter, local=local)
    respond = not bypass.hooks and _applies(engine, "response", conn)
    enforced = respond and _applies(engine, "response", conn, bypass.excused)
    rc = RequestCompliance(conn, bypass, respond, enforced)
    ex.compliance = rc
    return rc


@functools.cache
def _stage_events() -> Any:
    """ingress.hooks.stage_events, imported on first use (the engine is only
    loaded when hooks are configured), then without an import per call."""
    from ingress.hooks import stage_events

    return stage_events


def _emit(ex: Exchange, result: StageResult, rc: RequestCompliance, **kw: Any) -> None:
    for event in _stage_events()(
        result, request_id=ex.request_id, node=ex.rt.node, tenant=ex.tenant, bypass=rc.bypass, **kw
    ):
        ex.rt.publisher.emit(event)


def _retry_after_s(result: StageResult) -> float:
    for tag in result.tags:
        if tag.startswith("retry_after_ms:"):
            try:
                return max(int(tag.split(":", 1)[1]), 1) / 1000
            except ValueError:
                break
    return 1.0


def blocked(result: StageResult) -> GatewayError:
    """A block in the caller's terms.  The message names the rule, never
    the text that matched."""
    stage = f"hooks_{result.stage}"
    if result.reason_code == "rate_limited":
        return GatewayError(
            429,
            "rate_limit_error",
            "rate_limited",
            "Rate limit exceeded by a compliance policy; retry later.",
            retry_after_s=_retry_after_s(result),
            stage=stage,
        )
    rule = result.blocking_rule or result.blocking_hook or "policy"
    where = "response" if result.stage == "response" else "request"
    return GatewayError(
        403,
        "permission_error",
        "content_blocked",
        f"The {where} was blocked by compliance policy (rule: {rule}).",
        stage=stage,
    )


async def request_stage(
    ex: Exchange,
    rc: RequestCompliance,
    text: NativeText,
    body_bytes: int,
    payload: object,
) -> bool:
    """Connection stage, then request stage, on the text the caller's body
    carries (``text``, read from the body that is forwarded).  A redaction
    is written back into that body in place; returns whether one was.
    Raises on a block.  The events of each stage are emitted before the
    answer is known to the caller, so a block is audited even if the caller
    goes away.  ``payload`` is what a webhook hook may forward: the caller's
    request as sent."""
    engine = ex.rt.compliance
    assert engine is not None
    # An intercepting front end (the proxy) ran the connection stage on the
    # connection itself, before it was established: not once more per request.
    if engine.hooks("connection") and ex.interception is None:
        result = await engine.evaluate_connection(rc.conn, bypass=rc.bypass)
        if result.records or result.bypassed:
            _emit(ex, result, rc)
        if result.blocked:
            raise blocked(result)
    from ingress.hooks.text import TextView

    # Every request runs the stage, text or none (a rate limit or a size
    # limit applies to a request whatever it carries).
    result, view = await engine.run_stage(
        "request",
        rc.conn,
        TextView(text.segments),
        body_bytes=body_bytes,
        message_count=text.messages,
        payload=payload,
        bypass=rc.bypass,
    )
    _emit(ex, result, rc)
    if result.blocked:
        raise blocked(result)
    rc.request_redacted = bool(result.redactions) and text.write(view.segments)
    return rc.request_redacted


async def response_stage(
    ex: Exchange, rc: RequestCompliance, response: ChatResponse
) -> tuple[ChatResponse, StageResult]:
    engine = ex.rt.compliance
    assert engine is not None
    outcome = await engine.evaluate_response(response, rc.conn, bypass=rc.bypass)
    _emit(ex, outcome.result, rc)
    return outcome.response, outcome.result


async def native_response_stage(
    ex: Exchange, rc: RequestCompliance, text: NativeText, payload: object
) -> StageResult:
    """The response stage on an answer relayed in its provider's own format
    (a native Responses object): ``text`` is read from it, and a redaction
    is written back into it in place."""
    engine = ex.rt.compliance
    assert engine is not None
    from ingress.hooks.text import TextView

    result, view = await engine.run_stage(
        "response",
        rc.conn,
        TextView(text.segments),
        message_count=text.messages,
        payload=payload,
        bypass=rc.bypass,
    )
    _emit(ex, result, rc)
    if result.redactions and not result.blocked:
        text.write(view.segments)
    return result


def stream_guard(rt: Runtime, rc: RequestCompliance) -> StreamGuard:
    engine = rt.compliance
    assert engine is not None
    return engine.stream_guard(rc.conn, bypass=rc.bypass)


def stream_enforced(rt: Runtime, rc: RequestCompliance | None) -> bool:
    """Whether a stream's text must be rewritten as it goes (chunked or
    buffer mode): then the provider's bytes cannot be relayed as they are."""
    if rc is None or not rc.response_enforced or rt.compliance is None:
        return False
    return rt.compliance.cfg.streaming.mode != "passthrough"


async def stream_summary(ex: Exchange, rc: RequestCompliance) -> StageResult:
    """The response stage of a stream, audited once it ended: the strictest
    choice's guard (one guard per choice index)."""
    from ingress.hooks import StageResult

    if not rc.guards:
        # No text went through a guard (no response hooks apply, or the
        # stream carried none): the stage is still on record.
        result = StageResult(stage="response", bypassed=rc.bypass.hooks)
        _emit(ex, result, rc)
        return result
    for g in rc.guards.values():
        if not g.closed:
            # The stream ended without a finish (dropped, cut, client gone):
            # what arrived is still evaluated for the audit.
            await g.finish()
    guard = max(rc.guards.values(), key=lambda g: g.summary().decision)
    result = guard.summary()
    _emit(ex, result, rc, streaming_mode=guard.mode, enforced=guard.enforced)
    return result


async def request_hooks(ex: Exchange, next: Next) -> None:
    """The stage: the connection and request stages of the hooks on what the
    caller sent (``screen_request``); a block is the caller's answer."""
    await screen_request(ex)
    await next(ex)


async def screen_request(ex: Exchange) -> bool:
    """The connection and request stages of the compliance hooks, on the
    text the caller's body carries, whatever its format (every message,
    item, block, instruction and tool result; ingress/translate/native_text.py).
    A redaction rewrites the body, its bytes and its canonical decode in
    place (``intake.redacted``): returns whether one did.  Raises the
    caller's 403 (429 for a rate limit) on a block."""
    assert ex.route is not None
    rc = begin(ex, ex.route.kind)
    if rc is None:
        record.flush_received(ex)
        return False
    text = request_text(ex.endpoint, ex.body)
    done = False
    try:
        done = await request_stage(ex, rc, text, len(ex.raw), payload=ex.body)
        if done:
            redacted(ex)
    finally:
        # Recorded whatever the stage decided (a block is audited too); the
        # body is the redacted request when a redaction fired.
        record.flush_received(ex, body=ex.raw if done else None, redacted=done)
    return done


async def screen_response(
    ex: Exchange, response: ChatResponse, payload: bytes, upstream_ms: float
) -> tuple[ChatResponse, bool]:
    """A unary answer's response stage, then its UpstreamResult (with the
    body: the redacted one when a redaction fired).  Returns (response to
    send, redacted); raises the caller's 403 on a block."""
    rc = ex.compliance
    if rc is None:
        record.upstream_result(ex, status=200, upstream_ms=upstream_ms, body=payload)
        return response, False
    screened, result = await response_stage(ex, rc, response)
    done = result.redacted and not result.blocked
    record.upstream_result(
        ex,
        status=200,
        upstream_ms=upstream_ms,
        body=_encoder.encode(screened) if done else payload,
        redacted=done,
    )
    if result.blocked:
        # The provider billed this answer though the caller never sees it:
        # its usage is recorded (and settles the quota reservation), else a
        # caller could spend unmetered by provoking blocks.
        from ingress.pipeline.call.usage import event_usage

        assert ex.model is not None
        usage, estimated = event_usage(response.usage, chat_of(ex.parsed), response)
        record.usage_recorded(ex, ex.model, usage, estimated=estimated)
        raise blocked(result)
    return screened, done


def flags(rc: RequestCompliance | None) -> tuple[list[str], str]:
    if rc is None:
        return [], ""
    b = rc.bypass
    return b.flags, b.reason


__all__ = [
    "RequestCompliance",
    "begin",
    "blocked",
    "build_engine",
    "native_response_stage",
    "request_hooks",
    "request_stage",
    "response_stage",
    "screen_request",
    "screen_response",
    "stream_enforced",
    "stream_guard",
    "stream_summary",
    "wants_engine",
]


class StreamBlocked(Exception):
    """A response-stage block in the middle of a stream: the pump ends the
    stream with this error in the caller's grammar, after ``released``
    (what the guard let out of this batch before the block) and with
    ``at`` (how many of the batch's chunks came before the blocked one)."""

    def __init__(self, error: GatewayError, released: list[ChatChunk], at: int) -> None:
        super().__init__(error.message)
        self.error = error
        self.released = released
        self.at = at


async def screen_chunks(rt: Runtime, rc: RequestCompliance, chunks: list[ChatChunk]) -> list[ChatChunk]:
    """Put the text of a batch of chunks (what one read from the provider
    brought) through each choice's guard, in place: the deltas carry what
    the guards release.  Text a guard releases for the batch as a whole
    goes into the batch's last chunk with text for that choice; held text
    goes out with a later batch, or with the chunk that finishes the
    choice.  Raises StreamBlocked on a block.

    Returns the chunks still worth sending: a chunk whose text was all held
    back and that carries nothing else (no role, tool call, reasoning,
    finish or usage) is dropped — an empty ``delta: {}`` per provider chunk
    would only cost the caller bytes and the gateway an encode."""
    send: list[ChatChunk] = []
    # per choice index: the batch's last chunk (and its choice) that had text
    last: dict[int, tuple[ChatChunk, ChunkChoice]] = {}
    for n, chunk in enumerate(chunks):
        held = False
        for choice in chunk.choices:
            delta = choice.delta
            if not delta.content and not choice.finish_reason:
                continue
            guard = rc.guards.get(choice.index)
            if guard is None:
                guard = rc.guards[choice.index] = stream_guard(rt, rc)
            emit = ""
            if delta.content:
                step = await guard.feed(delta.content, settle=False)
                if step.blocked:
                    raise _blocked_at(step, guard, choice, chunk, send, chunks, n)
                emit = step.emit
                last[choice.index] = (chunk, choice)
            if choice.finish_reason:
                step = await guard.finish()
                if step.blocked:
                    raise _blocked_at(step, guard, choice, chunk, send, chunks, n)
                emit += step.emit
                last.pop(choice.index, None)  # nothing of this choice is left to settle
            delta.content = emit or None
            held = held or not emit
        if not held or chunk.usage is not None or any(_carries(c) for c in chunk.choices):
            send.append(chunk)
    for index, (chunk, choice) in last.items():
        step = await rc.guards[index].settle()
        if step.blocked:
            raise _blocked_at(step, rc.guards[index], choice, chunk, send, chunks, len(chunks))
        if step.emit:
            choice.delta.content = (choice.delta.content or "") + step.emit
    if last:
        # A chunk dropped as empty may have just been given the settled text.
        kept = {id(c) for c in send}
        send = [c for c in chunks if id(c) in kept or any(ch.delta.content for ch in c.choices)]
    return send


def _blocked_at(
    step: StreamStep,
    guard: StreamGuard,
    choice: ChunkChoice,
    chunk: ChatChunk,
    send: list[ChatChunk],
    batch: list[ChatChunk],
    at: int,
) -> StreamBlocked:
    """The block, with the text the guard still let out before the finding
    (in ``chunk``'s ``choice``: the batch's last words before the error
    frame)."""
    released = send
    if step.emit:
        choice.delta.content = step.emit
        choice.finish_reason = None  # the error frame ends the stream, not this chunk
        keep = {id(c) for c in send} | {id(chunk)}
        released = [c for c in batch if id(c) in keep]
    return StreamBlocked(blocked(step.result or guard.summary()), released, at)


def _carries(choice: ChunkChoice) -> bool:
    d = choice.delta
    return bool(
        d.content
        or d.role
        or d.tool_calls
        or d.reasoning_content
        or d.refusal
        or choice.finish_reason
        or choice.logprobs is not None
    )


def stream_body(folded: ChatResponse) -> bytes:
    """What a stream's UpstreamResult records: the response it stands for
    (folded, as the caller received it: guarded text), as canonical JSON."""
    return _encoder.encode(folded)


async def prewarm(cfg: HooksConfig) -> None:
    """Import the engine and compile the process-wide pre-scan database in
    a worker thread (seconds), so a launcher can overlap it with starting
    other services; the gateway's own build then reuses the compiled scan."""
    if not wants_engine(cfg):
        return

    def build() -> None:
        from ingress.hooks import ComplianceEngine

        # An empty pipeline still compiles the scan over every always-on
        # entity: the part that costs.
        ComplianceEngine(HooksConfig())

    await asyncio.to_thread(build)
