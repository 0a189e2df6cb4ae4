"""A translator from our policies and requests to Cedar, for the differential
test (tests/iam/test_differential.py).

It reads only the wire form of a policy (the JSON document) and the scope it
is attached at, never hub/iam's compiled statements, so the comparison is
between two implementations of the same rules.  Each statement becomes one
Cedar policy::

    permit|forbid (principal, action, resource) when { SCOPE && ACTION && RESOURCE && CONDITIONS };

The request's action and resource NRN travel as ``context.action`` and
``resource.nrn`` (Cedar entity ids cannot be matched with wildcards); our
wildcards become Cedar ``like`` patterns, our condition keys context record
attributes (``context["nexus:SourceIp"]``), tested with ``has`` first.

Only the fragment both engines can express is translated (the test generates
nothing else); anything outside it raises ``Untranslatable``.
"""

from __future__ import annotations

import json
import re
from typing import Any

Context = dict[str, Any]


class Untranslatable(ValueError):
    pass


_NUMERIC = {
    "NumericEquals": "==",
    "NumericNotEquals": "==",
    "NumericLessThan": "<",
    "NumericLessThanEquals": "<=",
    "NumericGreaterThan": ">",
    "NumericGreaterThanEquals": ">=",
}
_DATE = {k.replace("Numeric", "Date"): v for k, v in _NUMERIC.items()}
_NEGATED = {"StringNotEquals", "StringNotLike", "NumericNotEquals", "DateNotEquals", "NotIpAddress"}
_VARIABLE = re.compile(r"\$\{([^}]+)\}")


def lit(text: str) -> str:
    """A Cedar string literal."""
    return json.dumps(text)


def like_pattern(glob: str) -> str:
    """Our ``*`` glob as a Cedar ``like`` pattern (which has only ``*``)."""
    if "?" in glob or "${" in glob or '"' in glob or "\\" in glob:
        raise Untranslatable(f"Cedar like has no equivalent for {glob!r}")
    return '"' + glob + '"'


def cedar_datetime(iso: str) -> str:
    """ISO 8601 as Cedar's datetime() accepts it: Z or +hhmm."""
    return re.sub(r"([+-]\d\d):(\d\d)$", r"\1\2", iso)


def attr(key: str) -> str:
    return f"context[{lit(key)}]"


def has(key: str) -> str:
    return f"(context has {lit(key)})"


def _any_of(terms: list[str]) -> str:
    return "(" + " || ".join(terms) + ")" if terms else "false"


def _value(text: Any) -> tuple[str, str | None]:
    """A string condition value as a Cedar expression, and the variable it uses."""
    if not isinstance(text, str):
        raise Untranslatable(f"{text!r} is not a string")
    found = _VARIABLE.fullmatch(text)
    if found:
        return attr(found.group(1)), found.group(1)
    if "${" in text:
        raise Untranslatable("Cedar cannot concatenate strings: only whole-value variables translate")
    return lit(text), None


def _block(operator: str, key: str, values: list[Any]) -> str:
    """One (operator, key, values) test."""
    qualifier = None
    base = operator
    if ":" in operator:
        qualifier, base = operator.split(":", 1)
    if_exists = base.endswith("IfExists")
    if if_exists:
        base = base[: -len("IfExists")]
    k = attr(key)
    variables: list[str] = []

    if base == "Null":
        terms = []
        for v in values:
            absent = v is True or (isinstance(v, str) and v.lower() == "true")
            terms.append(f"!{has(key)}" if absent else has(key))
        return _any_of(terms)

    if qualifier is not None:
        if base not in ("StringEquals", "StringNotEquals"):
            raise Untranslatable(f"{operator}: Cedar has no quantifier over a set for {base}")
        exprs = []
        for v in values:
            expr, var = _value(v)
            exprs.append(expr)
            if var:
                variables.append(var)
        policy_set = "[" + ", ".join(exprs) + "]"
        if qualifier == "ForAnyValue":
            inner = (
                f"{k}.containsAny({policy_set})"
                if base == "StringEquals"
                else f"!{policy_set}.containsAll({k})"
            )
            test = f"({has(key)} && {inner})"
        elif qualifier == "ForAllValues":
            inner = (
                f"{policy_set}.containsAll({k})"
                if base == "StringEquals"
                else f"!{k}.containsAny({policy_set})"
            )
            test = f"(!{has(key)} || {inner})"
        else:
            raise Untranslatable(operator)
        if if_exists:
            test = f"(!{has(key)} || {test})"
        return _guard(test, variables)

    terms = []
    for v in values:
        if base in ("StringEquals", "StringNotEquals"):
            expr, var = _value(v)
            if var:
                variables.append(var)
            terms.append(f"{k} == {expr}")
        elif base in ("StringLike", "StringNotLike"):
            terms.append(f"{k} like {like_pattern(v)}")
        elif base in _NUMERIC:
            if not isinstance(v, int) or isinstance(v, bool):
                raise Untranslatable(f"{v!r}: Cedar compares whole numbers (Long) only")
            terms.append(f"{k} {_NUMERIC[base]} {v}")
        elif base in _DATE:
            terms.append(f"datetime({k}) {_DATE[base]} datetime({lit(cedar_datetime(v))})")
        elif base == "Bool":
            truth = v if isinstance(v, bool) else v.lower() == "true"
            terms.append(f"{k} == {'true' if truth else 'false'}")
        elif base in ("IpAddress", "NotIpAddress"):
            terms.append(f"ip({k}).isInRange(ip({lit(v)}))")
        else:
            raise Untranslatable(operator)
    positive = f"({has(key)} && {_any_of(terms)})"
    test = f"!{positive}" if base in _NEGATED else positive
    if if_exists:
        test = f"(!{has(key)} || {test})"
    return _guard(test, variables)


