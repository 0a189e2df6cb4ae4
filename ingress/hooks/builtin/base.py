"""What every hook implementation shares, and what the builder hands them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ingress.hooks.holdback import HoldPattern
from ingress.hooks.pii.engine import RecognizerEngine
from ingress.hooks.types import HookInput, HookOutcome, Span, Verdict
from streams.config_hooks import HookSpec


@dataclass(slots=True)
class BuildContext:
    """Shared by the hooks of one pipeline: one recognizer engine for every
    entity any hook needs (one pre-scan per text, cached), the Valkey client
    for rate limits, and resources to close on shutdown."""

    entities: RecognizerEngine
    valkey: Any = None  # valkey.asyncio.Valkey
    key_prefix: str = "nexus:"
    closers: list[Any] = field(default_factory=list)


class BaseHook:
    is_async = False

    def __init__(self, spec: HookSpec, settings: Any, ctx: BuildContext) -> None:
        self.spec = spec
        self.settings = settings
        self.ctx = ctx

    def evaluate(self, data: HookInput) -> HookOutcome:
        raise NotImplementedError

    async def aevaluate(self, data: HookInput) -> HookOutcome:
        return self.evaluate(data)

    def hold_patterns(self) -> list[HoldPattern] | None:
        """Every expression this hook can find in a text, for a stream
        guard that releases text as soon as no finding could still cover it
        (``ingress.hooks.holdback``); [] for a hook that never reads text,
        None when its findings cannot be predicted from patterns (the guard
        then evaluates fixed windows)."""
        return None


def strictest(
    found: Sequence[tuple[Verdict, str, str, tuple[Span, ...]]],
) -> tuple[Verdict, str, str, tuple[Span, ...]]:
    """Of (verdict, rule, severity, spans) findings: the verdict and rule of
    the strictest, the spans to redact (those of redact findings; a block
    carries every span as evidence)."""
    if not found:
        return Verdict.APPROVE, "", "", ()
    top = max(found, key=lambda f: f[0])
    verdict = top[0]
    if verdict is Verdict.REDACT:
        spans = tuple(s for f in found if f[0] is Verdict.REDACT for s in f[3])
    else:
        spans = tuple(s for f in found for s in f[3])
    return verdict, top[1], top[2], spans
