"""PII and secret recognition: presidio's recognizers and validators, run
through the pre-scan engine."""

from __future__ import annotations

import pytest

from ingress.hooks.pii.engine import RecognizerEngine
from ingress.hooks.text import redact_text
from streams.config_hooks import PII_ENTITIES, SECRET_ENTITIES, CustomPattern

ENTITIES = [e for e in PII_ENTITIES if e != "URL"] + list(SECRET_ENTITIES)


@pytest.fixture(scope="module")
def engine() -> RecognizerEngine:
    return RecognizerEngine(ENTITIES)


def found(engine: RecognizerEngine, text: str, min_score: float = 0.5) -> list[tuple[str, str]]:
    return [(s.entity, text[s.start : s.end]) for s in engine.analyze(text, min_score)]


GH = "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx3Vb\nq9Zk2LmPw==\n-----END RSA PRIVATE KEY-----"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "pay with 4111 1111 1111 1111 today", [("CREDIT_CARD", "4111 1111 1111 1111")], id="card-luhn-ok"
        ),
        pytest.param(
            "pay with 4111111111111111 today", [("CREDIT_CARD", "4111111111111111")], id="card-no-spaces"
        ),
        pytest.param("pay with 4111 1111 1111 1112 today", [], id="card-luhn-bad"),
        pytest.param(
            "wire to DE89 3704 0044 0532 0130 00 please",
            [("IBAN_CODE", "DE89 3704 0044 0532 0130 00")],
            id="iban-ok",
        ),
        pytest.param("wire to DE89 3704 0044 0532 0130 01 please", [], id="iban-bad-checksum"),
        pytest.param("my ssn is 536-22-4687", [("US_SSN", "536-22-4687")], id="ssn-context"),
        pytest.param("order 536224687 shipped", [], id="ssn-weak-no-context"),
        pytest.param(
            "write to jane.doe@example.co.uk now", [("EMAIL_ADDRESS", "jane.doe@example.co.uk")], id="email"
        ),
        pytest.param("write to jane.doe@example.notatld now", [], id="email-bad-tld"),
        pytest.param("host 192.168.10.20 is down", [("IP_ADDRESS", "192.168.10.20")], id="ipv4"),
        pytest.param(
            "call my phone +1 415 555 2671", [("PHONE_NUMBER", "+1 415 555 2671")], id="phone-context"
        ),
        pytest.param(
            "key AKIAIOSFODNN7EXAMPLE here", [("AWS_ACCESS_KEY", "AKIAIOSFODNN7EXAMPLE")], id="aws-access-key"
        ),
        pytest.param("key AKIAIOSFODNN7EXAMPL1 here", [], id="aws-bad-charset"),
        pytest.param(
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            [("AWS_SECRET_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")],
            id="aws-secret-context",
        ),
        pytest.param(f"token {GH} leaked", [("GITHUB_TOKEN", GH)], id="github-token"),
        pytest.param(f"here:\n{PEM}\nend", [("PRIVATE_KEY", PEM)], id="private-key"),
        pytest.param(
            "password = Hunter2Secret!", [("GENERIC_SECRET", "Hunter2Secret!")], id="assigned-password"
        ),
        pytest.param("password = changeme_placeholder", [], id="placeholder-password"),
        pytest.param(
            "sk-ant-api03-" + "x1Y2z3" * 10,
            [("ANTHROPIC_API_KEY", "sk-ant-api03-" + "x1Y2z3" * 10)],
            id="anthropic-key",
        ),
        pytest.param("the quick brown fox jumps over the lazy dog", [], id="clean"),
    ],
)
def test_recognizers(engine: RecognizerEngine, text: str, expected: list[tuple[str, str]]) -> None:
    assert found(engine, text) == expected


