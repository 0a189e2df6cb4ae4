"""The compliance engine every ingress node runs: hooks per stage
(connection / request / response), verdicts approve / redact / block,
streaming guards, kill switch and emergency passthrough, audit events.

It works on canonical requests and responses plus connection metadata and
knows nothing of the HTTP framework in front of it.
"""

from ingress.hooks.audit import stage_events
from ingress.hooks.emergency import NO_BYPASS, BreakGlassLatch, Bypass
from ingress.hooks.engine import ComplianceEngine, RequestOutcome, ResponseOutcome
from ingress.hooks.streaming import StreamGuard, StreamStep
from ingress.hooks.types import Connection, HookRecord, Span, StageResult, Verdict

__all__ = [
    "NO_BYPASS",
    "BreakGlassLatch",
    "Bypass",
    "ComplianceEngine",
    "Connection",
    "HookRecord",
    "RequestOutcome",
    "ResponseOutcome",
    "Span",
    "StageResult",
    "StreamGuard",
    "StreamStep",
    "Verdict",
    "stage_events",
]
