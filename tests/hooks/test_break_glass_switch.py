"""A gateway node's break-glass switch with an injected clock: engaged for
at most 8 hours, then off by itself, announced once (engaged, expired)."""

from __future__ import annotations

import datetime as dt

import pytest

from ingress.hooks.emergency import effective
from ingress.pipeline.breakglass import BreakGlassSwitch
from streams.config_hooks import HooksConfig
from streams.events import Event, Node
from streams.events_node import NodeBreakGlass

T0 = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
REASON = "incident 7: the pii hook hangs on every call"


class Sink:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)


def _actions(sink: Sink) -> list[str]:
    return [e.action for e in sink.events if isinstance(e, NodeBreakGlass)]


def test_break_glass_reverts_by_itself_after_its_time() -> None:
    now = [T0]
    sink = Sink()
    sw = BreakGlassSwitch(Node(kind="gateway", id="gw-1"), sink, clock=lambda: now[0])
    cfg = HooksConfig()
    assert sw.current() is None
    sw.engage(REASON, dt.timedelta(hours=8), "10.0.0.1")
    local = sw.current()
    assert local is not None and local.until == T0 + dt.timedelta(hours=8)
    assert effective(cfg, now[0], node_id="gw-1", local=local).kill_switch
    now[0] = T0 + dt.timedelta(hours=8) - dt.timedelta(seconds=1)
    assert sw.current() is not None
    now[0] = T0 + dt.timedelta(hours=8)
    assert sw.current() is None
    assert not effective(cfg, now[0], node_id="gw-1", local=sw.current()).kill_switch
    assert _actions(sink) == ["engaged", "expired"]  # announced once
    assert sink.events[-1].actor == "clock"  # type: ignore[attr-defined]


def test_break_glass_is_bounded_and_only_this_node() -> None:
    now = [T0]
    sink = Sink()
    sw = BreakGlassSwitch(Node(kind="gateway", id="gw-1"), sink, clock=lambda: now[0])
    with pytest.raises(ValueError, match="at most 8 hours"):
        sw.engage(REASON, dt.timedelta(hours=8, seconds=1), "10.0.0.1")
    with pytest.raises(ValueError, match="reason"):
        sw.engage("too short", dt.timedelta(hours=1), "10.0.0.1")
    state = sw.engage(REASON, dt.timedelta(hours=1), "10.0.0.1")
    assert state.node == "gw-1"
    # Another node running the same config is not affected by this latch.
    assert not effective(HooksConfig(), now[0], node_id="gw-2").kill_switch
    assert sw.release("10.0.0.1") and not sw.release("10.0.0.1")
    assert sw.current() is None
    assert _actions(sink) == ["engaged", "released"]
    sw.close()
