"""Exact set reasoning over wildcard patterns, for the grant ceiling.

A ``Constraint`` is a set of names: those some pattern of it matches, or with
``negated`` those none does (a NotResource).  A conjunction of constraints is
their intersection.  Two questions are answered exactly, by walking the
product of the patterns' automata over a finite alphabet (each character
the patterns mention, plus one character standing for every other):

- ``uncovered(region, union)``: a name in every constraint of ``region`` that
  no member of ``union`` (each itself a conjunction) contains, or None;
- ``common(region)``: a name in every constraint of ``region``, or None.

The answer is a shortest witness, which makes refusals explainable
("admin:virtual-key.create on nrn:nexus:gateway:acme/x:x/x").  The walk is
bounded: past ``MAX_STATES`` product states ``TooComplex`` is raised and the
caller refuses (a sound check may say "cannot prove it", never "yes" unproven).
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from hub.iam.globs import LIT, STAR, VAR, Glob

MAX_STATES: Final = 50_000

# One item per character position: (kind, literal character, crosses ':').
_Item = tuple[int, str, bool]


class TooComplex(Exception):
    """The patterns are too many or too wild to decide within the bound."""


@dataclass(frozen=True, slots=True)
class Constraint:
    globs: tuple[Glob, ...]
    negated: bool = False
    words: frozenset[str] = frozenset()  # plain names, matched by one trie (the catalogue)


Conjunction = tuple[Constraint, ...]


def _items(glob: Glob) -> tuple[_Item, ...]:
    if glob.any:
        return ((STAR, "", True),)
    out: list[_Item] = []
    for kind, value in glob.tokens:
        if kind == LIT:
            out.extend((LIT, ch, False) for ch in value)
        elif kind == VAR:
            # an unresolved variable stands for any text inside one part
            out.append((STAR, "", glob.star_crosses_colon))
        else:
            out.append((kind, "", glob.star_crosses_colon))
    return tuple(out)


class _Machine:
    """One pattern's automaton: states are frozensets of positions."""

    __slots__ = ("_steps", "end", "items", "start")

    def __init__(self, glob: Glob) -> None:
        self.items = _items(glob)
        self.end = len(self.items)
        self._steps: dict[tuple[frozenset[int], str], frozenset[int]] = {}
        self.start = self._closure({0})

    def _closure(self, positions: set[int]) -> frozenset[int]:
        todo = list(positions)
        seen = set(positions)
        while todo:
            pos = todo.pop()
            if pos < self.end and self.items[pos][0] == STAR and pos + 1 not in seen:
                seen.add(pos + 1)
                todo.append(pos + 1)
        return frozenset(seen)

    def accepts(self, state: frozenset[int]) -> bool:
        return self.end in state

    def dead(self, state: frozenset[int]) -> bool:
        return not state

    def step(self, state: frozenset[int], ch: str) -> frozenset[int]:
        found = self._steps.get((state, ch))
        if found is not None:
            return found
        nxt: set[int] = set()
        for pos in state:
            if pos == self.end:
                continue
            kind, literal, crosses = self.items[pos]
            if kind == LIT:
                if ch == literal:
                    nxt.add(pos + 1)
            elif crosses or ch != ":":
                nxt.add(pos if kind == STAR else pos + 1)
        result = self._closure(nxt)
        self._steps[(state, ch)] = result
        return result


class _Words:
    """A set of plain names as one machine: the state is the text read so far
    while it is a prefix of some name, else None."""

    __slots__ = ("prefixes", "start", "words")

    def __init__(self, words: frozenset[str]) -> None:
        self.words = words
        self.prefixes = {w[:n] for w in words for n in range(len(w) + 1)}
        self.start: str | None = ""

    def step(self, state: str | None, ch: str) -> str | None:
        if state is None:
            return None
        nxt = state + ch
        return nxt if nxt in self.prefixes else None

    def accepts(self, state: str | None) -> bool:
        return state in self.words

    def dead(self, state: str | None) -> bool:
        return state is None


@functools.lru_cache(maxsize=64)
def _words(words: frozenset[str]) -> _Words:
    return _Words(words)


@functools.lru_cache(maxsize=4096)
def _machine(glob: Glob) -> _Machine:
    # shared across searches, so each machine's step table fills once
    return _Machine(glob)


