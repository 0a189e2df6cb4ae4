"""Nexus Resource Names: ``nrn:nexus:<service>:<org-path>:<type>/<id>``.

The org path is the org tree path, root first, ``/``-separated (``acme/eu``);
it is empty for global resources (``nrn:nexus:gateway::provider/openai``).
Names never contain ``:`` inside a part, so a pattern and a name always
have exactly five ``:``-separated parts, and a wildcard in a pattern never
crosses a ``:`` (``acme/*`` covers every descendant of ``acme``, because
``/`` is an ordinary character to it).
"""

from __future__ import annotations

import functools
import re
from typing import Final

import msgspec

from hub.iam.globs import Glob

PREFIX: Final = "nrn:nexus:"
_SHAPE: Final = "nrn:nexus:<service>:<org-path>:<type>/<id>"

_SERVICE = re.compile(r"[a-z][a-z0-9-]{0,31}")
_ORG_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_TYPE = re.compile(r"[a-z][a-z0-9-]{0,31}")
# ids may be e-mail-like or carry a key prefix (vk_...); never a wildcard,
# a variable, a separator or whitespace
_ID = re.compile(r"[A-Za-z0-9_.@+=,-]{1,128}")


class NrnError(ValueError):
    """A malformed NRN; the message says which part is wrong."""


class Nrn(msgspec.Struct, frozen=True):
    service: str
    org_path: str
    type: str
    id: str

    def __str__(self) -> str:
        return f"{PREFIX}{self.service}:{self.org_path}:{self.type}/{self.id}"


def valid_org_path(org_path: str) -> bool:
    return org_path == "" or all(_ORG_ID.fullmatch(part) for part in org_path.split("/"))


def nrn(service: str, org_path: str, type: str, id: str) -> str:
    """Format an NRN; raises NrnError when a part is not valid."""
    return str(_checked(service, org_path, type, id))


def _checked(service: str, org_path: str, type_: str, id_: str) -> Nrn:
    if not _SERVICE.fullmatch(service):
        raise NrnError(f"service {service!r} must be lower-case letters, digits and '-'")
    if not valid_org_path(org_path):
        raise NrnError(f"org path {org_path!r} must be '/'-separated ids of letters, digits, '_', '.', '-'")
    if not _TYPE.fullmatch(type_):
        raise NrnError(f"resource type {type_!r} must be lower-case letters, digits and '-'")
    if not _ID.fullmatch(id_):
        raise NrnError(f"resource id {id_!r} must be 1-128 letters, digits or _.@+=,-")
    return Nrn(service, org_path, type_, id_)


@functools.lru_cache(maxsize=4096)
def parse_nrn(value: str) -> Nrn:
    """Parse a concrete NRN (no wildcards); raises NrnError naming the bad part."""
    if not value.startswith(PREFIX):
        raise NrnError(f"{value!r} is not an NRN: it must start with {PREFIX!r}")
    parts = value[len(PREFIX) :].split(":")
    if len(parts) != 3:
        raise NrnError(f"{value!r} is not an NRN: expected nrn:nexus:<service>:<org-path>:<type>/<id>")
    service, org_path, rest = parts
    type_, slash, id_ = rest.partition("/")
    if not slash:
        raise NrnError(f"{value!r} is not an NRN: the last part must be <type>/<id>")
    return _checked(service, org_path, type_, id_)


def org_of(value: str) -> str:
    """The org path of a concrete NRN (cheap: no validation beyond the shape)."""
    parts = value.split(":", 4)
    if len(parts) != 5 or parts[0] != "nrn" or parts[1] != "nexus":
        raise NrnError(f"{value!r} is not an NRN: expected nrn:nexus:<service>:<org-path>:<type>/<id>")
    return parts[3]


def in_scope(org_path: str, scope: str) -> bool:
    """Whether ``org_path`` is ``scope`` or below it ("" is the global scope)."""
    return scope == "" or org_path == scope or org_path.startswith(scope + "/")


# Pattern parts: the characters of names plus the wildcards; variables are
# checked by the glob parser.
_PATTERN_PART = re.compile(r"[A-Za-z0-9_.@+=,/*?${}:-]*")


def check_pattern(pattern: str) -> str | None:
    """Why ``pattern`` is not a valid resource pattern, or None when it is.

    A pattern is ``*`` (every resource) or five ``:``-separated parts like a
    name, each of which may hold ``*``, ``?`` and ``${context-key}``."""
    if pattern == "*":
        return None
    try:
        glob = Glob.parse(pattern)
    except ValueError as exc:
        return str(exc)
    parts = glob.split_literal_colons()
    if len(parts) != 5:
        return f"{pattern!r} must be '*' or {_SHAPE} (five ':'-separated parts)"
    if not _PATTERN_PART.fullmatch(pattern):
        return f"{pattern!r} holds a character that no NRN has"
    head = pattern.split(":", 2)
    if not (Glob.parse(head[0]).matches("nrn") and Glob.parse(head[1]).matches("nexus")):
        return f"{pattern!r} can never match: NRNs start with {PREFIX!r}"
    return None


@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str) -> Glob:
    problem = check_pattern(pattern)
    if problem:
        raise NrnError(problem)
    glob = Glob.parse(pattern, any_if_star=True)
    if glob.variables:
        raise NrnError(f"{pattern!r}: policy variables only have a value inside a policy")
    return glob


def nrn_matches(pattern: str, value: str) -> bool:
    """Whether the resource pattern (``*``, ``?`` wildcards) matches the NRN."""
    return _compiled(pattern).matches(value)
