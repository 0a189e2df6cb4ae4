"""One multi-pattern pass over the text that says which patterns can match
and where candidate matches end.

Hyperscan (the library inside the ``hyperscan`` wheel) scans every pattern
of a set in one pass; the precise engine (presidio's recognizer regex, or
RE2 for operator patterns) then runs only where a candidate was reported.
Patterns Hyperscan cannot compile are marked ``always`` and the precise
engine runs over the whole text for them: slower, never wrong.  Without
Hyperscan every pattern is ``always`` (``ENGINE`` says which is in use).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

_hs: Any
try:
    import hyperscan as _hs
except ImportError:  # pragma: no cover - the wheel is a dependency
    _hs = None

ENGINE = "hyperscan" if _hs is not None else "regex"


@dataclass(frozen=True, slots=True)
class PatternSpec:
    expression: str
    caseless: bool = False
    dotall: bool = False
    multiline: bool = False
    # Unicode classes (\w, \d) as Python's ``regex`` has them; RE2's are
    # ASCII, and Hyperscan refuses \b in UCP mode, so RE2 sets leave it off.
    ucp: bool = True


class Prefilter:
    """``scan(text)`` -> {pattern index: sorted candidate end offsets (chars)}.

    ``prefilter=True`` compiles in Hyperscan's prefilter mode, which accepts
    lookarounds and backreferences by over-approximating them (a superset of
    the true matches), for patterns confirmed afterwards.  ``ends=False``
    reports only which patterns matched (one callback per pattern)."""

    def __init__(self, patterns: Sequence[PatternSpec], *, prefilter: bool, ends: bool = True) -> None:
        self.size = len(patterns)
        self.always: frozenset[int] = frozenset()
        self._db = None
        self._ends = ends
        if _hs is None or not patterns:
            self.always = frozenset(range(len(patterns)))
            return
        base = _hs.HS_FLAG_UTF8
        if prefilter:
            base |= _hs.HS_FLAG_PREFILTER
        if not ends:
            base |= _hs.HS_FLAG_SINGLEMATCH
        exprs: list[bytes] = []
        ids: list[int] = []
        flags: list[int] = []
        always: set[int] = set()
        for i, p in enumerate(patterns):
            f = base
            if p.ucp:
                f |= _hs.HS_FLAG_UCP
            if p.caseless:
                f |= _hs.HS_FLAG_CASELESS
            if p.dotall:
                f |= _hs.HS_FLAG_DOTALL
            if p.multiline:
                f |= _hs.HS_FLAG_MULTILINE
            # Compile alone first so one unsupported construct only costs
            # that pattern its pre-scan, not the whole set.
            try:
                probe = _hs.Database()
                probe.compile(expressions=[p.expression.encode()], ids=[i], elements=1, flags=[f])
            except Exception as exc:
                log.debug("pattern %d falls back to full scans: %s", i, exc)
                always.add(i)
                continue
            exprs.append(p.expression.encode())
            ids.append(i)
            flags.append(f)
        self.always = frozenset(always)
        if exprs:
            db = _hs.Database()
            db.compile(expressions=exprs, ids=ids, elements=len(exprs), flags=flags)
            self._db = db

    @classmethod
    def cached(cls, patterns: tuple[PatternSpec, ...], *, prefilter: bool, ends: bool = True) -> Prefilter:
        """Compiling takes up to a second; a config reload or a second engine
        with the same patterns reuses the database."""
        return _cached(patterns, prefilter, ends)

    def scan(self, text: str) -> dict[int, list[int]]:
        found: dict[int, list[int]] = {}
        if self._db is None:
            return found
        data = text.encode("utf-8", "surrogatepass")

        def on_match(pid: int, _from: int, to: int, _flags: int, _ctx: object) -> bool | None:
            found.setdefault(pid, []).append(to)
            return None

        self._db.scan(data, match_event_handler=on_match)
        if found and len(data) != len(text):
            # Hyperscan reports byte offsets; map them to characters.
            for pid, ends in found.items():
                found[pid] = [len(data[:e].decode("utf-8", "ignore")) for e in ends]
        for ends in found.values():
            ends.sort()
        return found


@functools.lru_cache(maxsize=64)
def _cached(patterns: tuple[PatternSpec, ...], prefilter: bool, ends: bool) -> Prefilter:
    return Prefilter(patterns, prefilter=prefilter, ends=ends)


def windows(
    ends: Sequence[int],
    width: int,
    text: str,
    *,
    lookahead: int = 256,
    after: int | None = None,
    no_space: bool = False,
) -> list[tuple[int, int]]:
    """Merge candidate ends into [pos, endpos) windows for the precise regex:
    a match ending at ``e`` starts at or after ``e - width``.  The window
    is stretched right to the next whitespace so a lookahead or ``\\b`` at
    its edge sees what it would see in the whole text (a lookbehind is
    handled by running the regex with ``pos`` on the whole string)."""
    n = len(text)
    out: list[tuple[int, int]] = []
    for e in ends:
        lo = max(0, e - width)
        if no_space:
            # A match that cannot contain whitespace starts after the last
            # whitespace before its end: a much shorter window for patterns
            # with an unbounded width (an email's local part).
            ws = max(text.rfind(" ", lo, e), text.rfind("\n", lo, e), text.rfind("\t", lo, e))
            if ws >= 0:
                lo = ws + 1
        if after is not None:
            hi = min(n, e + after)
        else:
            hi = e
            limit = min(n, e + lookahead)
            while hi < limit and not text[hi].isspace():
                hi += 1
            if hi == limit and hi < n:
                hi = n  # no whitespace nearby: give the regex the rest of the text
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out
