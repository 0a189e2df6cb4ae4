"""Response-stage evaluation of a streamed response, in three modes.

- passthrough: every delta goes out at once; the whole text is evaluated
  at the end, for the audit only (``enforced`` is false).
- chunked: text is evaluated in windows as it arrives.  The last
  ``holdback_chars`` of each window stay with the guard until the next
  window has been evaluated, and each window is evaluated together with
  the tail of what was already released, so a secret split across chunks is
  caught before any of it leaves.  Redactions apply to held text; a block
  ends the stream (the gateway sends the caller's error frame).
- buffer: nothing goes out until the stream ends and the whole text has
  been evaluated; then it is released (redacted) or blocked.

The guard works on text only: the gateway puts ``StreamStep.emit`` into
its outgoing delta (and sends nothing for an empty one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ingress.hooks.emergency import NO_BYPASS, Bypass
from ingress.hooks.text import redact_text
from ingress.hooks.types import Connection, HookRecord, Span, StageResult, Verdict

if TYPE_CHECKING:
    from ingress.hooks.engine import ComplianceEngine


@dataclass(slots=True)
class StreamStep:
    emit: str = ""
    blocked: bool = False
    result: StageResult | None = None  # the window's result when one was evaluated


@dataclass(slots=True)
class _Merged:
    record: HookRecord
    spans: list[Span] = field(default_factory=list)


class StreamGuard:
    def __init__(self, engine: ComplianceEngine, conn: Connection, *, bypass: Bypass, mode: str) -> None:
        cfg = engine.cfg.streaming
        self.engine = engine
        self.conn = conn
        self.bypass = bypass if bypass is not None else NO_BYPASS
        self.mode = mode
        self.window_chars = cfg.window_chars
        self.holdback = cfg.holdback_chars
        self.max_buffer = cfg.max_buffer_chars
        self.enforced = mode != "passthrough"
        self._pending = ""  # received, not yet released
        self._released_tail = ""  # the last released characters: context for the next window
        self._released_len = 0
        self._all: list[str] = []  # passthrough: everything, for the final audit
        self._all_len = 0
        self.windows: list[StageResult] = []
        self._offsets: list[int] = []  # each window's start in the released stream
        self.closed = False

    @property
    def blocked(self) -> bool:
        return any(w.blocked for w in self.windows)

    async def feed(self, delta: str) -> StreamStep:
        if self.closed or not delta:
            return StreamStep()
        if self.bypass.hooks:
            return StreamStep(emit=delta)
        if self.mode == "passthrough":
            if self._all_len < self.max_buffer:
                self._all.append(delta)
                self._all_len += len(delta)
            return StreamStep(emit=delta)
        self._pending += delta
        if self.mode == "buffer":
            if len(self._pending) > self.max_buffer:
                return self._block_oversize()
            return StreamStep()
        if len(self._pending) < self.window_chars + self.holdback:
            return StreamStep()
        return await self._evaluate(final=False)

    async def finish(self) -> StreamStep:
        if self.closed:
            return StreamStep()
        self.closed = True
        if self.bypass.hooks:
            return StreamStep()
        if self.mode == "passthrough":
            text = "".join(self._all)
            result = await self.engine.evaluate_text("response", text, self.conn, bypass=self.bypass)
            self.windows.append(result)
            self._offsets.append(0)
            return StreamStep(result=result)
        return await self._evaluate(final=True)

    def _block_oversize(self) -> StreamStep:
        self.closed = True
        result = StageResult(
            stage="response",
            decision=Verdict.BLOCK,
            blocking_hook="stream-buffer",
            blocking_rule="max_buffer_chars",
            reason_code="response_too_large",
            reason=f"buffered response exceeded {self.max_buffer} characters",
        )
        self.windows.append(result)
        self._offsets.append(self._released_len)
        return StreamStep(blocked=True, result=result)

    async def _evaluate(self, *, final: bool) -> StreamStep:
        tail = self._released_tail
        window = tail + self._pending
        result = await self.engine.evaluate_text("response", window, self.conn, bypass=self.bypass)
        self.windows.append(result)
        self._offsets.append(self._released_len - len(tail))
        if result.blocked:
            self.closed = True
            self._pending = ""
            return StreamStep(blocked=True, result=result)
        if result.redactions:
            cut = len(tail)
            if any(s.start < cut for s in result.redactions):
                # Part of this finding already left in an earlier window
                # (longer than the holdback): stop the stream rather than
                # keep sending the rest of it.
                self.closed = True
                result.decision = Verdict.BLOCK
                result.blocking_rule = result.blocking_rule or "stream-split"
                result.reason_code = "redaction_after_release"
                result.reason = "a finding started in text already sent"
                return StreamStep(blocked=True, result=result)
            local = [Span(s.entity, s.start - cut, s.end - cut, s.score, s.rule) for s in result.redactions]
            self._pending = redact_text(self._pending, local)
        if final:
            emit, self._pending = self._pending, ""
        else:
            keep = min(self.holdback, len(self._pending))
            emit = self._pending[: len(self._pending) - keep]
            self._pending = self._pending[len(self._pending) - keep :]
        self._released_len += len(emit)
        self._released_tail = (self._released_tail + emit)[-max(self.holdback, 64) :]
        return StreamStep(emit=emit, result=result)

    def summary(self) -> StageResult:
        """One StageResult for the whole stream (strictest window wins; per
        hook the strictest verdict, spans in stream coordinates, time
        summed): what the StageDecision and HookVerdict events record."""
        out = StageResult(stage="response", bypassed=self.bypass.hooks)
        merged: dict[str, _Merged] = {}
        tags: list[str] = []
        for w, offset in zip(self.windows, self._offsets, strict=True):
            out.elapsed_us += w.elapsed_us
            tags.extend(w.tags)
            if w.decision > out.decision:
                out.decision = w.decision
                out.blocking_hook = w.blocking_hook
                out.blocking_rule = w.blocking_rule
                out.reason_code = w.reason_code
                out.reason = w.reason
            out.redactions.extend(
                Span(s.entity, s.start + offset, s.end + offset, s.score, s.rule) for s in w.redactions
            )
            for r in w.records:
                shifted = [Span(s.entity, s.start + offset, s.end + offset, s.score, s.rule) for s in r.spans]
                m = merged.get(r.hook)
                if m is None:
                    m = merged[r.hook] = _Merged(
                        HookRecord(
                            r.hook,
                            r.hook_type,
                            r.priority,
                            r.stage,
                            r.verdict,
                            r.effective,
                            r.reason_code,
                            r.reason,
                            r.rule,
                            r.severity,
                            r.tags,
                            (),
                            0,
                            r.fail_mode,
                            r.mode,
                        )
                    )
                rec = m.record
                rec.elapsed_us += r.elapsed_us
                m.spans.extend(shifted)
                rec.tags = tuple(dict.fromkeys((*rec.tags, *r.tags)))
                if r.effective > rec.effective or (rec.verdict == "skipped" and r.verdict != "skipped"):
                    rec.verdict, rec.effective = r.verdict, r.effective
                    rec.reason_code, rec.reason, rec.rule, rec.severity = (
                        r.reason_code,
                        r.reason,
                        r.rule,
                        r.severity,
                    )
        for m in merged.values():
            m.record.spans = tuple(m.spans)
            out.records.append(m.record)
        out.tags = list(dict.fromkeys(tags))
        return out
