"""The compliance engine (``ingress.hooks``) at the gateway: the engine
built once per config snapshot, and per request the connection, request
and response stages, the stream guard, the audit events of every stage and
the HTTP answer to a block (403, or 429 with Retry-After for the rate
limiter) in the caller's grammar.

The engine knows nothing of aiohttp; this module is the only place that
turns its answers into gateway errors and events.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from typing import TYPE_CHECKING, Any

import msgspec

from adapters.canonical import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    ChunkChoice,
    EmbeddingRequest,
    Message,
)
from ingress.gateway.errors import GatewayError
from ingress.gateway.intake import Admitted
from ingress.gateway.state import GatewayState, RequestContext
from streams.config import ConfigError, ConfigSnapshot
from streams.config_hooks import HooksConfig

if TYPE_CHECKING:
    from ingress.hooks import Bypass, ComplianceEngine, Connection, StageResult, StreamGuard

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

    __slots__ = ("bypass", "conn", "guards", "request_redacted", "response_hooks")

    def __init__(self, conn: Connection, bypass: Bypass, response_hooks: bool) -> None:
        self.conn = conn
        self.bypass = bypass
        self.request_redacted = False
        # Whether any response-stage hook applies to this caller (and is not
        # bypassed): the answer must then pass through the engine.
        self.response_hooks = response_hooks
        self.guards: dict[int, StreamGuard] = {}


def _applies(engine: ComplianceEngine, stage: str, conn: Connection) -> bool:
    for hook in engine.hooks(stage):
        spec = hook.spec
        if (
            (not spec.ingress or conn.ingress in spec.ingress)
            and (not spec.orgs or conn.org_id in spec.orgs)
            and (not spec.projects or conn.project_id in spec.projects)
            and (not spec.keys or conn.key_id in spec.keys)
        ):
            return True
    return False


def begin(state: GatewayState, ctx: RequestContext, adapter: str) -> RequestCompliance | None:
    """The request's connection metadata and bypass flags (one clock read:
    every stage of the request sees the same passthrough answer)."""
    engine = state.compliance
    if engine is None:
        return None
    from ingress.hooks import Connection

    t = ctx.tenant
    conn = Connection(
        client_ip=ctx.client_ip,
        ingress="gateway",
        org_id=t.org_id,
        project_id=t.project_id,
        key_id=t.key_id,
        user_id=t.user_id,
        request_id=ctx.request_id,
        provider=ctx.provider,
    )
    now = dt.datetime.now(dt.UTC)
    local = state.break_glass.current(now) if state.break_glass is not None else None
    bypass = engine.bypass(now=now, provider=ctx.provider, adapter=adapter, local=local)
    respond = not bypass.hooks and _applies(engine, "response", conn)
    rc = RequestCompliance(conn, bypass, respond)
    ctx.compliance = rc
    return rc


@functools.cache
def _stage_events() -> Any:
    """ingress.hooks.stage_events, imported on first use (the engine is only
    loaded when hooks are configured), then without an import per call."""
    from ingress.hooks import stage_events

    return stage_events


def _emit(
    state: GatewayState, ctx: RequestContext, result: StageResult, rc: RequestCompliance, **kw: Any
) -> None:
    for event in _stage_events()(
        result, request_id=ctx.request_id, node=state.node, tenant=ctx.tenant, bypass=rc.bypass, **kw
    ):
        state.publisher.emit(event)


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
    state: GatewayState, ctx: RequestContext, rc: RequestCompliance, chat: ChatRequest | None, body_bytes: int
) -> ChatRequest | None:
    """Connection stage, then request stage.  Returns what to forward (the
    redacted request when a redaction fired); raises on a block.  The
    events of each stage are emitted before the answer is known to the
    caller, so a block is audited even if the caller goes away."""
    engine = state.compliance
    assert engine is not None
    if engine.hooks("connection"):
        result = await engine.evaluate_connection(rc.conn, bypass=rc.bypass)
        if result.records or result.bypassed:
            _emit(state, ctx, result, rc)
        if result.blocked:
            raise blocked(result)
    from ingress.hooks import StageResult

    if chat is None:
        # Nothing the engine can read (embeddings, a native-only Responses
        # call): the stage is recorded as approved with no hooks run.
        _emit(state, ctx, StageResult(stage="request", bypassed=rc.bypass.hooks), rc)
        return None
    outcome = await engine.evaluate_request(chat, rc.conn, body_bytes=body_bytes, bypass=rc.bypass)
    _emit(state, ctx, outcome.result, rc)
    if outcome.result.blocked:
        raise blocked(outcome.result)
    rc.request_redacted = outcome.result.redacted
    return outcome.request


async def response_stage(
    state: GatewayState, ctx: RequestContext, rc: RequestCompliance, response: ChatResponse
) -> tuple[ChatResponse, StageResult]:
    engine = state.compliance
    assert engine is not None
    outcome = await engine.evaluate_response(response, rc.conn, bypass=rc.bypass)
    _emit(state, ctx, outcome.result, rc)
    return outcome.response, outcome.result


def stream_guard(state: GatewayState, rc: RequestCompliance) -> StreamGuard:
    engine = state.compliance
    assert engine is not None
    return engine.stream_guard(rc.conn, bypass=rc.bypass)


def stream_enforced(state: GatewayState, rc: RequestCompliance | None) -> bool:
    """Whether a stream's text must be rewritten as it goes (chunked or
    buffer mode): then the provider's bytes cannot be relayed as they are."""
    if rc is None or not rc.response_hooks or state.compliance is None:
        return False
    return state.compliance.cfg.streaming.mode != "passthrough"


