"""Validation of the ``hooks:`` section, so a bad pattern, CIDR, webhook
target or unknown hook is refused at load with the path of the field
(``hooks.pipeline[2].settings.patterns[0]: ...``) instead of failing on the
first request that reaches it.

Everything here is a pure check the Hub can run before it publishes a
config.  What only a node can judge (operator rule-pack files on its disk,
an installed spaCy model, what a webhook's host name resolves to) is checked
by the node when it builds its engine (``ingress.hooks``).

:func:`hook_settings` types one hook's free ``settings`` mapping; the engine
calls it too, so what was validated is exactly what runs.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from typing import Any

import msgspec

from streams.config_base import ConfigError, field_error
from streams.config_checks import check_outbound_url, check_re2
from streams.config_hooks import (
    HOOK_TYPES,
    KNOWN_ENTITIES,
    MAX_OVERRIDE,
    MIN_REASON_CHARS,
    NER_ENTITIES,
    SHIPPED_PACKS,
    ContentSafetySettings,
    DomainFilterSettings,
    HooksConfig,
    HookSpec,
    IpFilterSettings,
    KeywordSettings,
    PiiSettings,
    RateLimitSettings,
    RequestSizeSettings,
    RulePack,
    RulepackSettings,
    WebhookSettings,
)

# Hooks that read no text can run at the connection stage; text hooks need a
# request or response.
_STAGES: dict[str, frozenset[str]] = {
    "rate-limiter": frozenset({"connection", "request"}),
    "ip-access-filter": frozenset({"connection", "request"}),
    "domain-filter": frozenset({"connection"}),
    "request-size-validator": frozenset({"request"}),
}
_TEXT_STAGES = frozenset({"request", "response"})


def hook_settings(spec: HookSpec, where: str = "settings") -> Any:
    """The strict settings Struct for one hook (raises ConfigError)."""
    cls = HOOK_TYPES.get(spec.type)
    if cls is None:
        raise ConfigError(f"{where}: unknown hook type {spec.type!r}")
    try:
        return msgspec.convert(spec.settings, type=cls)
    except msgspec.ValidationError as exc:
        raise field_error(exc, where) from None


def validate_rule_pack(pack: RulePack, where: str) -> None:
    seen: set[str] = set()
    for i, rule in enumerate(pack.rules):
        rw = f"{where}.rules[{i}]"
        if not rule.id or rule.id in seen:
            raise ConfigError(f"{rw}.id: missing or duplicate rule id {rule.id!r}")
        seen.add(rule.id)
        if not rule.patterns and not rule.entities:
            raise ConfigError(f"{rw}: a rule needs patterns or entities")
        for j, pat in enumerate(rule.patterns):
            check_re2(pat, case_insensitive=rule.case_insensitive, where=f"{rw}.patterns[{j}]")
        for j, ent in enumerate(rule.entities):
            if ent not in KNOWN_ENTITIES:
                raise ConfigError(f"{rw}.entities[{j}]: unknown entity {ent!r}")


def _check_aware(value: dt.datetime, where: str) -> None:
    if value.tzinfo is None:
        raise ConfigError(f"{where}: needs a time zone (e.g. 2026-01-01T10:00:00Z)")


def _check_override(start: dt.datetime, end: dt.datetime, reason: str, where: str, end_name: str) -> None:
    _check_aware(start, where)
    _check_aware(end, f"{where}.{end_name}")
    if end <= start:
        raise ConfigError(f"{where}.{end_name}: must be after the start")
    if end - start > MAX_OVERRIDE:
        raise ConfigError(f"{where}.{end_name}: at most 8 hours after it was set")
    if len(reason.strip()) < MIN_REASON_CHARS:
        raise ConfigError(f"{where}.reason: give a reason of at least {MIN_REASON_CHARS} characters")


def _validate_pii(settings: PiiSettings, w: str, orgs: Iterable[str] | None) -> None:
    for j, ent in enumerate(settings.entities):
        if ent not in KNOWN_ENTITIES or ent in NER_ENTITIES:
            raise ConfigError(f"{w}.entities[{j}]: unknown pattern entity {ent!r}")
    for ent in settings.actions:
        if ent not in KNOWN_ENTITIES and ent not in {c.id for c in settings.custom}:
            raise ConfigError(f"{w}.actions: unknown entity {ent!r}")
    for j, c in enumerate(settings.custom):
        check_re2(c.regex, where=f"{w}.custom[{j}].regex")
        if not 0 < c.score <= 1:
            raise ConfigError(f"{w}.custom[{j}].score: must be in (0, 1]")
    if not 0 <= settings.min_score <= 1:
        raise ConfigError(f"{w}.min_score: must be in [0, 1]")
    for j, ent in enumerate(settings.ner_entities):
        if ent not in NER_ENTITIES:
            raise ConfigError(f"{w}.ner_entities[{j}]: unknown NER entity {ent!r}")
    if orgs is not None:
        known = set(orgs)
        for j, org in enumerate(settings.ner_orgs):
            if org not in known:
                raise ConfigError(f"{w}.ner_orgs[{j}]: unknown org {org!r}")


def _validate_settings(settings: Any, where: str, orgs: Iterable[str] | None) -> None:
    w = f"{where}.settings"
    if isinstance(settings, PiiSettings):
        _validate_pii(settings, w, orgs)
    elif isinstance(settings, KeywordSettings):
        if not settings.patterns:
            raise ConfigError(f"{w}.patterns: at least one pattern")
        for j, pat in enumerate(settings.patterns):
            check_re2(pat, case_insensitive=settings.case_insensitive, where=f"{w}.patterns[{j}]")
    elif isinstance(settings, RulepackSettings | ContentSafetySettings):
        for j, name in enumerate(settings.packs):
            if name not in SHIPPED_PACKS:
                raise ConfigError(
                    f"{w}.packs[{j}]: unknown rule pack {name!r} (shipped: {', '.join(SHIPPED_PACKS)})"
                )
    elif isinstance(settings, RateLimitSettings):
        if settings.max_requests < 1:
            raise ConfigError(f"{w}.max_requests: must be at least 1")
        if settings.window_seconds <= 0:
            raise ConfigError(f"{w}.window_seconds: must be positive")
    elif isinstance(settings, RequestSizeSettings):
        if settings.max_bytes < 1 or settings.max_messages < 0:
            raise ConfigError(f"{w}.max_bytes: must be positive")
    elif isinstance(settings, IpFilterSettings):
        if not settings.cidrs and settings.mode == "allow":
            raise ConfigError(f"{w}.cidrs: an allow list needs at least one CIDR")
        for j, cidr in enumerate(settings.cidrs):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ConfigError(f"{w}.cidrs[{j}]: {cidr!r} is not a valid CIDR") from None
    elif isinstance(settings, DomainFilterSettings):
        if not settings.hosts:
            raise ConfigError(f"{w}.hosts: at least one host glob")
        for j, host in enumerate(settings.hosts):
            if not host or any(c in host for c in " /:@"):
                raise ConfigError(f"{w}.hosts[{j}]: {host!r} is not a host glob")
    elif isinstance(settings, WebhookSettings):
        check_outbound_url(settings.url, allow_private=settings.allow_private_network, where=f"{w}.url")
        if settings.timeout_ms <= 0:
            raise ConfigError(f"{w}.timeout_ms: must be positive")


def validate_hooks(
    cfg: HooksConfig,
    *,
    orgs: Iterable[str] | None = None,
    projects: Iterable[str] | None = None,
    keys: Iterable[str] | None = None,
) -> None:
    """Raise ConfigError naming the first bad field of the section."""
    if cfg.total_timeout_ms <= 0:
        raise ConfigError("hooks.total_timeout_ms: must be positive")
    known_orgs = None if orgs is None else set(orgs)
    known_projects = None if projects is None else set(projects)
    known_keys = None if keys is None else set(keys)
    seen: set[str] = set()
    for i, spec in enumerate(cfg.pipeline):
        where = f"hooks.pipeline[{i}]"
        if not spec.id or spec.id in seen:
            raise ConfigError(f"{where}.id: missing or duplicate hook id {spec.id!r}")
        seen.add(spec.id)
        if spec.type not in HOOK_TYPES:
            raise ConfigError(
                f"{where}.type: unknown hook {spec.type!r} (known: {', '.join(sorted(HOOK_TYPES))})"
            )
        allowed = _STAGES.get(spec.type)
        if allowed is not None and spec.stage not in allowed:
            raise ConfigError(f"{where}.stage: {spec.type} cannot run at the {spec.stage} stage")
        if allowed is None and spec.type != "noop" and spec.stage not in _TEXT_STAGES:
            raise ConfigError(f"{where}.stage: {spec.type} reads text; use request or response")
        if spec.timeout_ms <= 0:
            raise ConfigError(f"{where}.timeout_ms: must be positive")
        for field, known in (("orgs", known_orgs), ("projects", known_projects), ("keys", known_keys)):
            if known is None:
                continue
            for j, value in enumerate(getattr(spec, field)):
                if value not in known:
                    raise ConfigError(f"{where}.{field}[{j}]: unknown {field[:-1]} {value!r}")
        settings = hook_settings(spec, f"{where}.settings")
        _validate_settings(settings, where, known_orgs)
    if known_orgs is not None:
        for j, org in enumerate(cfg.capture.off_for_orgs):
            if org not in known_orgs:
                raise ConfigError(f"hooks.capture.off_for_orgs[{j}]: unknown org {org!r}")
    s = cfg.streaming
    if s.window_chars < 16 or s.holdback_chars < 0 or s.holdback_chars >= s.window_chars * 4:
        raise ConfigError(
            "hooks.streaming: window_chars must be >= 16 and holdback_chars in [0, 4 * window_chars)"
        )
    if s.max_buffer_chars < s.window_chars:
        raise ConfigError("hooks.streaming.max_buffer_chars: must be at least window_chars")
    for i, bg in enumerate(cfg.kill_switch.break_glass):
        _check_override(bg.engaged_at, bg.until, bg.reason, f"hooks.kill_switch.break_glass[{i}]", "until")
    if cfg.kill_switch.engaged and len(cfg.kill_switch.reason.strip()) < MIN_REASON_CHARS:
        raise ConfigError(
            f"hooks.kill_switch.reason: give a reason of at least {MIN_REASON_CHARS} characters"
        )
    for i, rule in enumerate(cfg.passthrough):
        where = f"hooks.passthrough[{i}]"
        _check_override(rule.set_at, rule.expires_at, rule.reason, where, "expires_at")
        if rule.scope == "global" and rule.target:
            raise ConfigError(f"{where}.target: a global rule has no target")
        if rule.scope != "global" and not rule.target:
            raise ConfigError(f"{where}.target: a {rule.scope} rule needs a target")
        if not (rule.bypass_hooks or rule.bypass_cache or rule.bypass_normalize):
            raise ConfigError(
                f"{where}: bypasses nothing; set bypass_hooks, bypass_cache or bypass_normalize"
            )
        if rule.bypass_normalize and not rule.bypass_cache:
            # A raw (un-normalised) response must never be served from, or
            # written to, the cache of normalised ones.
            raise ConfigError(f"{where}.bypass_normalize: requires bypass_cache")
