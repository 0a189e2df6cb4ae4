"""Kill switch and emergency passthrough: pure functions of (config, now)."""

# ruff: noqa: E501 - tables of prompts and YAML read better unwrapped

from __future__ import annotations

import datetime as dt

import pytest

from ingress.hooks import BreakGlassLatch, Verdict, stage_events
from ingress.hooks.emergency import effective, kill_switch, passthrough
from streams.events import Node, Tenant
from streams.events_compliance import StageDecision
from tests.hooks.conftest import CONN, chat, hooks_config

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
REASON = "provider outage: hooks time out on every request"

CFG = f"""
pipeline:
  - {{id: kw, type: keyword-filter, settings: {{patterns: [forbidden]}}}}
passthrough:
  - {{scope: provider, target: openai, bypass_hooks: true, set_at: {T0.isoformat()}, expires_at: {(T0 + dt.timedelta(hours=2)).isoformat()}, reason: '{REASON}'}}
  - {{scope: adapter, target: anthropic, bypass_cache: true, bypass_normalize: true, set_at: {T0.isoformat()}, expires_at: {(T0 + dt.timedelta(hours=8)).isoformat()}, reason: 'debugging raw anthropic bodies for ticket 1234'}}
  - {{scope: global, bypass_cache: true, set_at: {(T0 + dt.timedelta(hours=1)).isoformat()}, expires_at: {(T0 + dt.timedelta(hours=3)).isoformat()}, reason: 'cache poisoned, flush in progress now'}}
"""


@pytest.mark.parametrize(
    ("minutes", "provider", "adapter", "flags"),
    [
        pytest.param(10, "openai", "openai", ["bypass_hooks"], id="provider-rule"),
        pytest.param(10, "mistral", "openai", [], id="other-provider"),
        pytest.param(10, "x", "anthropic", ["bypass_cache", "bypass_normalize"], id="adapter-rule"),
        pytest.param(90, "openai", "openai", ["bypass_hooks", "bypass_cache"], id="global-or-merged"),
        pytest.param(150, "openai", "openai", ["bypass_cache"], id="provider-rule-expired"),
        pytest.param(60 * 8 + 1, "x", "anthropic", [], id="all-expired"),
        pytest.param(-1, "openai", "openai", [], id="not-yet-set"),
    ],
)
def test_passthrough_scopes_and_expiry(minutes, provider, adapter, flags) -> None:
    cfg = hooks_config(CFG)
    now = T0 + dt.timedelta(minutes=minutes)
    assert passthrough(cfg, now, provider=provider, adapter=adapter).flags == flags


async def test_bypass_hooks_skips_the_pipeline_and_is_stamped(make_engine) -> None:
    engine = make_engine(CFG, node_id="gw-1")
    bp = engine.bypass(now=T0 + dt.timedelta(minutes=5), provider="openai", adapter="openai")
    out = await engine.evaluate_request(chat("forbidden words"), CONN, bypass=bp)
    assert out.result.bypassed and out.result.decision is Verdict.APPROVE and out.result.records == []
    (ev,) = stage_events(
        out.result, request_id="r", node=Node(kind="gateway", id="gw-1"), tenant=Tenant(), bypass=bp
    )
    assert isinstance(ev, StageDecision)
    assert (ev.decision, ev.passthrough_flags) == ("bypassed", ["bypass_hooks"])
    assert REASON in ev.passthrough_reason
    # a provider without a rule is still checked
    other = engine.bypass(now=T0 + dt.timedelta(minutes=5), provider="mistral")
    assert (await engine.evaluate_request(chat("forbidden"), CONN, bypass=other)).result.blocked


def test_fleet_kill_switch() -> None:
    cfg = hooks_config("kill_switch: {engaged: true, reason: 'TLS bump breaks the payroll client'}")
    state = kill_switch(cfg, T0, node_id="gw-1")
    assert (state.engaged, state.source) == (True, "fleet")
    bp = effective(cfg, T0, node_id="gw-1")
    assert bp.hooks and bp.kill_switch and bp.flags == ["bypass_hooks", "kill_switch"]


def test_break_glass_in_config_reverts_by_itself() -> None:
    until = T0 + dt.timedelta(hours=8)
    cfg = hooks_config(
        f"kill_switch: {{break_glass: [{{node: gw-2, engaged_at: {T0.isoformat()}, until: {until.isoformat()},"
        " reason: 'payroll client pins certificates today'}]}"
    )
    assert kill_switch(cfg, T0 + dt.timedelta(hours=7, minutes=59), node_id="gw-2").engaged
    assert not kill_switch(cfg, T0 + dt.timedelta(hours=1), node_id="gw-1").engaged  # another node
    assert not kill_switch(cfg, until, node_id="gw-2").engaged  # reverted


def test_runtime_break_glass_latch() -> None:
    latch = BreakGlassLatch("gw-3")
    with pytest.raises(ValueError, match="at most 8 hours"):
        latch.engage(REASON, dt.timedelta(hours=9), T0)
    with pytest.raises(ValueError, match="at least 20 characters"):
        latch.engage("because", dt.timedelta(hours=1), T0)
    latch.engage(REASON, dt.timedelta(hours=1), T0)
    cfg = hooks_config("{}")
    assert kill_switch(cfg, T0 + dt.timedelta(minutes=59), node_id="gw-3", local=latch.current(T0)).engaged
    assert latch.current(T0 + dt.timedelta(hours=1)) is None  # reverted by the clock
