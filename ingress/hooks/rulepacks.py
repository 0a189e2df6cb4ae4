"""Rule packs: YAML classification rules compiled once into one pre-scan.

Hyperscan says which rule patterns occur at all; RE2 extracts their spans
(linear time, whatever the prompt); entity rules take their spans from the
recognizer engine.  Shipped packs live in ``packs/``; operators add files
with the same schema (``streams.config_hooks.RulePack``), read from this
node's disk when its engine is built.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import msgspec.yaml
import re2
import regex

from ingress.hooks.holdback import HoldPattern
from ingress.hooks.pii.engine import RecognizerEngine
from ingress.hooks.scan import PatternSpec, Prefilter
from ingress.hooks.types import Span, Verdict
from streams.config_base import ConfigError, field_error
from streams.config_hooks import SEVERITY_RANK, Rule, RulePack
from streams.config_hooks_validation import validate_rule_pack

PACKS_DIR = Path(__file__).parent / "packs"
ENTITY_MIN_SCORE = 0.5


def compile_re2(pattern: str, *, case_insensitive: bool, where: str) -> Any:
    try:
        return re2.compile(("(?i)" if case_insensitive else "") + pattern)
    except Exception as exc:  # re2.error, or plain errors the binding raises on some inputs
        raise ConfigError(f"{where}: not a valid RE2 pattern: {exc}") from None


def load_rule_pack(path: str | Path, where: str) -> RulePack:
    """A pack file, read and validated (ConfigError naming ``where``)."""
    p = Path(path)
    try:
        text = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read rule pack {str(p)!r}: {exc.strerror}") from None
    try:
        pack = msgspec.yaml.decode(text, type=RulePack)
    except msgspec.ValidationError as exc:
        raise field_error(exc, where) from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{where}: rule pack {str(p)!r} is not valid YAML: {exc}") from None
    validate_rule_pack(pack, where)
    return pack


@functools.lru_cache(maxsize=32)
def shipped_pack(name: str) -> RulePack:
    return load_rule_pack(PACKS_DIR / f"{name}.yaml", f"packs/{name}.yaml")


def load_packs(names: Iterable[str], files: Iterable[str]) -> list[RulePack]:
    """The shipped packs by name and the operator's files (``files[j]``
    names a bad one)."""
    packs = [shipped_pack(n) for n in names]
    packs.extend(load_rule_pack(f, f"files[{j}]") for j, f in enumerate(files))
    return packs


@dataclass(frozen=True, slots=True)
class CompiledRule:
    pack: str
    rule: Rule
    action: Verdict
    regexes: tuple[Any, ...]  # re2 objects
    first_pattern: int  # index of its first pattern in the pre-scan


@dataclass(frozen=True, slots=True)
class RuleHit:
    pack: str
    rule: Rule
    action: Verdict
    spans: tuple[Span, ...]

    @property
    def severity_rank(self) -> int:
        return SEVERITY_RANK[self.rule.severity]


class RuleSet:
    def __init__(
        self,
        packs: Sequence[RulePack],
        *,
        disabled: Iterable[str] = (),
        actions: Mapping[str, str] = {},
        entities: RecognizerEngine | None = None,
    ) -> None:
        off = set(disabled)
        self.rules: list[CompiledRule] = []
        specs: list[PatternSpec] = []
        self._owner: list[int] = []  # pattern index -> rule index
        for pack in packs:
            for rule in pack.rules:
                if rule.id in off or rule.category in off:
                    continue
                regexes = tuple(
                    compile_re2(p, case_insensitive=rule.case_insensitive, where=f"{pack.id}.{rule.id}")
                    for p in rule.patterns
                )
                action = Verdict.parse(actions.get(rule.id, rule.action))
                self.rules.append(CompiledRule(pack.id, rule, action, regexes, len(specs)))
                for p in rule.patterns:
                    specs.append(PatternSpec(p, caseless=rule.case_insensitive, ucp=False))
                    self._owner.append(len(self.rules) - 1)
        self.entity_names = sorted({e for r in self.rules for e in r.rule.entities})
        self._entity_rules = [i for i, r in enumerate(self.rules) if r.rule.entities]
        self._entities = entities
        self._prefilter = Prefilter.cached(tuple(specs), prefilter=False, ends=False)

    def hold_patterns(self) -> list[HoldPattern]:
        """Every expression ``match`` can find: the rules' own (RE2 syntax,
        read here by the ``regex`` module for partial matching) and the
        recognizer patterns of their entities."""
        out: list[HoldPattern] = []
        for cr in self.rules:
            flags = regex.IGNORECASE if cr.rule.case_insensitive else 0
            out.extend(HoldPattern(p, flags) for p in cr.rule.patterns)
        if self.entity_names and self._entities is not None:
            out.extend(self._entities.hold_patterns(self.entity_names, ENTITY_MIN_SCORE))
        return out

    def match(self, text: str) -> list[RuleHit]:
        if not text:
            return []
        hit_patterns = set(self._prefilter.scan(text)) | self._prefilter.always
        found: list[Span] = []
        if self.entity_names and self._entities is not None:
            found = self._entities.analyze(text, ENTITY_MIN_SCORE)
        if not hit_patterns and not found:
            return []  # clean text: the common case, decided by the pre-scan alone
        by_entity: dict[str, list[Span]] = {}
        for s in found:
            by_entity.setdefault(s.entity, []).append(s)
        # Only the rules the pre-scan or an entity pointed at, in pack order.
        owner = self._owner
        candidates = {owner[p] for p in hit_patterns}
        if by_entity:
            candidates.update(self._entity_rules)
        hits: list[RuleHit] = []
        for i in sorted(candidates):
            cr = self.rules[i]
            spans: list[Span] = []
            for j, rx in enumerate(cr.regexes):
                if cr.first_pattern + j not in hit_patterns:
                    continue
                for m in rx.finditer(text):
                    if m.end() > m.start():
                        spans.append(Span(cr.rule.id, m.start(), m.end(), 1.0, cr.rule.id))
            for ent in cr.rule.entities:
                spans.extend(Span(ent, s.start, s.end, s.score, cr.rule.id) for s in by_entity.get(ent, ()))
            if spans:
                hits.append(RuleHit(cr.pack, cr.rule, cr.action, tuple(spans)))
        return hits


def hit_tags(hit: RuleHit) -> list[str]:
    tags = [f"rule:{hit.pack}/{hit.rule.id}", f"severity:{hit.rule.severity}"]
    if hit.rule.category:
        tags.append(f"category:{hit.rule.category}")
    tags.extend(hit.rule.tags)
    return tags
