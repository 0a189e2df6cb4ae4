"""Compliance outcomes per request, from the compliance engine's events.

Read by shape (type tag and field names) rather than by class, so that this
projection keeps working across that engine's additive changes and never
imports it:

* ``hook.verdict`` (one per hook per stage): counted by the verdict the
  pipeline applied (``effective``: approve / redact / block); a hook that
  errored or timed out (raw ``verdict`` error / timeout) is also counted in
  ``verdict_error``; ``spans`` are the findings.  A ``skipped`` hook did not
  run and is not counted.
* ``hook.stage`` (one per stage): the request is ``blocked`` when an
  enforced stage decision is ``block`` and ``redacted`` when one redacted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

VERDICT_TAG = "hook.verdict"
STAGE_TAG = "hook.stage"


@dataclass(slots=True)
class Outcome:
    verdict_approve: int = 0
    verdict_redact: int = 0
    verdict_block: int = 0
    verdict_error: int = 0
    findings: int = 0
    blocked: bool = False
    redacted: bool = False


COUNT_COLUMNS: tuple[str, ...] = (
    "verdict_approve",
    "verdict_redact",
    "verdict_block",
    "verdict_error",
    "findings",
)
FLAG_COLUMNS: tuple[str, ...] = ("blocked", "redacted")


def _tag(event: object) -> str:
    tag = getattr(getattr(type(event), "__struct_config__", None), "tag", None)
    return tag if isinstance(tag, str) else ""


def _text(event: object, name: str) -> str:
    value: Any = getattr(event, name, "")
    return str(value).strip().lower() if value else ""


def apply(outcome: Outcome, event: object) -> bool:
    """Fold one event into ``outcome``; False when the event is not a
    compliance event."""
    tag = _tag(event)
    if tag == VERDICT_TAG:
        raw = _text(event, "verdict")
        if raw == "skipped":  # the hook did not run (bypass, not applicable)
            return True
        effective = _text(event, "effective") or raw
        if effective == "block":
            outcome.verdict_block += 1
        elif effective == "redact":
            outcome.verdict_redact += 1
        else:
            outcome.verdict_approve += 1
        if raw in ("error", "timeout"):
            outcome.verdict_error += 1
        spans = getattr(event, "spans", None)
        outcome.findings += len(spans) if isinstance(spans, list | tuple) else 0
        return True
    if tag == STAGE_TAG:
        decision = _text(event, "decision")
        if decision == "block" and getattr(event, "enforced", True):
            outcome.blocked = True
        if decision == "redact" or getattr(event, "redacted", False):
            outcome.redacted = True
        return True
    return False


def fold_outcomes(events: list[object]) -> dict[str, Outcome]:
    """Compliance outcomes of a batch, per request id."""
    out: dict[str, Outcome] = {}
    for event in events:
        tag = _tag(event)
        if tag not in (VERDICT_TAG, STAGE_TAG):
            continue
        rid = getattr(event, "request_id", "")
        if not rid:
            continue
        apply(out.setdefault(rid, Outcome()), event)
    return out
