"""Wildcard patterns as policies write them: ``*``, ``?`` and ``${key}``.

One parser for every place a policy holds a pattern or a value template:
actions and resources (where a wildcard stays inside one ``:``-separated
part), ``StringLike`` values (where ``*`` matches anything) and the values of
the other string operators (where ``*`` and ``?`` are plain characters but
``${key}`` policy variables are still substituted).  ``${*}``, ``${?}`` and
``${$}`` stand for the literal characters, as in AWS IAM.

A substituted variable is always literal: a principal id that contains
``*`` does not become a wildcard.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

# Token kinds: a literal run, ``*``, ``?``, a variable.
LIT: Final = 0
STAR: Final = 1
ONE: Final = 2
VAR: Final = 3

Token = tuple[int, str]

_ESCAPES: Final = {"*": "*", "?": "?", "$": "$"}


@functools.lru_cache(maxsize=8192)
def _regex(source: str) -> re.Pattern[str]:
    return re.compile(source, re.DOTALL)


@functools.lru_cache(maxsize=8192)
def _parse(text: str, wildcards: bool, star_crosses_colon: bool, any_if_star: bool) -> Glob:
    return Glob._build(text, wildcards, star_crosses_colon, any_if_star)


@functools.lru_cache(maxsize=8192)
def _glob_regex(glob: Glob) -> re.Pattern[str]:
    return _regex(".*" if glob.any else glob._source(None))


@dataclass(frozen=True, slots=True)
class Glob:
    """A parsed pattern.  ``any`` is the bare ``*`` of an action or resource
    element, which matches everything (a resource name has ``:`` in it, which
    a part wildcard does not cross)."""

    tokens: tuple[Token, ...]
    star_crosses_colon: bool = False
    any: bool = False

    @staticmethod
    def parse(
        text: str,
        *,
        wildcards: bool = True,
        star_crosses_colon: bool = False,
        any_if_star: bool = False,
    ) -> Glob:
        """Raises ValueError for an unterminated or empty ``${...}``."""
        return _parse(text, wildcards, star_crosses_colon, any_if_star)

    @staticmethod
    def _build(text: str, wildcards: bool, star_crosses_colon: bool, any_if_star: bool) -> Glob:
        if any_if_star and text == "*":
            return Glob(((STAR, "*"),), star_crosses_colon=True, any=True)
        tokens: list[Token] = []
        literal: list[str] = []
        i = 0
        while i < len(text):
            ch = text[i]
            if ch == "$" and text.startswith("${", i):
                end = text.find("}", i + 2)
                if end < 0:
                    raise ValueError(f"{text!r}: '${{' without a closing '}}'")
                key = text[i + 2 : end]
                if not key:
                    raise ValueError(f"{text!r}: empty policy variable '${{}}'")
                i = end + 1
                if key in _ESCAPES:
                    literal.append(_ESCAPES[key])
                    continue
                if literal:
                    tokens.append((LIT, "".join(literal)))
                    literal = []
                tokens.append((VAR, key))
                continue
            if wildcards and ch in "*?":
                if literal:
                    tokens.append((LIT, "".join(literal)))
                    literal = []
                tokens.append((STAR, "*") if ch == "*" else (ONE, "?"))
            else:
                literal.append(ch)
            i += 1
        if literal:
            tokens.append((LIT, "".join(literal)))
        return Glob(tuple(tokens), star_crosses_colon=star_crosses_colon)

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(value for kind, value in self.tokens if kind == VAR)

    @property
    def has_wildcard(self) -> bool:
        return any(kind in (STAR, ONE) for kind, _ in self.tokens)

    def split_literal_colons(self) -> list[tuple[Token, ...]]:
        """The pattern cut at every literal ':' (not inside a variable)."""
        parts: list[list[Token]] = [[]]
        for kind, value in self.tokens:
            if kind != LIT:
                parts[-1].append((kind, value))
                continue
            pieces = value.split(":")
            for n, piece in enumerate(pieces):
                if n:
                    parts.append([])
                if piece:
                    parts[-1].append((LIT, piece))
        return [tuple(p) for p in parts]

    def _source(self, values: dict[str, str] | None) -> str:
        star = ".*" if self.star_crosses_colon else "[^:]*"
        one = "." if self.star_crosses_colon else "[^:]"
        out: list[str] = []
        for kind, value in self.tokens:
            if kind == LIT:
                out.append(re.escape(value))
            elif kind == STAR:
                out.append(star)
            elif kind == ONE:
                out.append(one)
            else:
                out.append(re.escape(values[value] if values is not None else ""))
        return "".join(out)

    def compiled(self) -> re.Pattern[str]:
        """The matcher of a pattern without variables."""
        return _glob_regex(self)

    def matches(self, value: str) -> bool:
        return self.compiled().fullmatch(value) is not None

    def matcher(self, values: dict[str, str]) -> re.Pattern[str]:
        """The matcher with each ``${key}`` replaced by ``values[key]``."""
        return _regex(self._source(values))

    def fill(self, lookup: Callable[[str], str | None]) -> Glob | None:
        """The pattern with each variable replaced by its value as literal
        text (wildcards kept), or None when a variable has no value."""
        tokens: list[Token] = []
        for kind, value in self.tokens:
            if kind == VAR:
                found = lookup(value)
                if found is None:
                    return None
                tokens.append((LIT, found))
            else:
                tokens.append((kind, value))
        return Glob(tuple(tokens), star_crosses_colon=self.star_crosses_colon, any=self.any)

    def substitute(self, lookup: Callable[[str], str | None]) -> str | None:
        """The text of a wildcard-free template with its variables filled in,
        or None when a variable has no value."""
        out: list[str] = []
        for kind, value in self.tokens:
            if kind == VAR:
                found = lookup(value)
                if found is None:
                    return None
                out.append(found)
            else:
                out.append(value)
        return "".join(out)
