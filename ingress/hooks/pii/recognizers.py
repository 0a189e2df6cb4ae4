"""The recognizers that define each entity: presidio's own for PII (their
patterns and validators, kept in ``predefined`` so pattern mode never
imports presidio and spaCy), and ``PatternRecognizer`` subclasses for
secrets (presidio ships none), each with a validator that turns a bare
pattern hit into a finding."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence

from ingress.hooks.pii.predefined import (
    CreditCardRecognizer,
    EmailRecognizer,
    EntityRecognizer,
    IbanRecognizer,
    IpRecognizer,
    Pattern,
    PatternRecognizer,
    PhoneRecognizer,
    UrlRecognizer,
    UsSsnRecognizer,
)
from streams.config_hooks import CustomPattern


def _classes(value: str) -> int:
    return sum(
        (
            any(c.islower() for c in value),
            any(c.isupper() for c in value),
            any(c.isdigit() for c in value),
        )
    )


_PLACEHOLDERS = ("example", "xxxx", "****", "changeme", "placeholder", "your_", "your-", "<", "${", "{{")


class AwsAccessKeyRecognizer(PatternRecognizer):
    def __init__(self) -> None:
        super().__init__(
            supported_entity="AWS_ACCESS_KEY",
            name="AwsAccessKeyRecognizer",
            patterns=[
                Pattern(
                    "AWS access key id",
                    r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[A-Z2-7]{16}\b",
                    0.8,
                )
            ],
            context=["aws", "access", "key", "iam"],
        )

    def validate_result(self, pattern_text: str) -> bool | None:
        # The 16 characters after the prefix are base32 (no 0, 1, 8, 9).
        return all(c.isupper() or c in "234567" for c in pattern_text[4:])


class AwsSecretKeyRecognizer(PatternRecognizer):
    """40 base64 characters: meaningless alone (score 0.2), a finding next
    to ``aws_secret_access_key`` and friends (context adds 0.35)."""

    def __init__(self) -> None:
        super().__init__(
            supported_entity="AWS_SECRET_KEY",
            name="AwsSecretKeyRecognizer",
            patterns=[
                Pattern(
                    "AWS secret access key",
                    r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])",
                    0.2,
                )
            ],
            context=["aws_secret_access_key", "secret_access_key", "aws", "secret"],
        )

    CONFIRMS = False  # the check only drops matches (see PatternRecognizer)

    def validate_result(self, pattern_text: str) -> bool | None:
        return None if _classes(pattern_text) == 3 else False


class GithubTokenRecognizer(PatternRecognizer):
    PREFILTER = {"GitHub token": r"\bgh[pousr]_[A-Za-z0-9]{36}"}

    def __init__(self) -> None:
        super().__init__(
            supported_entity="GITHUB_TOKEN",
            name="GithubTokenRecognizer",
            patterns=[
                Pattern("GitHub token", r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b", 0.9),
                Pattern("GitHub fine-grained token", r"\bgithub_pat_[A-Za-z0-9_]{82}\b", 0.95),
            ],
            context=["github", "token"],
        )


class PrivateKeyRecognizer(PatternRecognizer):
    # A whole PEM block, or a header followed by its base64 body when the
    # END line is missing (a truncated paste still leaks the key).
    # The pre-scan finds the header; the block runs up to AFTER characters
    # past it, whitespace included.
    PREFILTER = {
        "PEM private key": r"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY",
        "PEM private key header": r"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY",
    }
    WIDTH = 64
    AFTER = 16400

    def __init__(self) -> None:
        label = r"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----"
        super().__init__(
            supported_entity="PRIVATE_KEY",
            name="PrivateKeyRecognizer",
            patterns=[
                Pattern(
                    "PEM private key",
                    label + r"[\s\S]*?-----END (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----",
                    1.0,
                ),
                Pattern("PEM private key header", label + r"(?:\s{0,4}[A-Za-z0-9+/=]{4,})*", 1.0),
            ],
        )


class SlackTokenRecognizer(PatternRecognizer):
    PREFILTER = {"Slack token": r"\bxox[abprs]-[A-Za-z0-9-]{10}"}

    def __init__(self) -> None:
        super().__init__(
            supported_entity="SLACK_TOKEN",
            name="SlackTokenRecognizer",
            patterns=[Pattern("Slack token", r"\bxox[abprs]-[A-Za-z0-9-]{10,72}\b", 0.9)],
        )


class OpenAiKeyRecognizer(PatternRecognizer):
    PREFILTER = {"OpenAI API key": r"\bsk-[A-Za-z0-9_-]{20}"}

    def __init__(self) -> None:
        super().__init__(
            supported_entity="OPENAI_API_KEY",
            name="OpenAiKeyRecognizer",
            patterns=[
                Pattern(
                    "OpenAI API key",
                    r"\bsk-(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,200}(?![A-Za-z0-9_-])",
                    0.8,
                )
            ],
            context=["openai", "key", "api"],
        )

    CONFIRMS = False  # the check only drops matches (see PatternRecognizer)

    def validate_result(self, pattern_text: str) -> bool | None:
        return None if _classes(pattern_text[3:]) >= 2 else False


class AnthropicKeyRecognizer(PatternRecognizer):
    PREFILTER = {"Anthropic API key": r"\bsk-ant-[A-Za-z0-9_-]{20}"}

    def __init__(self) -> None:
        super().__init__(
            supported_entity="ANTHROPIC_API_KEY",
            name="AnthropicKeyRecognizer",
            patterns=[Pattern("Anthropic API key", r"\bsk-ant-[A-Za-z0-9_-]{20,200}(?![A-Za-z0-9_-])", 0.95)],
        )


class GoogleApiKeyRecognizer(PatternRecognizer):
    def __init__(self) -> None:
        super().__init__(
            supported_entity="GOOGLE_API_KEY",
            name="GoogleApiKeyRecognizer",
            patterns=[Pattern("Google API key", r"\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])", 0.9)],
        )


class StripeKeyRecognizer(PatternRecognizer):
    def __init__(self) -> None:
        super().__init__(
            supported_entity="STRIPE_SECRET_KEY",
            name="StripeKeyRecognizer",
            patterns=[Pattern("Stripe secret key", r"\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{24,99}\b", 0.9)],
        )


class JwtRecognizer(PatternRecognizer):
    def __init__(self) -> None:
        super().__init__(
            supported_entity="JWT",
            name="JwtRecognizer",
            patterns=[
                Pattern(
                    "JSON web token",
                    r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
                    0.6,
                )
            ],
        )

    def validate_result(self, pattern_text: str) -> bool | None:
        head = pattern_text.split(".", 1)[0]
        try:
            header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
        except (binascii.Error, ValueError):
            return False
        return isinstance(header, dict) and "alg" in header


class GenericSecretRecognizer(PatternRecognizer):
    """``password = ...``, ``api_key: ...`` and friends: the value only."""

    # Pre-scan for the name and the assignment; the value follows within
    # AFTER characters (spaces around ``=`` included).
    PREFILTER = {
        "assigned secret": r"(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?token|auth[_-]?token"
        r"|client[_-]?secret|private[_-]?key)[\"']?\s{0,3}[:=]"
    }
    WIDTH = 48
    AFTER = 140

    def __init__(self) -> None:
        super().__init__(
            supported_entity="GENERIC_SECRET",
            name="GenericSecretRecognizer",
            patterns=[
                Pattern(
                    "assigned secret",
                    r"(?i)(?<=\b(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?token|auth[_-]?token"
                    r"|client[_-]?secret|private[_-]?key)[\"']?\s{0,3}[:=]\s{0,3}[\"']?)"
                    r"[^\s\"'`,;]{8,128}",
                    0.6,
                )
            ],
        )

    CONFIRMS = False  # the check only drops matches (see PatternRecognizer)

    def validate_result(self, pattern_text: str) -> bool | None:
        low = pattern_text.lower()
        if any(p in low for p in _PLACEHOLDERS) or len(set(pattern_text)) < 5:
            return False
        return None if _classes(pattern_text) >= 2 else False


class CustomPatternRecognizer(PatternRecognizer):
    """An operator's own entity.  Its regex runs under RE2 (see engine); the
    optional Luhn check is presidio's credit-card validator (as kept in
    ``predefined``)."""

    def __init__(self, spec: CustomPattern) -> None:
        super().__init__(
            supported_entity=spec.id,
            name=f"Custom:{spec.id}",
            patterns=[Pattern(spec.id, spec.regex, spec.score)],
            context=list(spec.context),
        )
        self._luhn = CreditCardRecognizer() if spec.luhn else None

    def validate_result(self, pattern_text: str) -> bool | None:
        if self._luhn is None:
            return None
        digits = "".join(c for c in pattern_text if c.isdigit())
        return len(digits) >= 8 and bool(self._luhn.validate_result(digits))


PII_RECOGNIZERS: dict[str, type[EntityRecognizer]] = {
    "CREDIT_CARD": CreditCardRecognizer,
    "IBAN_CODE": IbanRecognizer,
    "US_SSN": UsSsnRecognizer,
    "EMAIL_ADDRESS": EmailRecognizer,
    "PHONE_NUMBER": PhoneRecognizer,
    "IP_ADDRESS": IpRecognizer,
    "URL": UrlRecognizer,
    "AWS_ACCESS_KEY": AwsAccessKeyRecognizer,
    "AWS_SECRET_KEY": AwsSecretKeyRecognizer,
    "GITHUB_TOKEN": GithubTokenRecognizer,
    "PRIVATE_KEY": PrivateKeyRecognizer,
    "SLACK_TOKEN": SlackTokenRecognizer,
    "OPENAI_API_KEY": OpenAiKeyRecognizer,
    "ANTHROPIC_API_KEY": AnthropicKeyRecognizer,
    "GOOGLE_API_KEY": GoogleApiKeyRecognizer,
    "STRIPE_SECRET_KEY": StripeKeyRecognizer,
    "JWT": JwtRecognizer,
    "GENERIC_SECRET": GenericSecretRecognizer,
}


def build(entities: Sequence[str]) -> list[EntityRecognizer]:
    return [PII_RECOGNIZERS[e]() for e in entities]  # type: ignore[call-arg]
