"""Chunked stream guard with the hooks' patterns: text goes out as soon as
no finding could still cover it (``ingress.hooks.holdback``), and nothing a
hook would find on the whole answer leaks, wherever the chunks split it."""

from __future__ import annotations

import pytest

from ingress.hooks import Verdict, holdback
from tests.hooks.conftest import CONN

SECRET_LEAK = """
pipeline:
  - {id: leak, type: rulepack-engine, stage: response, settings: {packs: [secret-leak]}}
"""
PII_AND_SECRETS = """
pipeline:
  - {id: pii, type: pii-detector, stage: response}
  - {id: leak, type: rulepack-engine, stage: response, settings: {packs: [secret-leak]}}
  - {id: kw, type: keyword-filter, stage: response, settings: {patterns: ['launch\\s+codes'], action: block}}
"""

PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MaWGdStmHtSUiG2n\n"
    "-----END RSA PRIVATE KEY-----"
)
# Each found by a response hook on the whole text; the streamed answer must
# be what the hooks make of the whole text, however it is split.
CORPUS = [
    "Your key is AKIAIOSFODNN7EXAMPLE, rotate it.",
    "Set aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY today.",
    "Token ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 works.",
    "Use sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7cDe0f then.",
    "Claude key sk-ant-api03-Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0Pp9Oo8Nn7 here.",
    "Maps AIzaSyA-1234567890abcdefghijklmnopqrstu end.",
    "Slack xoxb-123456789012-abcdefABCDEF0 bot.",
    "Stripe sk_live_4eC39HqLyjWDarjtT1zdp7dcXYZ charge.",
    "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dBjftJeZ4CVPmB92K27uhbUJU1p1r done",
    "Login with password = Tr0ub4dor&3xyz please.",
    "DSN postgres://admin:s3cr3tPass@db.example.com:5432/app ok",
    f"Here:\n{PEM}\nkeep it safe.",
    "Card 4111 1111 1111 1111 was charged.",
    "Mail john.doe@example.com for details.",
    "IBAN GB82 WEST 1234 5698 7654 32 is the account.",
    "Never share the launch codes with anyone.",
]


async def stream(guard, pieces: list[str]) -> tuple[str, bool, list[str]]:
    out: list[str] = []
    for p in pieces:
        step = await guard.feed(p)
        out.append(step.emit)
        if step.blocked:
            return "".join(out), True, out
    step = await guard.finish()
    out.append(step.emit)
    return "".join(out), step.blocked, out


async def whole(engine, text: str):
    result = await engine.evaluate_text("response", text, CONN)
    return result


@pytest.mark.slow
@pytest.mark.parametrize("text", CORPUS, ids=lambda t: t.split()[0] + "..." + t.split()[-1])
async def test_a_finding_split_at_every_chunk_boundary_is_caught(make_engine, text: str) -> None:
    engine = make_engine(PII_AND_SECRETS)
    expected = await whole(engine, text)
    assert expected.decision is not Verdict.APPROVE, "the corpus line must hold a finding"
    splits = [[text[:i], text[i:]] for i in range(1, len(text))]
    # and token-sized pieces of every width from 1 to 6, at every offset
    for width in range(1, 7):
        for offset in range(width):
            head, rest = text[:offset], text[offset:]
            splits.append(
                ([head] if head else []) + [rest[i : i + width] for i in range(0, len(rest), width)]
            )
    for pieces in splits:
        guard = engine.stream_guard(CONN)
        sent, blocked, _ = await stream(guard, pieces)
        summary = guard.summary()
        if expected.blocked:
            assert blocked, pieces
            assert summary.blocked
            # nothing of what the block was about left the gateway
            for span in expected.redactions or [
                s for r in expected.records for s in r.spans if r.effective is Verdict.BLOCK
            ]:
                assert text[span.start : span.end][:6] not in sent, pieces
        else:
            assert not blocked, pieces
            assert sent == expected.text, pieces
            assert summary.decision is Verdict.REDACT


