"""The engine's vocabulary: what a hook sees, what it answers, and what the
pipeline hands back.  Nothing here knows about HTTP frameworks."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from streams.config_hooks import HookSpec


class Verdict(enum.IntEnum):
    """Ordered by strictness: the strictest verdict of a stage wins."""

    APPROVE = 0
    REDACT = 1
    BLOCK = 2

    @property
    def label(self) -> str:
        # A tuple, not ``self.name.lower()``: an enum's ``name`` is a
        # descriptor lookup, and the events ask for labels several times a
        # request.
        return _LABELS[self]

    @classmethod
    def parse(cls, value: str) -> Verdict:
        return cls[value.upper()]


_LABELS = tuple(v.name.lower() for v in Verdict)


@dataclass(frozen=True, slots=True)
class Span:
    """A finding in the stage's text: [start, end) in characters."""

    entity: str
    start: int
    end: int
    score: float = 1.0
    # The redaction token names this rule: [REDACTED_<RULE>].
    rule: str = ""


@dataclass(frozen=True, slots=True)
class Connection:
    """What an ingress node knows about the caller before any body."""

    client_ip: str = ""
    ingress: str = "gateway"  # gateway | proxy | agent
    org_id: str = ""
    project_id: str = ""
    key_id: str = ""
    user_id: str = ""
    request_id: str = ""
    provider: str = ""  # the routed provider, when known (response stage)
    target_host: str = ""  # the host a proxy / agent connection goes to ("" at the gateway)


@dataclass(slots=True)
class HookInput:
    """One hook's view of a stage.  ``text`` is the stage's text view after
    every earlier redaction of the same stage (redactions chain)."""

    stage: str
    conn: Connection
    text: str
    body_bytes: int = 0
    message_count: int = 0
    # The payload a webhook may forward: the original canonical request or
    # response as JSON-able data, and the current (redacted) text.
    payload: object | None = None


@dataclass(slots=True)
class HookOutcome:
    verdict: Verdict = Verdict.APPROVE
    reason_code: str = ""
    reason: str = ""
    rule: str = ""
    severity: str = ""
    tags: tuple[str, ...] = ()
    # Spans to redact (for REDACT) or that were found (for any verdict).
    spans: tuple[Span, ...] = ()
    mode: str = ""


class Hook(Protocol):
    """A configured hook instance.  ``is_async`` hooks do I/O (Valkey, HTTP,
    a worker thread) and run under a real timeout; the others are CPU-bound
    and run inline, their elapsed time checked against the budget after."""

    spec: HookSpec
    is_async: bool

    def evaluate(self, data: HookInput) -> HookOutcome: ...

    async def aevaluate(self, data: HookInput) -> HookOutcome: ...


@dataclass(slots=True)
class HookRecord:
    """What the pipeline recorded for one hook: becomes a HookVerdict event."""

    hook: str
    hook_type: str
    priority: int
    stage: str
    verdict: str  # approve | redact | block | error | timeout | skipped
    effective: Verdict
    reason_code: str = ""
    reason: str = ""
    rule: str = ""
    severity: str = ""
    tags: tuple[str, ...] = ()
    spans: tuple[Span, ...] = ()
    elapsed_us: int = 0
    fail_mode: str = "open"
    mode: str = ""
    # enforce | monitor (the hook's mode) | justified (a user's recorded
    # justification made it run as monitor for them).  Not enforced:
    # ``effective`` is approve and ``unenforced`` what it would have been.
    enforcement: str = "enforce"
    unenforced: Verdict = Verdict.APPROVE


@dataclass(slots=True)
class StageResult:
    """The pipeline's answer for one stage."""

    stage: str
    decision: Verdict = Verdict.APPROVE
    text: str = ""  # the text view after redactions
    blocking_hook: str = ""
    blocking_rule: str = ""
    reason_code: str = ""
    reason: str = ""
    tags: list[str] = field(default_factory=list)
    records: list[HookRecord] = field(default_factory=list)
    elapsed_us: int = 0
    redactions: list[Span] = field(default_factory=list)
    bypassed: bool = False
    # What hooks that were not enforced (monitor mode, or justified for this
    # user) would have made of the stage: the strictest verdict among them,
    # and the hook and rule that said it (APPROVE: nothing).
    monitored: Verdict = Verdict.APPROVE
    monitored_hook: str = ""
    monitored_rule: str = ""

    @property
    def blocked(self) -> bool:
        return self.decision is Verdict.BLOCK

    @property
    def redacted(self) -> bool:
        return bool(self.redactions)
