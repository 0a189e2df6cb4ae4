"""Mongo-style predicates over a request's routing context.

``{"model": {"$regex": "^gpt-"}, "headers.x-tier": {"$in": ["gold"]}}``:
fields are dotted paths into the context (``model``, ``endpoint``,
``stream``, ``headers.<lower-case name>``, ``key.id|org|project|user``,
``metadata.<name>``); a literal means equality.  Regexes run under RE2, so
no pattern can take exponential time on a crafted header.  A missing field
fails every test but ``$ne``, ``$nin`` and ``$exists: false``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import re2

_MISSING = object()


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> Any:
    return re2.compile(pattern)


def lookup(ctx: Mapping[str, Any], path: str) -> Any:
    value: Any = ctx
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _ordered(a: Any, b: Any) -> bool:
    # Numbers compare with numbers, strings with strings; mixed types never match.
    num = (int, float)
    return (isinstance(a, num) and isinstance(b, num) and not isinstance(a, bool)) or (
        isinstance(a, str) and isinstance(b, str)
    )


def _test(value: Any, test: Any) -> bool:
    if not isinstance(test, dict):
        return value is not _MISSING and value == test
    for op, arg in test.items():
        if op == "$eq":
            ok = value is not _MISSING and value == arg
        elif op == "$ne":
            ok = value is _MISSING or value != arg
        elif op == "$in":
            ok = value is not _MISSING and value in arg
        elif op == "$nin":
            ok = value is _MISSING or value not in arg
        elif op == "$exists":
            ok = (value is not _MISSING) == bool(arg)
        elif op == "$regex":
            ok = isinstance(value, str) and _compiled(arg).search(value) is not None
        elif op == "$not":
            ok = not _test(value, arg)
        elif op in ("$gt", "$gte", "$lt", "$lte"):
            if value is _MISSING or not _ordered(value, arg):
                ok = False
            elif op == "$gt":
                ok = value > arg
            elif op == "$gte":
                ok = value >= arg
            elif op == "$lt":
                ok = value < arg
            else:
                ok = value <= arg
        else:  # validated at load time; an unknown operator never matches
            ok = False
        if not ok:
            return False
    return True


def matches(expr: Mapping[str, Any], ctx: Mapping[str, Any]) -> bool:
    for key, arg in expr.items():
        if key == "$and":
            ok = all(matches(sub, ctx) for sub in arg)
        elif key == "$or":
            ok = any(matches(sub, ctx) for sub in arg)
        elif key == "$not":
            ok = not matches(arg, ctx)
        else:
            ok = _test(lookup(ctx, key), arg)
        if not ok:
            return False
    return True
