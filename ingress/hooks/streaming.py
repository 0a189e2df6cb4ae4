"""Response-stage evaluation of a streamed response, in three modes.

- passthrough: every delta goes out at once; the whole text is evaluated
  at the end, for the audit only (``enforced`` is false).
- chunked: text goes out as soon as no finding could still cover it.  The
  hooks' patterns say where a match could still be forming
  (``ingress.hooks.holdback``): everything before that point is released
  at once — after the hooks evaluated it, when a complete match lies in it
  — and only the possible start of a match waits for the next delta.  A
  plain sentence goes out token by token; "sk-ab" waits until it is either
  an API key (redacted, or the stream blocked) or not one.  Each evaluation
  sees the tail of what was already released, so lookbehinds and context
  words work across chunks.  When some response hook cannot be predicted
  from patterns (a webhook, NER) the guard evaluates fixed windows
  instead: the last ``holdback_chars`` of each ``window_chars`` window stay
  until the next window has been evaluated.  Redactions apply to held text;
  a block ends the stream (the gateway sends the caller's error frame).
- buffer: nothing goes out until the stream ends and the whole text has
  been evaluated; then it is released (redacted) or blocked.

The guard works on text only: the gateway puts ``StreamStep.emit`` into
its outgoing delta (and sends nothing for an empty one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ingress.hooks.emergency import NO_BYPASS, Bypass
from ingress.hooks.holdback import HoldOracle, Unpredictable
from ingress.hooks.text import redact_text
from ingress.hooks.types import Connection, HookRecord, Span, StageResult, Verdict
from streams.config_hooks import HooksConfig


class TextEvaluator(Protocol):
    """What a guard needs of the compliance engine (which builds guards:
    the engine module imports this one, not the other way round)."""

    cfg: HooksConfig

    async def evaluate_text(
        self, stage: str, text: str, conn: Connection, *, bypass: Bypass = ...
    ) -> StageResult: ...

    def hold_oracle(self, conn: Connection) -> HoldOracle | None: ...


# Released text kept as context for the next evaluation: lookbehinds (an
# assigned secret's "password = ") and presidio's five context words
# before a match reach back into it.
_TAIL_CHARS = 256


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
    def __init__(self, engine: TextEvaluator, conn: Connection, *, bypass: Bypass, mode: str) -> None:
        cfg = engine.cfg.streaming
        self.engine = engine
        self.conn = conn
        self.bypass = bypass if bypass is not None else NO_BYPASS
        self.mode = mode
        self.window_chars = cfg.window_chars
        self.holdback = cfg.holdback_chars
        self.max_buffer = cfg.max_buffer_chars
        self.enforced = mode != "passthrough"
        # Chunked mode releases by the hooks' patterns when it can (None:
        # fixed windows).
        self._oracle: HoldOracle | None = (
            engine.hold_oracle(conn) if mode == "chunked" and not self.bypass.hooks else None
        )
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

    async def feed(self, delta: str, *, settle: bool = True) -> StreamStep:
        """Take a delta; returns what may go out now.  ``settle=False``
        (chunked mode with an oracle) only queues it: a caller that got
        several deltas at once (one network read) queues them all and
        calls ``settle`` once, so the patterns are searched once per read
        rather than once per token."""
        if self.closed or not delta:
            return StreamStep()
        if not settle and self._oracle is not None and self.mode == "chunked":
            self._pending += delta
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
        if self._oracle is not None:
            return await self._release_settled()
        return await self._windowed()

    async def settle(self) -> StreamStep:
        """Release what the deltas queued with ``settle=False`` allow."""
        if self.closed or self._oracle is None or not self._pending:
            return StreamStep()
        return await self._release_settled()

    async def _windowed(self) -> StreamStep:
        if len(self._pending) < self.window_chars + self.holdback:
            return StreamStep()
        return await self._evaluate(final=False)

    async def _release_settled(self) -> StreamStep:
        """Chunked mode with an oracle: release what no finding can still
        cover, evaluated first when a complete match lies in it."""
        assert self._oracle is not None
        tail = self._released_tail
        try:
            hold = self._oracle.scan(tail + self._pending, len(tail))
        except Unpredictable:
            # A pattern ran past its search budget on this text: fixed
            # windows for the rest of this stream.
            self._oracle = None
            return await self._windowed()
        cut = hold.at - len(tail)
        if cut <= 0:
            if len(self._pending) > self.max_buffer:
                return self._block_oversize()
            return StreamStep()
        if not hold.candidate:
            return self._release(cut)
        return await self._evaluate(final=False, upto=cut)

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

    def _release(self, n: int) -> StreamStep:
        emit, self._pending = self._pending[:n], self._pending[n:]
        self._note_released(emit)
        return StreamStep(emit=emit)

    def _note_released(self, emit: str) -> None:
        self._released_len += len(emit)
        tail = (self._released_tail + emit)[-max(self.holdback, _TAIL_CHARS) :]
        # Start the context at a word gap: a word cut in half at the tail's
        # edge could look like a different match to the hooks.
        gap = next((i for i, ch in enumerate(tail) if ch.isspace()), -1)
        self._released_tail = tail[gap:] if 0 < gap < len(tail) // 2 else tail

    async def _evaluate(self, *, final: bool, upto: int | None = None) -> StreamStep:
        """Evaluate the released tail plus the pending text (its first
        ``upto`` characters when given: the rest may still be forming a
        match and is not evaluated, or released, yet)."""
        tail = self._released_tail
        rest = ""
        if upto is not None:
            self._pending, rest = self._pending[:upto], self._pending[upto:]
        window = tail + self._pending
        result = await self.engine.evaluate_text("response", window, self.conn, bypass=self.bypass)
        self.windows.append(result)
        self._offsets.append(self._released_len - len(tail))
        if result.blocked:
            self.closed = True
            before = await self._clean_prefix(result, tail) if upto is not None or final else ""
            self._pending = ""
            if before:
                self._note_released(before)
            return StreamStep(emit=before, blocked=True, result=result)
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
        if final or upto is not None:
            emit, self._pending = self._pending, rest
        else:
            keep = min(self.holdback, len(self._pending))
            emit = self._pending[: len(self._pending) - keep]
            self._pending = self._pending[len(self._pending) - keep :]
        self._note_released(emit)
        return StreamStep(emit=emit, result=result)

    async def _clean_prefix(self, result: StageResult, tail: str) -> str:
        """On a block, the pending text before the blocked finding, when
        the hooks pass it on its own (redacted if need be): the caller
        still gets the answer up to the point it was cut, as with windows.
        Empty when the block names no span (a webhook's verdict)."""
        starts = [sp.start for r in result.records if r.effective is Verdict.BLOCK for sp in r.spans]
        if not starts or self._oracle is None:
            return ""
        end = min(starts) - len(tail)
        if end <= 0:
            return ""
        prefix = self._pending[:end]
        check = await self.engine.evaluate_text("response", tail + prefix, self.conn, bypass=self.bypass)
        if check.blocked or any(sp.start < len(tail) for sp in check.redactions):
            return ""
        local = [
            Span(x.entity, x.start - len(tail), x.end - len(tail), x.score, x.rule) for x in check.redactions
        ]
        return redact_text(prefix, local) if local else prefix

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
            if w.monitored > out.monitored:
                out.monitored, out.monitored_hook, out.monitored_rule = (
                    w.monitored,
                    w.monitored_hook,
                    w.monitored_rule,
                )
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
                            r.enforcement,
                        )
                    )
                rec = m.record
                rec.elapsed_us += r.elapsed_us
                m.spans.extend(shifted)
                rec.tags = tuple(dict.fromkeys((*rec.tags, *r.tags)))
                stronger = (r.effective, r.unenforced) > (rec.effective, rec.unenforced)
                if stronger or (rec.verdict == "skipped" and r.verdict != "skipped"):
                    rec.verdict, rec.effective, rec.unenforced = r.verdict, r.effective, r.unenforced
                    rec.reason_code, rec.reason, rec.rule, rec.severity = (
                        r.reason_code,
                        r.reason,
                        r.rule,
                        r.severity,
                    )
        for m in merged.values():
            # A finding the hooks approve (tagged, not redacted) can be seen
            # twice: in the window that released it and, as context, in the
            # final one.
            m.record.spans = tuple(dict.fromkeys(m.spans))
            out.records.append(m.record)
        out.redactions = list(dict.fromkeys(out.redactions))
        out.tags = list(dict.fromkeys(tags))
        return out
