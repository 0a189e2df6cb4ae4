"""The built-in hook implementations, by config ``type``."""

from __future__ import annotations

from typing import Any

from ingress.hooks.builtin.base import BaseHook, BuildContext
from ingress.hooks.builtin.conn_hooks import DomainFilterHook, IpFilterHook, RateLimitHook, RequestSizeHook
from ingress.hooks.builtin.text_hooks import ContentSafetyHook, KeywordHook, PiiHook, RulepackHook
from ingress.hooks.builtin.webhook import WebhookError, WebhookHook
from ingress.hooks.holdback import HoldPattern
from ingress.hooks.types import HookInput, HookOutcome


class NoopHook(BaseHook):
    def evaluate(self, data: HookInput) -> HookOutcome:
        return HookOutcome()

    def hold_patterns(self) -> list[HoldPattern] | None:
        return []


HOOK_CLASSES: dict[str, type[BaseHook]] = {
    "pii-detector": PiiHook,
    "keyword-filter": KeywordHook,
    "rulepack-engine": RulepackHook,
    "content-safety": ContentSafetyHook,
    "rate-limiter": RateLimitHook,
    "request-size-validator": RequestSizeHook,
    "ip-access-filter": IpFilterHook,
    "domain-filter": DomainFilterHook,
    "webhook-forward": WebhookHook,
    "noop": NoopHook,
}

__all__ = ["HOOK_CLASSES", "BaseHook", "BuildContext", "WebhookError"]


def entities_needed(hooks: list[tuple[str, Any]]) -> set[str]:
    """Every pattern entity any configured hook asks for, so one recognizer
    engine (one pre-scan per text) serves them all."""
    from ingress.hooks.rulepacks import load_packs
    from streams.config_hooks import ContentSafetySettings, PiiSettings, RulepackSettings

    out: set[str] = set()
    for _type, settings in hooks:
        if isinstance(settings, PiiSettings):
            out.update(settings.entities)
        elif isinstance(settings, RulepackSettings | ContentSafetySettings):
            for pack in load_packs(settings.packs, settings.files):
                for rule in pack.rules:
                    out.update(rule.entities)
    return out