def test_offsets_survive_non_ascii_text(engine: RecognizerEngine) -> None:
    text = "Zahlung für Jürgen — Karte 4111 1111 1111 1111 ✓"
    spans = engine.analyze(text, 0.5)
    assert [(s.entity, text[s.start : s.end]) for s in spans] == [("CREDIT_CARD", "4111 1111 1111 1111")]
    assert redact_text(text, spans) == "Zahlung für Jürgen — Karte [REDACTED_CREDIT_CARD] ✓"


def test_card_inside_longer_number_is_not_a_card(engine: RecognizerEngine) -> None:
    # A valid card number embedded in a 24-digit reference: presidio's \b
    # rejects it, and so must the windowed scan (the lookbehind sees the
    # whole text, not just the window).
    assert found(engine, "ref 99994111111111111111 9999") == []


def test_custom_pattern_with_luhn() -> None:
    eng = RecognizerEngine((), [CustomPattern(id="EMPLOYEE_CARD", regex=r"\bEC-\d{16}\b", luhn=True)])
    assert [t for _, t in found(eng, "badge EC-4111111111111111 ok", 0.5)] == ["EC-4111111111111111"]
    assert found(eng, "badge EC-4111111111111112 ok", 0.5) == []


PARITY_CORPUS = [
    "Card 4111 1111 1111 1111, other 5500 0000 0000 0004 and bad 4111 1111 1111 1112.",
    "IBAN GB82 WEST 1234 5698 7654 32 and DE89370400440532013000; wrong DE89 3704 0044 0532 0130 01",
    "Mail ops@example.com or a.b-c@sub.example.org; ip 10.0.0.1, 2001:db8::1 and 256.1.1.1",
    "SSN 078-05-1120 and 536-22-4687 and 000-12-3456; order 123456789.",
    "Nothing to see here, just prose about quarterly planning and the weather in 2026.",
]


def test_same_findings_as_presidio_analyzer(engine: RecognizerEngine) -> None:
    """The pre-scan engine must report what presidio's AnalyzerEngine reports
    (pattern recognizers, no context words in the corpus)."""
    import spacy
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import SpacyNlpEngine
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        UsSsnRecognizer,
    )

    class BlankNlp(SpacyNlpEngine):
        def __init__(self) -> None:
            super().__init__(models=[{"lang_code": "en", "model_name": "blank"}])
            self.nlp = {"en": spacy.blank("en")}

        def load(self) -> None:
            pass

    registry = RecognizerRegistry(supported_languages=["en"])
    for r in (CreditCardRecognizer(), IbanRecognizer(), UsSsnRecognizer(), EmailRecognizer(), IpRecognizer()):
        registry.add_recognizer(r)
    analyzer = AnalyzerEngine(registry=registry, nlp_engine=BlankNlp(), supported_languages=["en"])
    ents = ["CREDIT_CARD", "IBAN_CODE", "US_SSN", "EMAIL_ADDRESS", "IP_ADDRESS"]
    ours = RecognizerEngine(ents)
    for text in PARITY_CORPUS:
        theirs = sorted(
            (r.entity_type, r.start, r.end)
            for r in analyzer.analyze(text, language="en", entities=ents, score_threshold=0.01)
        )
        mine = sorted((s.entity, s.start, s.end) for s in ours.analyze(text, 0.01))
        assert mine == theirs, text


def test_no_space_entities_really_cannot_match_whitespace() -> None:
    # The windowed scan starts such matches after the last whitespace; a
    # pattern that could span a space would be cut short.
    from ingress.hooks.pii import recognizers
    from ingress.hooks.pii.engine import _NO_SPACE

    for entity in _NO_SPACE:
        for p in recognizers.PII_RECOGNIZERS[entity]().patterns:  # type: ignore[call-arg, attr-defined]
            for construct in ("\\s", " ", "\\W", "[^", "\\D"):
                assert construct not in p.regex, (entity, p.name, construct)


def test_presidio_stays_offline() -> None:
    import tldextract.tldextract as tld

    assert tld.TLD_EXTRACTOR.suffix_list_urls == ()
