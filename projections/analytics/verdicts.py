"""Compliance verdicts as counts per request.

The compliance engine's event types are not in the catalog yet, so this reads
them by shape rather than by class: any decoded event whose type tag names a
verdict (``hook.verdict``, ``compliance.verdict``, ...) and that carries a
``verdict``, ``action`` or ``decision`` field.  Once that engine lands with
its own Struct in ``streams.catalog``, nothing here has to change as long as
it keeps one of those field names.
"""

from __future__ import annotations

from typing import Any

VERDICTS: tuple[str, ...] = ("allow", "flag", "redact", "block")

# Synonyms the engines in this field use for the same four outcomes.
_ALIASES: dict[str, str] = {
    "allow": "allow",
    "allowed": "allow",
    "pass": "allow",
    "flag": "flag",
    "flagged": "flag",
    "warn": "flag",
    "alert": "flag",
    "redact": "redact",
    "redacted": "redact",
    "mask": "redact",
    "block": "block",
    "blocked": "block",
    "deny": "block",
    "denied": "block",
    "reject": "block",
}

VerdictDelta = tuple[str, dict[str, int]]  # (request id, column -> count)


def _tag(event: object) -> str:
    cfg = getattr(type(event), "__struct_config__", None)
    tag = getattr(cfg, "tag", None)
    return tag if isinstance(tag, str) else ""


def verdict_delta(event: object) -> VerdictDelta | None:
    """The verdict counts one event adds to its request, or None."""
    if "verdict" not in _tag(event):
        return None
    request_id = getattr(event, "request_id", "")
    if not request_id:
        return None
    raw: Any = ""
    for name in ("verdict", "action", "decision"):
        raw = getattr(event, name, "")
        if raw:
            break
    verdict = _ALIASES.get(str(raw).strip().lower())
    counts = {f"verdict_{v}": 0 for v in VERDICTS}
    if verdict is not None:
        counts[f"verdict_{verdict}"] = 1
    findings = getattr(event, "findings", None)
    counts["findings"] = len(findings) if isinstance(findings, list | tuple) else 0
    return request_id, counts


def fold_verdicts(events: list[object]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for event in events:
        d = verdict_delta(event)
        if d is None:
            continue
        rid, counts = d
        cur = out.get(rid)
        if cur is None:
            out[rid] = counts
        else:
            for k, v in counts.items():
                cur[k] += v
    return out
