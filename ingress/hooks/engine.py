"""The compliance pipeline: configured hooks run per stage in priority
order, each under its own timeout and the stage's total budget; verdicts
merge strictest-wins; redactions chain (a later hook sees the redacted
text); a block ends the stage.

Built once per config snapshot (compiling the pre-scans takes a second or
two), then shared by every request on the node.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import msgspec
import regex

from adapters.canonical import ChatRequest, ChatResponse
from ingress import heap
from ingress.hooks import emergency
from ingress.hooks.builtin import HOOK_CLASSES, BaseHook, BuildContext, entities_needed
from ingress.hooks.emergency import NO_BYPASS, Bypass
from ingress.hooks.holdback import HoldOracle, HoldPattern
from ingress.hooks.pii.engine import RecognizerEngine
from ingress.hooks.streaming import StreamGuard
from ingress.hooks.text import (
    TextView,
    apply_request_view,
    apply_response_view,
    request_view,
    response_view,
)
from ingress.hooks.types import Connection, HookInput, HookOutcome, HookRecord, StageResult, Verdict
from streams.config_base import ConfigError
from streams.config_hooks import PII_ENTITIES, SECRET_ENTITIES, BreakGlass, HooksConfig, HookSpec
from streams.config_hooks_validation import hook_settings

log = logging.getLogger(__name__)

STAGES = ("connection", "request", "response")
ALWAYS_SCANNED = tuple(e for e in PII_ENTITIES + SECRET_ENTITIES if e != "URL")


@dataclass(frozen=True, slots=True)
class RequestOutcome:
    result: StageResult
    request: ChatRequest  # what to forward: the redacted request when a redaction fired


@dataclass(frozen=True, slots=True)
class ResponseOutcome:
    result: StageResult
    response: ChatResponse


def _unenforce(record: HookRecord, result: StageResult, why: str) -> None:
    """A hook that only records: its verdict stays on its record, the
    stage applies approve, and the stage notes what it would have been."""
    would = record.effective
    record.enforcement = why
    record.unenforced = would
    record.effective = Verdict.APPROVE
    if would > result.monitored:
        result.monitored = would
        result.monitored_hook = record.hook
        result.monitored_rule = record.rule


def _dedupe(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


@contextmanager
def _settings_field(index: int) -> Iterator[None]:
    """What only this node can judge (an operator's pack file on its disk, an
    installed NER model, a webhook host's addresses) fails while its hook is
    built: name the field, as validation would have."""
    try:
        yield
    except ConfigError as exc:
        raise ConfigError(f"hooks.pipeline[{index}].settings.{exc}") from None


class ComplianceEngine:
    def __init__(
        self,
        cfg: HooksConfig,
        *,
        valkey: Any = None,
        key_prefix: str = "nexus:",
        node_id: str = "",
    ) -> None:
        self.cfg = cfg
        self.node_id = node_id
        enabled = [(i, s) for i, s in enumerate(cfg.pipeline) if s.enabled] if cfg.enabled else []
        # Priority first, then the order in the file: deterministic.
        enabled.sort(key=lambda p: (p[1].priority, p[0]))
        built = [(i, s, hook_settings(s, f"hooks.pipeline[{i}].settings")) for i, s in enabled]
        # One engine over every pattern entity (URL only when asked for): one
        # pre-scan database per process, whatever the config, so a reload or
        # a second pipeline never pays the compile again.
        entities = set(ALWAYS_SCANNED)
        for i, spec, settings in built:
            with _settings_field(i):
                entities |= entities_needed([(spec.type, settings)])
        self._ctx = BuildContext(RecognizerEngine(sorted(entities)), valkey=valkey, key_prefix=key_prefix)
        self._stages: dict[str, list[BaseHook]] = {st: [] for st in STAGES}
        for i, spec, settings in built:
            with _settings_field(i):
                hook = HOOK_CLASSES[spec.type](spec, settings, self._ctx)
            self._stages[spec.stage].append(hook)
        self.total_timeout_s = cfg.total_timeout_ms / 1000
        self._oracles: dict[tuple[str, ...], HoldOracle | None] = {}
        # The oracle every caller gets when no hook is scoped: built here, in
        # the builder's worker thread, not on the first stream's event loop.
        self.hold_oracle(Connection())

    @classmethod
    async def create(
        cls,
        cfg: HooksConfig,
        *,
        valkey: Any = None,
        key_prefix: str = "nexus:",
        node_id: str = "",
    ) -> ComplianceEngine:
        """Build in a worker thread: compiling the pre-scans (and loading a
        spaCy model when NER is configured) takes seconds, which must not
        stall the event loop of a node that is already serving traffic."""
        engine = await asyncio.to_thread(cls, cfg, valkey=valkey, key_prefix=key_prefix, node_id=node_id)
        # The compiles' scratch memory is free now, but resident until trimmed.
        await asyncio.to_thread(heap.trim)
        return engine

    @property
    def pattern_mode(self) -> str:
        return self._ctx.entities.mode

    def hooks(self, stage: str) -> list[BaseHook]:
        return list(self._stages[stage])

    async def aclose(self) -> None:
        for close in self._ctx.closers:
            await close()

    # --- emergency controls --------------------------------------------------

    def bypass(
        self,
        *,
        now: dt.datetime | None = None,
        provider: str = "",
        adapter: str = "",
        local: BreakGlass | None = None,
    ) -> Bypass:
        """What the request bypasses (passthrough rules, kill switch); call
        once per request and pass the answer to each stage."""
        now = now or dt.datetime.now(dt.UTC)
        return emergency.effective(
            self.cfg, now, node_id=self.node_id, provider=provider, adapter=adapter, local=local
        )

    # --- stages -----------------------------------------------------------------

    @staticmethod
    def _applies(spec: HookSpec, conn: Connection) -> bool:
        return (
            (not spec.ingress or conn.ingress in spec.ingress)
            and (not spec.orgs or conn.org_id in spec.orgs)
            and (not spec.projects or conn.project_id in spec.projects)
            and (not spec.keys or conn.key_id in spec.keys)
        )

    async def run_stage(
        self,
        stage: str,
        conn: Connection,
        view: TextView,
        *,
        body_bytes: int = 0,
        message_count: int = 0,
        payload: object | None = None,
        bypass: Bypass = NO_BYPASS,
    ) -> tuple[StageResult, TextView]:
        """The stage's hooks over ``view``.  A hook in monitor mode, or one
        ``bypass.excused`` for this caller (a recorded justification), runs
        and is recorded, but its verdict is never applied."""
        result = StageResult(stage=stage)
        if bypass.hooks:
            result.bypassed = True
            result.text = view.text
            return result, view
        started = time.perf_counter()
        deadline = started + self.total_timeout_s
        text = view.text
        tags: list[str] = []
        hooks = [h for h in self._stages[stage] if self._applies(h.spec, conn)]
        excused = bypass.excused
        for n, hook in enumerate(hooks):
            if result.decision is Verdict.BLOCK:
                # The stage is decided; record the rest so every hook of the
                # stage has a verdict in the audit.
                for rest in hooks[n:]:
                    result.records.append(self._record(rest, stage, "skipped", Verdict.APPROVE))
                break
            data = HookInput(stage, conn, text, body_bytes, message_count, payload)
            record, outcome = await self._run_hook(hook, data, deadline)
            result.records.append(record)
            tags.extend(record.tags)
            if hook.spec.mode == "monitor" or hook.spec.id in excused:
                _unenforce(record, result, "monitor" if hook.spec.mode == "monitor" else "justified")
                if record.unenforced is not Verdict.APPROVE:
                    tags.append(f"monitor:{record.unenforced.label}")
                continue
            effective = record.effective
            if effective is Verdict.REDACT and outcome is not None and outcome.spans:
                view = view.redact(outcome.spans)
                text = view.text
                result.redactions.extend(outcome.spans)
            if effective > result.decision:
                result.decision = effective
                if effective is not Verdict.APPROVE:
                    result.blocking_hook = hook.spec.id if effective is Verdict.BLOCK else ""
                    result.blocking_rule = record.rule
                    result.reason_code = record.reason_code
                    result.reason = record.reason
        if result.decision is Verdict.REDACT and not result.redactions:
            result.decision = Verdict.APPROVE
        result.tags = _dedupe(tags)
        result.text = text
        result.elapsed_us = int((time.perf_counter() - started) * 1_000_000)
        return result, view

    @staticmethod
    def enforces(spec: HookSpec) -> bool:
        """Whether the hook can change a request (monitor hooks only record)."""
        return spec.mode == "enforce"

    def _record(self, hook: BaseHook, stage: str, verdict: str, effective: Verdict, **kw: Any) -> HookRecord:
        spec = hook.spec
        return HookRecord(
            hook=spec.id,
            hook_type=spec.type,
            priority=spec.priority,
            stage=stage,
            verdict=verdict,
            effective=effective,
            fail_mode=spec.fail,
            **kw,
        )

    async def _run_hook(
        self, hook: BaseHook, data: HookInput, deadline: float
    ) -> tuple[HookRecord, HookOutcome | None]:
        spec = hook.spec
        t0 = time.perf_counter()
        budget = min(spec.timeout_ms / 1000, deadline - t0)
        failed = Verdict.BLOCK if spec.fail == "closed" else Verdict.APPROVE
        fail_rule = "fail-closed" if spec.fail == "closed" else ""
        if budget <= 0:
            return self._record(
                hook,
                data.stage,
                "timeout",
                failed,
                reason_code="pipeline_timeout",
                reason="the stage's total hook budget was spent before this hook ran",
                rule=fail_rule,
            ), None
        try:
            if hook.is_async:
                async with asyncio.timeout(budget):
                    outcome = await hook.aevaluate(data)
            else:
                # CPU-bound hooks cannot be pre-empted in-thread; their result
                # is used and an overrun is recorded (tag ``late``).
                outcome = hook.evaluate(data)
        except TimeoutError:
            elapsed = int((time.perf_counter() - t0) * 1_000_000)
            return self._record(
                hook,
                data.stage,
                "timeout",
                failed,
                reason_code="hook_timeout",
                reason=f"no answer within {budget * 1000:.0f} ms",
                rule=fail_rule,
                elapsed_us=elapsed,
            ), None
        except Exception as exc:
            elapsed = int((time.perf_counter() - t0) * 1_000_000)
            # The exception text may quote the payload; log the type only.
            log.warning("hook %s failed: %s", spec.id, type(exc).__name__)
            return self._record(
                hook,
                data.stage,
                "error",
                failed,
                reason_code="hook_error",
                reason=f"{type(exc).__name__}: {str(exc)[:160]}"
                if type(exc).__name__ == "WebhookError"
                else type(exc).__name__,
                rule=fail_rule,
                elapsed_us=elapsed,
            ), None
        elapsed_s = time.perf_counter() - t0
        tags = outcome.tags
        if elapsed_s > budget:
            tags = (*tags, "late")
        return self._record(
            hook,
            data.stage,
            outcome.verdict.label,
            outcome.verdict,
            reason_code=outcome.reason_code,
            reason=outcome.reason,
            rule=outcome.rule,
            severity=outcome.severity,
            tags=tags,
            spans=outcome.spans,
            elapsed_us=int(elapsed_s * 1_000_000),
            mode=outcome.mode,
        ), outcome

    # --- the gateway's entry points -------------------------------------------------

    async def evaluate_connection(self, conn: Connection, *, bypass: Bypass = NO_BYPASS) -> StageResult:
        result, _ = await self.run_stage("connection", conn, TextView([]), bypass=bypass)
        return result

    async def evaluate_request(
        self,
        req: ChatRequest,
        conn: Connection,
        *,
        body_bytes: int = 0,
        bypass: Bypass = NO_BYPASS,
    ) -> RequestOutcome:
        view = request_view(req)
        payload = msgspec.to_builtins(req) if self._needs_payload("request") else None
        result, new_view = await self.run_stage(
            "request",
            conn,
            view,
            body_bytes=body_bytes,
            message_count=len(req.messages),
            payload=payload,
            bypass=bypass,
        )
        if result.redactions and not result.blocked:
            req = apply_request_view(req, new_view)
        return RequestOutcome(result, req)

    async def evaluate_response(
        self, resp: ChatResponse, conn: Connection, *, bypass: Bypass = NO_BYPASS
    ) -> ResponseOutcome:
        view = response_view(resp)
        payload = msgspec.to_builtins(resp) if self._needs_payload("response") else None
        result, new_view = await self.run_stage("response", conn, view, payload=payload, bypass=bypass)
        if result.redactions and not result.blocked:
            resp = apply_response_view(resp, new_view)
        return ResponseOutcome(result, resp)

    async def evaluate_text(
        self, stage: str, text: str, conn: Connection, *, bypass: Bypass = NO_BYPASS
    ) -> StageResult:
        """One text (a stream window, a proxy body) through a stage."""
        result, _ = await self.run_stage(stage, conn, TextView([text]), payload={"text": text}, bypass=bypass)
        return result

    def _needs_payload(self, stage: str) -> bool:
        return any(h.spec.type == "webhook-forward" for h in self._stages[stage])

    def stream_guard(
        self, conn: Connection, *, bypass: Bypass = NO_BYPASS, mode: str | None = None
    ) -> StreamGuard:
        return StreamGuard(self, conn, bypass=bypass, mode=mode or self.cfg.streaming.mode)

    def hold_oracle(self, conn: Connection) -> HoldOracle | None:
        """What a stream guard for this caller must hold back: the patterns
        of the response hooks that apply to it (None: some hook's findings
        cannot be predicted from patterns; the guard evaluates windows).
        One oracle per set of applicable hooks, built on first use."""
        # A monitor hook changes nothing, not even when text reaches the
        # caller: it holds nothing back.
        hooks = tuple(
            h for h in self._stages["response"] if self._applies(h.spec, conn) and self.enforces(h.spec)
        )
        key = tuple(h.spec.id for h in hooks)
        if key in self._oracles:
            return self._oracles[key]
        oracle: HoldOracle | None = None
        patterns: list[HoldPattern] = []
        for h in hooks:
            found = h.hold_patterns()
            if found is None:
                break
            patterns.extend(found)
        else:
            try:
                oracle = HoldOracle(patterns)
            except regex.error as exc:
                log.warning("stream guard falls back to windows: a response pattern is unreadable (%s)", exc)
        self._oracles[key] = oracle
        return oracle
