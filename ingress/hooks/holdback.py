"""What a stream guard must hold back: only text that could still become a
finding.

A response hook that reads text finds matches of known patterns (presidio's
recognizers, rule-pack and keyword expressions).  Text can leave the
gateway as soon as no match of any of them could still cover it: a word
like "Hello" followed by a space can never become part of an AWS key or an
e-mail address, while "sk-ab" at the end of what has arrived could become
an OpenAI key.  The oracle answers, for the text received so far, where the
first such possible match begins (everything before it may go) and whether
a complete match lies in the part that would go (then the real hooks
evaluate it first, and redact or block).

It is an over-approximation of the hooks, never an under-approximation:
each pattern is searched with the ``regex`` module's partial matching,
which reports a match that reaches the end of the text and could still be
completed by what follows (a lookahead at the end counts as unknown); a
complete match that ends where the text ends is held too, since a greedy
run may still grow.  A
weak pattern that can only pass the hook's score threshold with a context
word before it (presidio's context boost) holds text only when such a word
is there.  Anything it cannot reason about — a webhook, NER, a pattern the
``regex`` module cannot compile, a search that runs past its time budget —
makes the guard fall back to evaluating fixed windows (``StreamGuard``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import regex

# presidio's LemmaContextAwareEnhancer, as the recognizer engine applies it.
_CONTEXT_FACTOR = 0.35
_MIN_SCORE_WITH_CONTEXT = 0.4
_CONTEXT_WORDS_BEFORE = 5
_WORD = re.compile(r"\w+")
# One search of one pattern over a stream's unreleased text: far more than
# a sane pattern needs (microseconds); a pathological one on crafted text
# gives up here and the stream falls back to window evaluation.
_SEARCH_TIMEOUT_S = 0.005


@dataclass(frozen=True, slots=True)
class HoldPattern:
    """One expression a response hook may match.  ``score`` and
    ``min_score`` decide whether a bare match is a finding; ``validated``
    says a checksum can raise it to 1.0 (so any match might be one);
    ``context`` are the words whose presence before a match lifts its
    score (presidio's context)."""

    expression: str
    flags: int = 0  # regex-module flags
    score: float = 1.0
    min_score: float = 0.0
    validated: bool = False
    context: tuple[str, ...] = ()


class Unpredictable(Exception):
    """The oracle cannot answer for this text (a search timed out)."""


@dataclass(frozen=True, slots=True)
class Hold:
    """The oracle's answer for ``text`` from ``start``: text before
    ``at`` may be released once the hooks approved it; ``candidate`` says a
    complete match begins before ``at`` (evaluate before releasing)."""

    at: int
    candidate: bool


class _Compiled:
    __slots__ = ("context", "min_score", "pattern", "score")

    def __init__(self, p: HoldPattern, compiled: regex.Pattern[str], context: frozenset[str]) -> None:
        self.pattern = compiled
        self.score = p.score
        self.min_score = p.min_score
        self.context = context

    def counts_at(self, text: str, start: int) -> bool:
        """Whether a match at ``start`` can be a finding: always for an
        ungated pattern; for a gated one, when a context word is among the
        five words before it (what the recognizer engine checks)."""
        if not self.context:
            return True
        words = _WORD.findall(text[max(0, start - 200) : start].lower())[-_CONTEXT_WORDS_BEFORE:]
        if not self.context.intersection(words):
            return False
        boosted = min(1.0, max(self.score + _CONTEXT_FACTOR, _MIN_SCORE_WITH_CONTEXT))
        return boosted >= self.min_score


def _gate(p: HoldPattern) -> frozenset[str] | None:
    """The context words a match needs to count (empty: none needed), or
    None when a match of this pattern can never be a finding."""
    if p.validated or p.score >= p.min_score:
        return frozenset()
    words = frozenset(w.strip().lower() for w in p.context if w.strip())
    if not words:
        return None
    boosted = min(1.0, max(p.score + _CONTEXT_FACTOR, _MIN_SCORE_WITH_CONTEXT))
    return words if boosted >= p.min_score else None


def _scoped(expression: str, flags: int) -> str | None:
    """The expression as one alternative of a combined pattern: its flags
    scoped to it (a global inline flag such as a leading ``(?i)`` becomes
    ``(?i:...)``); None when it cannot be rewritten safely."""
    inline = ""
    m = re.match(r"^\(\?([aiLmsux]+)\)", expression)
    if m:
        inline, expression = m.group(1), expression[m.end() :]
    if flags & regex.IGNORECASE:
        inline += "i"
    if flags & regex.DOTALL:
        inline += "s"
    if flags & regex.MULTILINE:
        inline += "m"
    inline = "".join(sorted(set(inline) & set("ims")))
    return f"(?{inline}:{expression})" if inline else f"(?:{expression})"


class HoldOracle:
    """Built once per set of response hooks (cached by the engine) from
    their ``HoldPattern``s.

    Ungated patterns are also compiled into one alternation: on ordinary
    text one search of it finds nothing but the empty match at the end,
    and the text is released without a search per pattern.  Gated patterns
    are searched only when one of their context words occurs in the text."""

    def __init__(self, patterns: Sequence[HoldPattern]) -> None:
        self._ungated: list[_Compiled] = []
        self._gated: list[_Compiled] = []
        alternatives: list[str] = []
        seen: set[tuple[str, int]] = set()
        for p in patterns:
            if (p.expression, p.flags) in seen and not p.context:
                continue
            context = _gate(p)
            if context is None:
                continue  # can never pass its threshold: nothing to hold for
            seen.add((p.expression, p.flags))
            # May raise regex.error: the engine then falls back to windows.
            compiled = _Compiled(p, regex.compile(p.expression, flags=p.flags), context)
            if context:
                self._gated.append(compiled)
            else:
                self._ungated.append(compiled)
                scoped = _scoped(p.expression, p.flags)
                if scoped is not None:
                    alternatives.append(scoped)
        self._any: regex.Pattern[str] | None = None
        if alternatives and len(alternatives) == len(self._ungated):
            try:
                self._any = regex.compile("|".join(alternatives))
            except regex.error:
                self._any = None
        words = sorted({w for c in self._gated for w in c.context})
        self._context_words = (
            regex.compile(r"\b(?:" + "|".join(regex.escape(w) for w in words) + r")\b", regex.IGNORECASE)
            if words
            else None
        )

    @property
    def empty(self) -> bool:
        return not self._ungated and not self._gated

    def scan(self, text: str, start: int) -> Hold:
        """Where text from ``start`` must start being held, and whether a
        complete match lies before that.  ``text[:start]`` is context that
        was already released (lookbehinds and context words see it)."""
        n = len(text)
        if start >= n:
            return Hold(n, False)
        todo = self._ungated
        if self._any is not None:
            m = self._search(self._any, text, start)
            if m is None or m.start() == n:
                todo = []  # ordinary text: no pattern starts anywhere here
        gated: list[_Compiled] = []
        if self._context_words is not None and self._context_words.search(text, max(0, start - 200)):
            gated = self._gated
        hold = n
        fulls: list[tuple[int, int]] = []
        for c in (*todo, *gated):
            pos = start
            while pos < n:
                m = self._search(c.pattern, text, pos)
                if m is None:
                    break
                s, e = m.span()
                if s >= n:
                    break  # only the empty match at the end: anything may follow
                # A match that reaches the end of the text may still grow
                # (a greedy run the next delta extends): partial or not, it
                # is held from its start.
                if m.partial or e == n:
                    if c.counts_at(text, s):
                        hold = min(hold, s)
                        break
                elif e > s and c.counts_at(text, s):
                    fulls.append((s, e))
                pos = s + 1  # overlapping: a later start may still be partial
        # A complete match that straddles the hold point would be cut in two
        # by a release there: hold from its start instead.
        moved = True
        while moved:
            moved = False
            for s, e in fulls:
                if s < hold < e:
                    hold, moved = s, True
        return Hold(hold, any(start <= s < hold or (s < start < e) for s, e in fulls))

    @staticmethod
    def _search(pattern: regex.Pattern[str], text: str, pos: int) -> regex.Match[str] | None:
        try:
            return pattern.search(text, pos, partial=True, timeout=_SEARCH_TIMEOUT_S)
        except TimeoutError:
            raise Unpredictable from None
