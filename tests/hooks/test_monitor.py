"""Monitor mode (``mode: monitor`` on a hook) and per-caller excused hooks
(a recorded justification): the hook runs and its verdict is recorded, the
stage applies nothing of it, and the stage says what would have happened."""

# ruff: noqa: E501 - YAML config tables read better unwrapped

from __future__ import annotations

import pytest

from adapters.canonical import ChatResponse, Choice, ResponseMessage
from ingress.hooks import Verdict, stage_events
from ingress.hooks.emergency import Bypass
from streams.config_base import ConfigError
from streams.events import Node, Tenant
from streams.events_compliance import HookVerdict, StageDecision
from tests.hooks.conftest import CONN, chat, hooks_config

CARD = "4111 1111 1111 1111"

PIPELINE = """
pipeline:
  - {id: pii, type: pii-detector, priority: 10, mode: monitor}
  - {id: kw, type: keyword-filter, priority: 20, mode: monitor, settings: {patterns: ['project\\s+falcon'], action: block, rule: codename}}
  - {id: mail, type: keyword-filter, priority: 30, settings: {patterns: ['invoice'], action: redact, rule: invoice}}
"""


async def test_a_monitor_block_changes_nothing_and_says_what_it_would_have_done(make_engine) -> None:
    engine = make_engine(PIPELINE)
    req = chat(f"card {CARD} for project falcon, see the invoice")
    out = await engine.evaluate_request(req, CONN)
    r = out.result
    # Applied: only the enforced hook's redaction; the card stays as sent.
    assert r.decision is Verdict.REDACT and not r.blocked
    assert out.request.messages[0].content == f"card {CARD} for project falcon, see the [REDACTED_INVOICE]"
    # Would have: the strictest monitor verdict, its hook and rule.
    assert (r.monitored, r.monitored_hook, r.monitored_rule) == (Verdict.BLOCK, "kw", "codename")
    # Every hook ran (a monitor block does not end the stage) and says what it found.
    by_hook = {x.hook: x for x in r.records}
    assert [(x.hook, x.verdict, x.effective, x.enforcement) for x in r.records] == [
        ("pii", "redact", Verdict.APPROVE, "monitor"),
        ("kw", "block", Verdict.APPROVE, "monitor"),
        ("mail", "redact", Verdict.REDACT, "enforce"),
    ]
    assert by_hook["kw"].unenforced is Verdict.BLOCK
    assert {"monitor:block", "monitor:redact"} <= set(r.tags)


async def test_the_events_say_monitor_and_what_would_have_happened(make_engine) -> None:
    engine = make_engine(PIPELINE)
    out = await engine.evaluate_request(chat("project falcon"), CONN)
    events = stage_events(out.result, request_id="r1", node=Node(kind="gateway", id="n"), tenant=Tenant())
    verdicts = {e.hook: e for e in events if isinstance(e, HookVerdict)}
    assert (verdicts["kw"].verdict, verdicts["kw"].effective, verdicts["kw"].enforcement) == (
        "block",
        "approve",
        "monitor",
    )
    assert verdicts["mail"].enforcement == "enforce"
    (decision,) = [e for e in events if isinstance(e, StageDecision)]
    assert decision.decision == "approve" and decision.blocking_rule == ""
    assert (decision.monitored_decision, decision.monitored_hook, decision.monitored_rule) == (
        "block",
        "kw",
        "codename",
    )


async def test_enforced_the_same_hook_blocks(make_engine) -> None:
    """The control: the monitor test's text is blocked when the hook enforces."""
    engine = make_engine(PIPELINE.replace(", mode: monitor", ""))
    out = await engine.evaluate_request(chat("project falcon"), CONN)
    assert out.result.blocked and out.result.blocking_hook == "kw"
    assert out.result.monitored is Verdict.APPROVE


async def test_an_excused_hook_runs_as_monitor_for_that_caller_only(make_engine) -> None:
    engine = make_engine(
        """
        pipeline:
          - {id: kw, type: keyword-filter, settings: {patterns: ['project\\s+falcon'], action: block, rule: codename}}
        """
    )
    excused = await engine.evaluate_request(
        chat("project falcon"), CONN, bypass=Bypass(excused=frozenset({"kw"}))
    )
    assert not excused.result.blocked
    assert excused.result.records[0].enforcement == "justified"
    assert excused.result.monitored is Verdict.BLOCK
    # Nothing about it is an emergency bypass: no flags on the events.
    assert Bypass(excused=frozenset({"kw"})).flags == [] and not Bypass(excused=frozenset({"kw"})).any
    others = await engine.evaluate_request(chat("project falcon"), CONN)
    assert others.result.blocked


async def test_a_monitor_response_hook_leaves_the_answer_alone(make_engine) -> None:
    engine = make_engine(
        """
        pipeline:
          - {id: out, type: keyword-filter, stage: response, mode: monitor, settings: {patterns: [secret], action: redact}}
        """
    )
    resp = ChatResponse(
        id="x",
        model="m",
        choices=[Choice(index=0, message=ResponseMessage(role="assistant", content="the secret is out"))],
    )
    out = await engine.evaluate_response(resp, CONN)
    assert out.response.choices[0].message.content == "the secret is out"
    assert out.result.monitored is Verdict.REDACT and not out.result.redactions


async def test_a_stream_guard_holds_nothing_back_for_monitor_hooks(make_engine) -> None:
    engine = make_engine(
        """
        streaming: {mode: chunked, window_chars: 16, holdback_chars: 12}
        pipeline:
          - {id: out, type: keyword-filter, stage: response, mode: monitor, settings: {patterns: [secret], action: block}}
        """
    )
    guard = engine.stream_guard(CONN)
    released = ""
    for piece in ("the sec", "ret is ", "out, and more text follows"):
        step = await guard.feed(piece)
        assert not step.blocked
        released += step.emit
    # Everything fed went out as it came: no hold-back for a word that only
    # a monitor hook watches for.
    assert released == "the secret is out, and more text follows"
    final = await guard.finish()
    assert not final.blocked
    summary = guard.summary()
    assert summary.monitored is Verdict.BLOCK and not summary.blocked


def test_an_unknown_mode_is_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"hooks\.pipeline\[0\]\.mode"):
        hooks_config("pipeline:\n  - {id: kw, type: noop, mode: audit}\n")
