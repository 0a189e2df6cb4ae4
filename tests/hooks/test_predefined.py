"""The pattern-mode recognizers kept in ``ingress.hooks.pii.predefined`` are
presidio's, without importing presidio (and spaCy) at run time: same
patterns, scores, flags and context words, same validator verdicts, same
phone matches.  presidio is imported here, in the test, to compare."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ingress.hooks.pii import iban_patterns, predefined

NAMES = [
    "CreditCardRecognizer",
    "IbanRecognizer",
    "UsSsnRecognizer",
    "EmailRecognizer",
    "IpRecognizer",
    "UrlRecognizer",
]


def _theirs(name: str) -> object:
    from presidio_analyzer import predefined_recognizers

    return getattr(predefined_recognizers, name)()


@pytest.mark.parametrize("name", NAMES)
def test_same_patterns_context_and_flags(name: str) -> None:
    ours = getattr(predefined, name)()
    theirs = _theirs(name)
    assert [(p.name, p.regex, p.score) for p in ours.patterns] == [
        (p.name, p.regex, p.score)
        for p in theirs.patterns  # type: ignore[attr-defined]
    ]
    assert ours.context == theirs.context  # type: ignore[attr-defined]
    assert int(ours.global_regex_flags) == int(theirs.global_regex_flags)  # type: ignore[attr-defined]
    assert ours.supported_entities == theirs.supported_entities  # type: ignore[attr-defined]


def test_same_iban_formats() -> None:
    from presidio_analyzer.predefined_recognizers.generic import iban_patterns as theirs

    assert iban_patterns.regex_per_country == theirs.regex_per_country


VERDICT_CASES = {
    "CreditCardRecognizer": [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111111111111112",
        "5500 0000 0000 0004",
        "378282246310005",
        "6011111111111117",
        "0000000000000000",
    ],
    "IbanRecognizer": [
        "DE89 3704 0044 0532 0130 00",
        "DE89370400440532013000",
        "DE89 3704 0044 0532 0130 01",
        "GB82 WEST 1234 5698 7654 32",
        "GB82WEST12345698765432",
        "gb82west12345698765432",
        "GB82-WEST-1234-5698-7654-32",
        "FR14 2004 1010 0505 0001 3M02 606",
        "XX00 1234 5678 9012",
        "NO93 8601 1117 947",
        "AL47 2121 1009 0000 0002 3569 8741",
        "DE89 3704 0044 0532 0130",
    ],
    "UsSsnRecognizer": [
        "536-22-4687",
        "536 22 4687",
        "536.22.4687",
        "536-22.4687",
        "111-11-1111",
        "536-00-4687",
        "536-22-0000",
        "000-22-4687",
        "666-22-4687",
        "123456789",
        "987654320",
        "078-05-1120",
        "53622-4687",
        "536224687",
    ],
    "EmailRecognizer": [
        "jane.doe@example.co.uk",
        "jane.doe@example.notatld",
        "ops@example.com",
        "a@b.c",
        "x@localhost.localdomain",
        "user@xn--80ak6aa92e.com",
    ],
    "IpRecognizer": [
        "192.168.10.20",
        "10.0.0.1/24",
        "256.1.1.1",
        "2001:db8::1",
        "::ffff:10.0.0.1",
        "::",
        "fe80::1%eth0",
        "1:2:3:4:5:6:7:8:9",
    ],
    "UrlRecognizer": ["https://example.com/a", "example.org"],
}


@pytest.mark.parametrize("name", NAMES)
def test_same_verdicts(name: str) -> None:
    ours = getattr(predefined, name)()
    theirs = _theirs(name)
    for text in VERDICT_CASES[name]:
        assert ours.validate_result(text) == theirs.validate_result(text), (name, text)  # type: ignore[attr-defined]
        assert bool(ours.invalidate_result(text)) == bool(theirs.invalidate_result(text)), (name, text)  # type: ignore[attr-defined]


PHONE_CASES = [
    "call my phone +1 415 555 2671",
    "office (020) 7946 0958 or 07700 900123",
    "Tel. 030 901820, mobil +49 151 23456789",
    "+33 1 42 68 53 00 et 06 12 34 56 78",
    "+972-3-1234567 and +91 98765 43210 and (11) 91234-5678",
    "order 12345678 shipped in 2026 for 1,234.56",
    "415.555.2671 / 415-555-2671 / 4155552671",
]


@pytest.mark.parametrize("text", PHONE_CASES)
def test_same_phone_matches(text: str) -> None:
    ours = predefined.PhoneRecognizer()
    theirs = _theirs("PhoneRecognizer")
    assert ours.SCORE == theirs.SCORE  # type: ignore[attr-defined]
    assert ours.context == theirs.context  # type: ignore[attr-defined]
    assert tuple(ours.supported_regions) == tuple(theirs.supported_regions)  # type: ignore[attr-defined]
    mine = [(r.entity_type, r.start, r.end, r.score) for r in ours.analyze(text, ["PHONE_NUMBER"], None)]
    other = [
        (r.entity_type, r.start, r.end, r.score)
        for r in theirs.analyze(text, ["PHONE_NUMBER"], None)  # type: ignore[attr-defined]
    ]
    assert mine == other


def test_pattern_mode_never_imports_presidio_or_spacy() -> None:
    """The compliance engine in pattern mode, built and run in a fresh
    interpreter, leaves presidio, spaCy, tiktoken and tldextract unloaded."""
    code = (
        "import sys\n"
        "from ingress.hooks import ComplianceEngine\n"
        "from ingress.hooks.engine import ALWAYS_SCANNED\n"
        "from ingress.hooks.pii.engine import RecognizerEngine\n"
        "e = RecognizerEngine(ALWAYS_SCANNED)\n"
        "spans = e.analyze('card 4111 1111 1111 1111, call +1 415 555 2671, mail a@example.com', 0.3)\n"
        "assert {s.entity for s in spans} >= {'CREDIT_CARD', 'EMAIL_ADDRESS'}, spans\n"
        "heavy = ('presidio_analyzer', 'spacy', 'thinc', 'tiktoken', 'tldextract')\n"
        "bad = [m for m in heavy if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _suffix_cases() -> list[str]:
    from ingress.hooks.pii import suffixes

    rules = [p for p, is_rule in suffixes._load().items() if is_rule]
    cases = [
        "jane.doe@example.co.uk",
        "jane.doe@example.notatld",
        "ops@EXAMPLE.COM",
        "a@b.c",
        "x@localhost",
        "x@localhost.localdomain",
        "user@xn--80ak6aa92e.com",
        "user@example.xn--p1ai",
        "user@пример.рф",
        "user@foo.blogspot.com",
        "user@blogspot.com",
        "u@10.0.0.1",
        "u@1.2.3.4.5",
        "u@co.uk",
        "u@www.ck",
        "u@foo.ck",
        "u@bar.foo.ck",
        "u@city.kawasaki.jp",
        "u@foo.kawasaki.jp",
        "u@a.b.kawasaki.jp",
        "u@example.com.",
        "u@exa_mple.com",
        "u@xn--zz-invalid.com",
        "u@example。com",
        "a@b@example.org",
        "http://user@example.org/path",
    ]
    for rule in rules:
        bare = rule.lstrip("!").replace("*", "wild")
        cases += [f"u@{bare}", f"u@shop.{bare}", f"u@a.b.{bare}", f"u@SHOP.{bare.upper()}"]
    return cases


def test_email_domain_check_matches_tldextract_on_every_rule() -> None:
    from ingress.hooks.pii import offline
    from ingress.hooks.pii.suffixes import has_fqdn

    offline.guard()
    import tldextract

    mismatches = [c for c in _suffix_cases() if has_fqdn(c) != (tldextract.extract(c).fqdn != "")]
    assert mismatches == []


def test_email_domain_check_never_imports_tldextract() -> None:
    code = (
        "import sys\n"
        "from ingress.hooks.pii.predefined import EmailRecognizer\n"
        "r = EmailRecognizer()\n"
        "assert r.validate_result('jane.doe@example.co.uk') is True\n"
        "assert r.validate_result('jane.doe@example.notatld') is False\n"
        "assert 'tldextract' not in sys.modules and 'requests' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