_OTHER: Final = "\x00"  # stands for every character no pattern mentions


def _alphabet(constraints: Sequence[Constraint]) -> list[str]:
    chars = {":"}
    for constraint in constraints:
        for word in constraint.words:
            chars.update(word)
        for glob in constraint.globs:
            for kind, value in glob.tokens:
                if kind == LIT:
                    chars.update(value)
    # "any other character" first: shortest witnesses then read like names
    # (nrn:nexus:x:acme:x/x) rather than runs of punctuation
    return [_OTHER, *sorted(chars)]


def _display(chars: list[str], alphabet: list[str]) -> str:
    stand_in = next((c for c in "xyzqwkj0123456789" if c not in alphabet), "~")
    return "".join(stand_in if c == _OTHER else c for c in chars)


class _Layout:
    """Where each constraint's machines sit in the product state tuple."""

    def __init__(self, groups: Sequence[Conjunction]) -> None:
        self.machines: list[_Machine | _Words] = []
        self.groups: list[list[tuple[list[int], bool]]] = []
        for conj in groups:
            group = []
            for constraint in conj:
                slots = []
                for glob in constraint.globs:
                    slots.append(len(self.machines))
                    self.machines.append(_machine(glob))
                if constraint.words:
                    slots.append(len(self.machines))
                    self.machines.append(_words(constraint.words))
                group.append((slots, constraint.negated))
            self.groups.append(group)

    def accepts(self, group: int, state: tuple[Any, ...]) -> bool:
        machines = self.machines
        for slots, negated in self.groups[group]:
            hit = any(machines[s].accepts(state[s]) for s in slots)
            if hit == negated:
                return False
        return True

    def hopeless(self, group: int, state: tuple[Any, ...]) -> bool:
        """No extension of the text can satisfy the group (a positive
        constraint whose every machine is dead)."""
        machines = self.machines
        return any(
            not negated and all(machines[s].dead(state[s]) for s in slots)
            for slots, negated in self.groups[group]
        )


def _search(region: Conjunction, union: Sequence[Conjunction]) -> str | None:
    layout = _Layout([region, *union])
    alphabet = _alphabet([k for c in (region, *union) for k in c])
    start: tuple[Any, ...] = tuple(m.start for m in layout.machines)
    members = range(1, len(union) + 1)
    parents: dict[tuple[Any, ...], tuple[tuple[Any, ...], str] | None] = {start: None}
    queue = deque([start])
    while queue:
        state = queue.popleft()
        if layout.accepts(0, state) and not any(layout.accepts(m, state) for m in members):
            chars: list[str] = []
            back = parents[state]
            while back is not None:
                state, ch = back
                chars.append(ch)
                back = parents[state]
            return _display(chars[::-1], alphabet)
        for ch in alphabet:
            nxt = tuple(m.step(s, ch) for m, s in zip(layout.machines, state, strict=True))
            if nxt in parents or layout.hopeless(0, nxt):
                continue
            if len(parents) >= MAX_STATES:
                raise TooComplex
            parents[nxt] = (state, ch)
            queue.append(nxt)
    return None


def uncovered(region: Conjunction, union: Sequence[Conjunction]) -> str | None:
    """A shortest name inside ``region`` and outside every member of ``union``."""
    return _search(region, union)


def common(region: Conjunction) -> str | None:
    """A shortest name inside every constraint of ``region``."""
    return _search(region, [])


def resource_constraint(patterns: Sequence[str], negated: bool = False) -> Constraint:
    return Constraint(tuple(Glob.parse(p, any_if_star=True) for p in patterns), negated)


# Every resource is an NRN and every action is <service>:<name>: regions are
# cut to these shapes, so a NotResource's complement is not full of names that
# can never be requested (and witnesses look like names).
NRN_SHAPE: Final = resource_constraint(["nrn:nexus:?*:*:?*/?*"])
ACTION_SHAPE: Final = resource_constraint(["?*:?*"])


def scope_constraint(scope: str) -> Constraint | None:
    """The NRNs inside an org scope (None: the global scope, everything)."""
    if scope == "":
        return None
    return resource_constraint([f"nrn:nexus:*:{scope}:*", f"nrn:nexus:*:{scope}/*:*"])
