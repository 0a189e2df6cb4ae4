"""Compliance events: one ``HookVerdict`` per hook per stage, one
``StageDecision`` per stage (the summary ``traffic_event`` is projected
from), both emitted by the ingress node that ran the pipeline.

Spans say where something was found (entity, start, end in the text the
hook saw), never what: the raw secret is never in an event.
"""

from __future__ import annotations

import msgspec

from streams.events import Event


class SpanFound(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    entity: str  # CREDIT_CARD, AWS_ACCESS_KEY, or a rule id
    start: int  # character offsets in the stage's text view
    end: int
    score: float = 0.0


class HookVerdict(Event, tag="hook.verdict"):
    """What one hook said at one stage."""

    stage: str = ""  # connection | request | response
    hook: str = ""  # the hook instance id from the config
    hook_type: str = ""  # pii-detector, keyword-filter, ...
    priority: int = 0
    # approve | redact | block | error | timeout | skipped
    verdict: str = "approve"
    # What the pipeline applied for it (error/timeout turn into approve or
    # block by the hook's fail mode; skipped -> approve).
    effective: str = "approve"
    reason_code: str = ""  # e.g. pii_detected, keyword_match, rate_limited, hook_timeout
    reason: str = ""  # our words, never the matched text
    rule: str = ""  # the rule / entity that decided it
    severity: str = ""
    tags: list[str] = []
    spans: list[SpanFound] = []
    elapsed_us: int = 0
    fail_mode: str = "open"
    mode: str = ""  # how the hook ran, e.g. pii "pattern" or "pattern+ner"
    # enforce | monitor (the hook's mode: recorded, never applied) |
    # justified (a user's recorded justification excused it for them).
    # Not enforced: ``effective`` is approve; ``verdict`` says what it found.
    enforcement: str = "enforce"


class StageDecision(Event, tag="hook.stage"):
    """The pipeline's decision for one stage of one request."""

    stage: str = ""
    decision: str = "approve"  # approve | redact | block | bypassed
    blocking_hook: str = ""
    blocking_rule: str = ""
    reason_code: str = ""
    reason: str = ""
    tags: list[str] = []
    hooks_run: int = 0
    hooks_us: int = 0  # time the pipeline added at this stage
    redacted: bool = False
    # Streaming: passthrough | chunked | buffer; "" for unary.
    streaming_mode: str = ""
    # False when the decision was recorded but not enforced (passthrough
    # streams are audited after the caller already has the text).
    enforced: bool = True
    passthrough_flags: list[str] = []
    passthrough_reason: str = ""
    kill_switch: bool = False
    # What the hooks that were not enforced (monitor mode, or justified for
    # this caller) would have made of the stage ("" = nothing: they all
    # approved), and the hook and rule that said so.  ``decision`` is what
    # was applied.
    monitored_decision: str = ""
    monitored_hook: str = ""
    monitored_rule: str = ""


ComplianceEvent = HookVerdict | StageDecision
