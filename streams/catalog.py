"""The union of every event type, and upcasters for old schema versions.

A new event module adds its types to ``AnyEvent``; nothing else changes.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any

from streams.events import (
    RequestAborted,
    RequestCompleted,
    RequestFailed,
    RequestReceived,
    UpstreamResult,
    UsageRecorded,
)
from streams.events_admin import AdminAction, JobRun
from streams.events_alerts import AlertDelivery, AlertRaised, AuditVerified
from streams.events_compliance import HookVerdict, StageDecision
from streams.events_node import NodeBreakGlass
from streams.events_proxy import ProxyBreakGlass, ProxyConnection, ProxyJustification, ProxyRequest
from streams.events_quota import QuotaAlert

AnyEvent = (
    RequestReceived
    | UpstreamResult
    | UsageRecorded
    | RequestCompleted
    | RequestFailed
    | RequestAborted
    | QuotaAlert
    | HookVerdict
    | StageDecision
    | ProxyConnection
    | ProxyRequest
    | ProxyBreakGlass
    | ProxyJustification
    | NodeBreakGlass
    | AdminAction
    | JobRun
    | AlertRaised
    | AlertDelivery
    | AuditVerified
)

KNOWN_TAGS: frozenset[str] = frozenset(str(t.__struct_config__.tag) for t in typing.get_args(AnyEvent))

# The newest schema version (``v``) of each type this code reads.  A breaking
# change raises it here and adds the upcaster below; an event of a newer
# version than this goes to the dead-letter subject (``unsupported_version``)
# until this consumer is upgraded and the dead letter re-driven.
SCHEMA_VERSIONS: dict[str, int] = dict.fromkeys(KNOWN_TAGS, 1)


# Event type tag -> a function lifting an event of an older version to the
# current one.  Empty while every type is at v1; a bump adds its entry here.
UPCASTERS: dict[str, Callable[[Any], Any]] = {}


def upcast(event: Any) -> Any:
    """Lift an event written under an older schema version to the current one."""
    lift = UPCASTERS.get(str(type(event).__struct_config__.tag))
    return event if lift is None else lift(event)