async def test_plain_text_goes_out_as_it_arrives(make_engine) -> None:
    """With the secret-leak pack (what the benchmark's production config
    screens answers with), a word that cannot begin any secret leaves with
    its own delta: no window to fill, a short answer is not held whole."""
    engine = make_engine(SECRET_LEAK)
    guard = engine.stream_guard(CONN)
    pieces = ["Hello", "!", " How", " can", " I", " help", " you", " today", "?"]
    _, blocked, out = await stream(guard, pieces)
    assert not blocked
    assert out[:-1] == pieces


async def test_only_a_possible_secret_waits(make_engine) -> None:
    engine = make_engine(SECRET_LEAK)
    guard = engine.stream_guard(CONN)
    key = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7cDe0f"
    pieces = [
        "Your",
        " key",
        " is",
        " sk",
        "-proj",
        "-Ab3dEf6hIj9kLm",
        "2nOp5qRs8tUv1wXy4",
        "zAb7cDe0f",
        " and",
        " more",
        ".",
    ]
    _, blocked, out = await stream(guard, pieces)
    assert not blocked
    assert out[:3] == ["Your", " key", " is"]
    # from "sk" on, nothing leaves until the key is complete: then it is redacted
    assert out[3:7] == ["", "", "", ""] or "".join(out[3:7]) == " "
    joined = "".join(out)
    assert key not in joined and "sk-proj" not in joined
    assert "[REDACTED_LLM_API_KEY] and" in joined


async def test_a_word_that_could_be_an_email_waits_for_its_end(make_engine) -> None:
    """With PII screening on, any word could be an address's local part:
    it leaves once the character after it rules that out."""
    engine = make_engine("""
pipeline:
  - {id: pii, type: pii-detector, stage: response, settings: {entities: [EMAIL_ADDRESS]}}
""")
    guard = engine.stream_guard(CONN)
    _, _, out = await stream(guard, ["Hello", ",", " world", " and", " jane", "@", "example", ".com", " bye"])
    assert out[0] == "" and out[1] == "Hello,"
    assert "jane" not in "".join(out[:8])
    assert "".join(out).endswith("[REDACTED_EMAIL_ADDRESS] bye")


async def test_queued_deltas_settle_once(make_engine) -> None:
    """What one network read brings is queued and settled together."""
    engine = make_engine(SECRET_LEAK)
    guard = engine.stream_guard(CONN)
    for p in ["Hello", " there", ", key", " AKIAIOSFO", "DNN7EXAMPLE", " ok"]:
        assert (await guard.feed(p, settle=False)).emit == ""
    step = await guard.settle()
    assert step.emit == "Hello there, key [REDACTED_AWS_ACCESS_KEY] ok"[: len(step.emit)]
    assert "AKIA" not in step.emit
    final = await guard.finish()
    assert step.emit + final.emit == "Hello there, key [REDACTED_AWS_ACCESS_KEY] ok"


async def test_a_search_over_budget_falls_back_to_windows(make_engine, monkeypatch) -> None:
    """A pattern search that runs past its time budget (a pathological
    pattern on crafted text) makes the stream fall back to fixed windows,
    and still catches what is there."""
    monkeypatch.setattr(holdback, "_SEARCH_TIMEOUT_S", 1e-9)
    engine = make_engine(PII_AND_SECRETS)
    guard = engine.stream_guard(CONN)
    text = "intro " * 30 + "Card 4111 1111 1111 1111 was charged. " + "outro " * 30
    sent, blocked, out = await stream(guard, [text[i : i + 5] for i in range(0, len(text), 5)])
    assert not blocked
    assert sent == text.replace("4111 1111 1111 1111", "[REDACTED_CREDIT_CARD]")
    # fixed windows (128 + 128 holdback by default): nothing leaves before
    # the first window of 256 characters was screened
    released = [i for i, o in enumerate(out) if o]
    assert (released[0] + 1) * 5 >= 256