def _guard(test: str, variables: list[str]) -> str:
    # our rule: a condition whose value uses an absent variable is false
    for var in dict.fromkeys(variables):
        test = f"({has(var)} && {test})"
    return test


def _items(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _matches(subject: str, patterns: list[str]) -> str:
    return _any_of([f"{subject} like {like_pattern(p)}" for p in patterns])


def statement(stmt: dict[str, Any], scope: str) -> str:
    parts: list[str] = []
    if scope:
        parts.append(
            _any_of(
                [f"resource.nrn like {like_pattern(f'nrn:nexus:*:{s}:*')}" for s in (scope, scope + "/*")]
            )
        )
    if "Action" in stmt:
        parts.append(_matches("context.action", _items(stmt["Action"])))
    else:
        parts.append("!" + _matches("context.action", _items(stmt["NotAction"])))
    if "Resource" in stmt:
        parts.append(_matches("resource.nrn", _items(stmt["Resource"])))
    else:
        parts.append("!" + _matches("resource.nrn", _items(stmt["NotResource"])))
    for operator, by_key in (stmt.get("Condition") or {}).items():
        for key, raw in by_key.items():
            parts.append(_block(operator, key, raw if isinstance(raw, list) else [raw]))
    effect = "permit" if stmt["Effect"] == "Allow" else "forbid"
    return f"{effect} (principal, action, resource) when {{ {' && '.join(parts)} }};"


def policy_set(attached: list[tuple[dict[str, Any], str]]) -> tuple[str, list[tuple[int, int]]]:
    """Cedar policy text for (document, scope) pairs, and which (policy index,
    statement index) each Cedar policy (``policy0``, ``policy1``...) came from."""
    texts: list[str] = []
    origin: list[tuple[int, int]] = []
    for p, (document, scope) in enumerate(attached):
        statements = document["Statement"]
        for s, stmt in enumerate(statements if isinstance(statements, list) else [statements]):
            texts.append(statement(stmt, scope))
            origin.append((p, s))
    return "\n".join(texts), origin


def _nrn_parts(value: str) -> tuple[str, str, str]:
    # nrn:nexus:<service>:<org>:<type>/<id>
    _nrn, _nexus, _service, org, last = value.split(":")
    rtype, rid = last.split("/", 1)
    return org, rtype, rid


def request(
    principal: str, action: str, resource: str, context: Context
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The Cedar request and entities for one of ours.  The keys our evaluator
    derives from the NRNs are added here the same way (when absent)."""
    cedar_context: dict[str, Any] = {}
    for key, value in context.items():
        if key == "nexus:CurrentTime":
            value = cedar_datetime(value)
        cedar_context[key] = value
    p_org, p_type, p_id = _nrn_parts(principal)
    r_org, r_type, r_id = _nrn_parts(resource)
    derived = {
        "nexus:PrincipalNrn": principal,
        "nexus:PrincipalOrgPath": p_org,
        "nexus:PrincipalType": p_type,
        "nexus:PrincipalId": p_id,
        "nexus:ResourceNrn": resource,
        "nexus:ResourceOrgPath": r_org,
        "nexus:ResourceType": r_type,
        "nexus:ResourceId": r_id,
    }
    for key, value in derived.items():
        cedar_context.setdefault(key, value)
    cedar_context["action"] = action
    entities = [
        {"uid": {"type": "User", "id": principal}, "attrs": {}, "parents": []},
        {"uid": {"type": "Resource", "id": resource}, "attrs": {"nrn": resource}, "parents": []},
    ]
    cedar_request = {
        "principal": f"User::{lit(principal)}",
        "action": 'Action::"admin"',
        "resource": f"Resource::{lit(resource)}",
        "context": cedar_context,
    }
    return cedar_request, entities
