"""presidio's recognizers, run fast (their patterns and validators as kept in
``predefined``: presidio itself is imported for NER only).

presidio's ``AnalyzerEngine`` runs every recognizer's regex over the whole
text (~11 ms per KB here).  This engine keeps each recognizer's patterns,
flags, scores, validators and context words, but finds candidates first
with one Hyperscan pass over all patterns (prefilter mode, which accepts
presidio's lookarounds as a superset) and runs the recognizer's own regex
only in windows around the candidates.  The result is the same set of
spans presidio reports, scored the same way; a test checks it against
``AnalyzerEngine`` on a corpus.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import re2
import regex

from ingress.hooks.holdback import HoldPattern
from ingress.hooks.pii import recognizers as recs
from ingress.hooks.pii.predefined import EntityRecognizer, PatternRecognizer, PhoneRecognizer
from ingress.hooks.scan import ENGINE, PatternSpec, Prefilter, windows
from ingress.hooks.types import Span
from streams.config_hooks import CustomPattern

# presidio's LemmaContextAwareEnhancer defaults.
CONTEXT_FACTOR = 0.35
MIN_SCORE_WITH_CONTEXT = 0.4
CONTEXT_WORDS_BEFORE = 5
_WORD = re.compile(r"\w+")
_MAX_WIDTH = 512
# Cheap superset of what phonenumbers will accept: 7+ digits with the usual
# separators.  The matcher itself (presidio's PhoneRecognizer) decides.
_PHONE_CANDIDATE = r"\+?\(?[0-9][0-9 ().\-]{5,22}[0-9]"
_PHONE_WIDTH = 32
# Simpler pre-scan expressions for presidio patterns whose own form is slow
# to compile (Unicode \w in both halves of an address).  Each is a superset:
# every true match contains a match of it, and ends at most at the next
# whitespace after it (the window stretches there).
# Entities whose patterns cannot match whitespace (checked against each
# recognizer's regex by tests/hooks/test_pii.py).
_NO_SPACE = frozenset(
    {
        "EMAIL_ADDRESS",
        "IP_ADDRESS",
        "AWS_ACCESS_KEY",
        "AWS_SECRET_KEY",
        "GITHUB_TOKEN",
        "SLACK_TOKEN",
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "GOOGLE_API_KEY",
        "STRIPE_SECRET_KEY",
        "JWT",
    }
)
# Pre-scan expressions for presidio patterns whose own form is slow to
# compile in Unicode mode (several seconds each).  Each is a superset without
# Unicode classes: every true match contains a match of it and ends at most
# at the next whitespace after it (where the window stretches); a non-ASCII
# character stands in for any Unicode word character or digit.
_ANY_DIGIT = r"(?:[0-9]|[^\x00-\x7f])"
_PRESIDIO_PREFILTER = {
    "Email (Medium)": r"[@][^\s@.]+\.[^\s.]",
    "All Credit Cards (weak)": (
        rf"{_ANY_DIGIT}{{4}}[- ]?{_ANY_DIGIT}{{3,4}}[- ]?{_ANY_DIGIT}{{3,4}}[- ]?{_ANY_DIGIT}{{3,5}}"
    ),
}

Finder = Callable[[str, int, int], Iterator[Any]]


@dataclass(slots=True)
class _Pattern:
    entity: str
    recognizer: EntityRecognizer
    score: float
    finditer: Finder
    width: int
    expression: str
    flags: int = 0  # the recognizer's regex-module flags
    phone: bool = False
    prefilter: str = ""  # the pre-scan expression when not ``expression``
    after: int | None = None  # window reach past a candidate, whitespace included
    no_space: bool = False  # its matches never contain whitespace


def _width(expression: str, flags: int) -> int:
    try:
        lo_hi = re._parser.parse(expression, flags).getwidth()  # type: ignore[attr-defined]
    except (re.error, ValueError, OverflowError):
        return _MAX_WIDTH
    return min(int(lo_hi[1]), _MAX_WIDTH)


def _py_flags(rflags: int) -> int:
    out = 0
    if rflags & regex.IGNORECASE:
        out |= re.IGNORECASE
    if rflags & regex.DOTALL:
        out |= re.DOTALL
    if rflags & regex.MULTILINE:
        out |= re.MULTILINE
    return out


def _context_score(text: str, start: int, score: float, context: Sequence[str]) -> float:
    if not context:
        return score
    words = _WORD.findall(text[max(0, start - 200) : start].lower())[-CONTEXT_WORDS_BEFORE:]
    if not words:
        return score
    wanted = {c.strip().lower() for c in context}
    if not wanted.intersection(words):
        return score
    return min(1.0, max(score + CONTEXT_FACTOR, MIN_SCORE_WITH_CONTEXT))


def _remove_duplicates(spans: list[Span]) -> list[Span]:
    """presidio's rule: of two results of the same entity where one contains
    the other, keep the higher score (the larger on a tie)."""
    spans.sort(key=lambda s: (-s.score, s.start, -(s.end - s.start)))
    kept: list[Span] = []
    for s in spans:
        if any(
            k.entity == s.entity and k.start <= s.start and s.end <= k.end and k.score >= s.score
            for k in kept
        ):
            continue
        kept.append(s)
    kept.sort(key=lambda s: (s.start, s.end))
    return kept


class RecognizerEngine:
    """``analyze(text)`` -> scored spans of the configured entities."""

    def __init__(self, entities: Iterable[str], custom: Sequence[CustomPattern] = ()) -> None:
        self.entities = tuple(dict.fromkeys(entities))
        self._patterns: list[_Pattern] = []
        for recognizer in recs.build(self.entities):
            if isinstance(recognizer, PhoneRecognizer):
                self._patterns.append(
                    _Pattern(
                        "PHONE_NUMBER",
                        recognizer,
                        recognizer.SCORE,
                        regex.compile(_PHONE_CANDIDATE).finditer,
                        _PHONE_WIDTH,
                        _PHONE_CANDIDATE,
                        phone=True,
                    )
                )
                continue
            assert isinstance(recognizer, PatternRecognizer)
            flags = recognizer.global_regex_flags or 0
            patterns: list[Any] = getattr(recognizer, "patterns", [])
            for p in patterns:
                width = getattr(recognizer, "WIDTH", None) or _width(p.regex, _py_flags(flags))
                prefilter = getattr(recognizer, "PREFILTER", {}).get(p.name) or _PRESIDIO_PREFILTER.get(
                    p.name, ""
                )
                self._patterns.append(
                    _Pattern(
                        recognizer.supported_entities[0],
                        recognizer,
                        p.score,
                        regex.compile(p.regex, flags=flags).finditer,
                        width,
                        p.regex,
                        flags,
                        prefilter=prefilter,
                        after=getattr(recognizer, "AFTER", None),
                        no_space=recognizer.supported_entities[0] in _NO_SPACE,
                    )
                )
        for spec in custom:
            recognizer = recs.CustomPatternRecognizer(spec)
            # Operator patterns run under RE2: linear time whatever the input.
            compiled = re2.compile(spec.regex)
            self._patterns.append(
                _Pattern(
                    spec.id, recognizer, spec.score, compiled.finditer, _width(spec.regex, 0), spec.regex
                )
            )
        specs = [
            PatternSpec(
                pat.prefilter or pat.expression,
                # Our own pre-scan forms are written without Unicode classes.
                ucp=pat.prefilter not in _PRESIDIO_PREFILTER.values(),
                caseless=bool(pat.flags & regex.IGNORECASE),
                dotall=bool(pat.flags & regex.DOTALL),
                multiline=bool(pat.flags & regex.MULTILINE),
            )
            for pat in self._patterns
        ]
        self._prefilter = Prefilter.cached(tuple(specs), prefilter=True)
        self.mode = "pattern" if ENGINE == "hyperscan" else "pattern-fullscan"
        self._cache: OrderedDict[tuple[str, float], list[Span]] = OrderedDict()

    def analyze(self, text: str, min_score: float = 0.0) -> list[Span]:
        """Spans scoring at least ``min_score`` (presidio's score_threshold)."""
        key = (text, min_score)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        out: list[Span] = []
        if text:
            candidates = self._prefilter.scan(text)
            for idx in self._prefilter.always:
                candidates[idx] = [len(text)]
            for idx, ends in candidates.items():
                pat = self._patterns[idx]
                if pat.phone:
                    out.extend(self._phones(text, ends, pat, min_score))
                    continue
                width = len(text) if idx in self._prefilter.always else pat.width
                seen: set[tuple[int, int]] = set()
                for lo, hi in windows(ends, width, text, after=pat.after, no_space=pat.no_space):
                    for m in pat.finditer(text, lo, hi):
                        span = m.span()
                        if span in seen or span[0] == span[1]:
                            continue
                        seen.add(span)
                        scored = self._score(text, span[0], span[1], pat)
                        if scored is not None:
                            out.append(scored)
            out = _remove_duplicates([s for s in out if s.score >= min_score])
        self._cache[key] = out
        if len(self._cache) > 4:  # reuse is within one request (hook after hook)
            self._cache.popitem(last=False)
        return out

    def hold_patterns(self, entities: Iterable[str] | None, min_score: float) -> list[HoldPattern]:
        """The expressions behind ``analyze(text, min_score)`` for these
        entities (None: all), for a stream guard (``ingress.hooks.holdback``).
        A phone number is held on its candidate expression (the
        ``phonenumbers`` matcher decides within it)."""
        wanted = None if entities is None else set(entities)
        out: list[HoldPattern] = []
        for pat in self._patterns:
            if wanted is not None and pat.entity not in wanted:
                continue
            recognizer = pat.recognizer
            validated = (
                isinstance(recognizer, PatternRecognizer)
                and recognizer.CONFIRMS
                and type(recognizer).validate_result is not PatternRecognizer.validate_result
            )
            out.append(
                HoldPattern(
                    pat.expression,
                    pat.flags,
                    score=pat.score,
                    min_score=min_score,
                    validated=validated,
                    context=tuple(recognizer.context or ()),
                )
            )
        return out

    def _score(self, text: str, start: int, end: int, pat: _Pattern) -> Span | None:
        # presidio's PatternRecognizer scoring: a validator's True -> 1.0,
        # False -> dropped; invalidate_result True -> dropped; then context.
        recognizer = pat.recognizer
        assert isinstance(recognizer, PatternRecognizer)
        matched = text[start:end]
        score = pat.score
        valid = recognizer.validate_result(matched)
        if valid is not None:
            if not valid:
                return None
            score = EntityRecognizer.MAX_SCORE
        invalid = recognizer.invalidate_result(matched)
        if invalid:
            return None
        if score < EntityRecognizer.MAX_SCORE:
            score = _context_score(text, start, score, recognizer.context or ())
        return Span(pat.entity, start, end, score, pat.entity)

    def _phones(self, text: str, ends: list[int], pat: _Pattern, min_score: float) -> list[Span]:
        recognizer = pat.recognizer
        assert isinstance(recognizer, PhoneRecognizer)
        context = recognizer.context or ()
        out: list[Span] = []
        seen: set[tuple[int, int]] = set()
        for lo, hi in windows(ends, pat.width, text, lookahead=32):
            for cand in pat.finditer(text, lo, hi):
                c_lo, c_hi = cand.span()
                # presidio scores a bare phone number 0.4 and one with a
                # context word before it 0.75; when the bare score cannot
                # pass the threshold, numbers without context are dropped
                # before phonenumbers (~1 ms per region) ever runs.
                if pat.score < min_score and _context_score(text, c_lo, pat.score, context) < min_score:
                    continue
                # phonenumbers has no ``pos``: slice from a word gap so the
                # matcher sees the same left context as in the whole text.
                while c_lo > 0 and not text[c_lo - 1].isspace() and c_lo > cand.start() - 8:
                    c_lo -= 1
                while c_hi < len(text) and not text[c_hi].isspace() and c_hi < cand.end() + 8:
                    c_hi += 1
                for r in recognizer.analyze(text[c_lo:c_hi], ["PHONE_NUMBER"], None):
                    span = (r.start + c_lo, r.end + c_lo)
                    if span in seen:
                        continue
                    seen.add(span)
                    score = _context_score(text, span[0], r.score, context)
                    out.append(Span("PHONE_NUMBER", span[0], span[1], score, "PHONE_NUMBER"))
        return out
