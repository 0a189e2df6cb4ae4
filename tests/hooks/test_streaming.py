"""Streamed responses: chunked windows with holdback, buffer-and-block,
passthrough audit."""

# ruff: noqa: E501 - tables of prompts and YAML read better unwrapped

from __future__ import annotations

import itertools

from ingress.hooks import Verdict
from tests.hooks.conftest import CONN

CARD = "4111 1111 1111 1111"
HOOKS = """
streaming: {{mode: {mode}, window_chars: 64, holdback_chars: 32}}
pipeline:
  - {{id: pii, type: pii-detector, stage: response}}
  - {{id: kw, type: keyword-filter, stage: response, settings: {{patterns: ['launch\\s+codes'], action: block}}}}
"""


async def run(guard, pieces):
    out, steps = [], []
    for p in pieces:
        step = await guard.feed(p)
        steps.append(step)
        out.append(step.emit)
        if step.blocked:
            return "".join(out), steps, True
    step = await guard.finish()
    steps.append(step)
    out.append(step.emit)
    return "".join(out), steps, step.blocked


def split_every(text: str, n: int) -> list[str]:
    return [text[i : i + n] for i in range(0, len(text), n)]


async def test_chunked_catches_a_card_split_across_chunks(make_engine) -> None:
    engine = make_engine(HOOKS.format(mode="chunked"))
    text = (
        "Here is the summary you asked for, nothing else. " * 2 + f"Card {CARD} is on file. " + "Thanks!" * 10
    )
    guard = engine.stream_guard(CONN)
    sent, steps, blocked = await run(guard, split_every(text, 7))
    assert not blocked
    assert "4111" not in sent
    assert sent == text.replace(CARD, "[REDACTED_CREDIT_CARD]")
    # text went out before the end (not buffered whole), in window-sized pieces
    assert sum(1 for s in steps[:-1] if s.emit) >= 2
    summary = guard.summary()
    assert summary.decision is Verdict.REDACT
    pii = next(r for r in summary.records if r.hook == "pii")
    # spans are in the coordinates of the text the caller received
    assert [(s.entity, sent[s.start : s.start + 22]) for s in pii.spans] == [
        ("CREDIT_CARD", "[REDACTED_CREDIT_CARD]")
    ]


async def test_chunked_block_cuts_the_stream(make_engine) -> None:
    engine = make_engine(HOOKS.format(mode="chunked"))
    text = (
        "Lorem ipsum dolor sit amet. " * 6 + "The launch codes are 0000. " + "More text follows here. " * 10
    )
    guard = engine.stream_guard(CONN)
    sent, steps, blocked = await run(guard, split_every(text, 5))
    assert blocked
    assert "launch codes" not in sent and len(sent) < len(text)
    assert guard.summary().blocking_hook == "kw"
    assert await guard.feed("more") == type(steps[0])()  # closed: nothing more goes out


async def test_buffer_mode_releases_only_at_the_end(make_engine) -> None:
    engine = make_engine(HOOKS.format(mode="buffer"))
    text = f"Your card {CARD} was charged. " * 3
    guard = engine.stream_guard(CONN)
    _sent, steps, blocked = await run(guard, split_every(text, 10))
    assert not blocked
    assert all(s.emit == "" for s in steps[:-1])
    assert steps[-1].emit == text.replace(CARD, "[REDACTED_CREDIT_CARD]")


async def test_buffer_mode_blocks_before_anything_leaves(make_engine) -> None:
    engine = make_engine(HOOKS.format(mode="buffer"))
    guard = engine.stream_guard(CONN)
    sent, _, blocked = await run(guard, split_every("the launch codes are here " * 3, 8))
    assert blocked and sent == ""


async def test_passthrough_audits_after_without_enforcing(make_engine) -> None:
    engine = make_engine(HOOKS.format(mode="passthrough"))
    text = f"card {CARD} and the launch codes"
    guard = engine.stream_guard(CONN)
    sent, _, blocked = await run(guard, split_every(text, 4))
    assert sent == text and not blocked
    summary = guard.summary()
    assert summary.decision is Verdict.BLOCK and not guard.enforced
    assert summary.blocking_hook == "kw"


async def test_windows_when_a_hook_is_not_pattern_based(make_engine) -> None:
    """A hook whose findings no pattern predicts (NER here) makes the guard
    evaluate fixed windows: with the default window (128) and holdback
    (128), an answer's first text goes out once 256 characters have
    arrived and been screened, and then in steps of about 128."""
    engine = make_engine(
        """
pipeline:
  - {id: pii, type: pii-detector, stage: response, settings: {ner_all: true}}
"""
    )
    guard = engine.stream_guard(CONN)
    text = "The quarterly report shows revenue grew in the enterprise segment. " * 12
    released_at = []
    seen = 0
    for piece in split_every(text, 4):
        seen += len(piece)
        step = await guard.feed(piece)
        if step.emit:
            released_at.append(seen)
    final = await guard.finish()
    assert released_at[0] == 256
    assert all(b - a == 128 for a, b in itertools.pairwise(released_at))
    assert len(released_at) >= 4
    assert final.emit and not final.blocked
