"""Interception domains: which hosts are bumped and what happens to each
path on them.  Hosts not listed are spliced byte for byte.

Matching: every entry whose host pattern matches (exact, glob, prefix or
RE2 regex) is a candidate; the lowest ``priority`` wins, ties go to the
entry written first.  On a bumped host, the longest matching path prefix
decides the action (process / passthrough / block); no match: the entry's
own action.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

import re2

from streams.config_proxy import InterceptDomain


@dataclass(frozen=True, slots=True)
class PathDecision:
    action: str  # process | passthrough | block
    prefix: str  # the rule that decided ("" = the domain's default)


class _Compiled:
    __slots__ = ("domain", "order", "regex")

    def __init__(self, domain: InterceptDomain, order: int) -> None:
        self.domain = domain
        self.order = order
        self.regex: Any = re2.compile("(?i)" + domain.host) if domain.match == "regex" else None

    def matches(self, host: str) -> bool:
        d = self.domain
        if d.match == "exact":
            return host == d.host.lower()
        if d.match == "glob":
            return fnmatch.fnmatchcase(host, d.host.lower())
        if d.match == "prefix":
            return host.startswith(d.host.lower())
        return self.regex.fullmatch(host) is not None


class InterceptionTable:
    def __init__(self, domains: tuple[InterceptDomain, ...]) -> None:
        compiled = [_Compiled(d, i) for i, d in enumerate(domains)]
        compiled.sort(key=lambda c: (c.domain.priority, c.order))
        self._entries = compiled
        self._cache: dict[str, InterceptDomain | None] = {}

    def lookup(self, host: str) -> InterceptDomain | None:
        """The entry that decides ``host``, or None (splice)."""
        h = host.lower().rstrip(".")
        if h in self._cache:
            return self._cache[h]
        found = next((c.domain for c in self._entries if c.matches(h)), None)
        if len(self._cache) < 65_536:
            self._cache[h] = found
        return found

    @staticmethod
    def path_action(domain: InterceptDomain, path: str) -> PathDecision:
        best: tuple[int, str, str] | None = None
        for rule in domain.paths:
            if path.startswith(rule.prefix) and (best is None or len(rule.prefix) > best[0]):
                best = (len(rule.prefix), rule.prefix, rule.action)
        if best is None:
            return PathDecision(domain.action, "")
        return PathDecision(best[2], best[1])