async def stream_summary(state: GatewayState, ctx: RequestContext, rc: RequestCompliance) -> StageResult:
    """The response stage of a stream, audited once it ended: the strictest
    choice's guard (one guard per choice index)."""
    from ingress.hooks import StageResult

    if not rc.guards:
        # No text went through a guard (no response hooks apply, or the
        # stream carried none): the stage is still on record.
        result = StageResult(stage="response", bypassed=rc.bypass.hooks)
        _emit(state, ctx, result, rc)
        return result
    for g in rc.guards.values():
        if not g.closed:
            # The stream ended without a finish (dropped, cut, client gone):
            # what arrived is still evaluated for the audit.
            await g.finish()
    guard = max(rc.guards.values(), key=lambda g: g.summary().decision)
    result = guard.summary()
    _emit(state, ctx, result, rc, streaming_mode=guard.mode, enforced=guard.enforced)
    return result


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
    "request_stage",
    "response_stage",
    "stream_enforced",
    "stream_guard",
    "stream_summary",
    "wants_engine",
]


class StreamBlocked(Exception):
    """A response-stage block in the middle of a stream: the pump ends the
    stream with this error in the caller's grammar."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


async def screen_chunk(state: GatewayState, rc: RequestCompliance, chunk: ChatChunk) -> bool:
    """Put the chunk's text through its choice's guard, in place: a delta
    carries what the guard releases (held-back text goes out with the
    chunk that finishes the choice).  Raises StreamBlocked on a block.

    Returns whether the chunk is still worth sending: False when the guard
    held back all of its text and it carries nothing else (no role, tool
    call, reasoning, finish or usage).  In chunked mode a short answer is
    held whole until its finish, and an empty ``delta: {}`` per provider
    chunk would only cost the caller bytes and the gateway an encode."""
    held = False
    for choice in chunk.choices:
        delta = choice.delta
        if not delta.content and not choice.finish_reason:
            continue
        guard = rc.guards.get(choice.index)
        if guard is None:
            guard = rc.guards[choice.index] = stream_guard(state, rc)
        emit = ""
        if delta.content:
            step = await guard.feed(delta.content)
            if step.blocked:
                raise StreamBlocked(blocked(step.result or guard.summary()))
            emit = step.emit
            held = held or not emit
        if choice.finish_reason:
            step = await guard.finish()
            if step.blocked:
                raise StreamBlocked(blocked(step.result or guard.summary()))
            emit += step.emit
        delta.content = emit or None
    return not held or chunk.usage is not None or any(_carries(c) for c in chunk.choices)


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


def embedding_view(parsed: object) -> ChatRequest | None:
    """An embeddings request's inputs as text the request stage can read
    (one user message per input); None when there is no text (token
    arrays) or it is not an embeddings request."""
    if not isinstance(parsed, EmbeddingRequest):
        return None
    items = [parsed.input] if isinstance(parsed.input, str) else parsed.input
    if not items or not all(isinstance(i, str) for i in items):
        return None
    return ChatRequest(model=parsed.model, messages=[Message(role="user", content=i) for i in items])


def redact_embeddings(a: Admitted[Any], forwarded: ChatRequest) -> None:
    """Put the redacted inputs back where the embeddings call reads them:
    the caller's JSON (native passthrough) and the canonical request."""
    parsed = a.parsed
    assert isinstance(parsed, EmbeddingRequest)
    texts = [m.content if isinstance(m.content, str) else "" for m in forwarded.messages]
    new_input: str | list[Any] = texts[0] if isinstance(parsed.input, str) else texts
    a.parsed = msgspec.structs.replace(parsed, input=new_input)
    a.body = {**a.body, "input": new_input}
