"""The union of every event type, and upcasters for old schema versions.

A new event module adds its types to ``AnyEvent``; nothing else changes.
"""

from __future__ import annotations

import typing
from typing import Any

from streams.events import (
    RequestCompleted,
    RequestFailed,
    RequestReceived,
    UpstreamResult,
    UsageRecorded,
)
from streams.events_compliance import HookVerdict, StageDecision
from streams.events_quota import QuotaAlert

AnyEvent = (
    RequestReceived
    | UpstreamResult
    | UsageRecorded
    | RequestCompleted
    | RequestFailed
    | QuotaAlert
    | HookVerdict
    | StageDecision
)

KNOWN_TAGS: frozenset[str] = frozenset(str(t.__struct_config__.tag) for t in typing.get_args(AnyEvent))


def upcast(event: Any) -> Any:
    """Lift events written under an older schema version to the current one.
    Every type is at v1 today, so this is the identity; it exists so a bump
    has one obvious place to go."""
    return event
