"""Condition operators and their evaluation, with AWS IAM's semantics.

A ``Condition`` block is ``{operator: {key: value | [values]}}``.  Operators
AND together, keys inside one operator AND together, and the values of one
key OR together.  For a negated operator (``StringNotEquals``,
``NotIpAddress``...) the values are NOR'd: it holds when the context value
matches none of them, and it also holds when the key is absent (it is the
exact negation of its positive operator).  ``...IfExists`` holds when the key
is absent.  ``Null: true`` holds when the key is absent, ``Null: false``
when it is present.

Multi-valued keys take a set qualifier: ``ForAnyValue:Op`` holds when some
context value satisfies ``Op`` (false when the key is absent or empty);
``ForAllValues:Op`` holds when every context value does (true when the key is
absent or empty, as in AWS).

A context value that does not convert to the key's type (an IP key holding
``"unknown"``) satisfies no positive comparison.  A condition value that
uses a ``${key}`` policy variable whose key is absent makes that condition
false, whether the operator is negated or not (a missing principal id must
never widen an Allow).
"""

from __future__ import annotations

import functools
import ipaddress
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from hub.iam.context_keys import (
    ContextKey,
    KeyType,
    PolicyScalar,
    context_bool,
    context_instant,
    context_ip,
    context_number,
    context_string,
    lookup_key,
    policy_bool,
    policy_instant,
    policy_network,
    policy_number,
    policy_string,
)
from hub.iam.globs import Glob

# base operator -> (key type, relation, negated)
BASE_OPERATORS: Final[dict[str, tuple[KeyType | None, str, bool]]] = {
    "StringEquals": ("string", "eq", False),
    "StringNotEquals": ("string", "eq", True),
    "StringEqualsIgnoreCase": ("string", "ieq", False),
    "StringNotEqualsIgnoreCase": ("string", "ieq", True),
    "StringLike": ("string", "like", False),
    "StringNotLike": ("string", "like", True),
    "NumericEquals": ("numeric", "eq", False),
    "NumericNotEquals": ("numeric", "eq", True),
    "NumericLessThan": ("numeric", "lt", False),
    "NumericLessThanEquals": ("numeric", "le", False),
    "NumericGreaterThan": ("numeric", "gt", False),
    "NumericGreaterThanEquals": ("numeric", "ge", False),
    "DateEquals": ("date", "eq", False),
    "DateNotEquals": ("date", "eq", True),
    "DateLessThan": ("date", "lt", False),
    "DateLessThanEquals": ("date", "le", False),
    "DateGreaterThan": ("date", "gt", False),
    "DateGreaterThanEquals": ("date", "ge", False),
    "Bool": ("bool", "eq", False),
    "IpAddress": ("ip", "in", False),
    "NotIpAddress": ("ip", "in", True),
    "Null": (None, "null", False),
}

QUALIFIERS: Final = {"ForAnyValue": "any", "ForAllValues": "all"}

_ORDER: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "eq": operator.eq,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}


_POLICY_VALUE: Final[dict[str, Callable[[PolicyScalar], object]]] = {
    "numeric": policy_number,
    "date": policy_instant,
    "bool": policy_bool,
    "ip": policy_network,
}


@dataclass(frozen=True, slots=True)
class Operator:
    name: str  # as written: ForAnyValue:StringEqualsIfExists
    base: str  # StringEquals
    key_type: KeyType | None  # None: Null takes any key
    relation: str  # eq ieq like lt le gt ge in null
    negated: bool
    if_exists: bool
    qualifier: str | None  # None, "any", "all"


def parse_operator(name: str) -> Operator:
    """Raises ValueError with a message for an unknown operator."""
    qualifier = None
    base = name
    if ":" in name:
        prefix, _, base = name.partition(":")
        if prefix not in QUALIFIERS:
            raise ValueError(f"unknown set qualifier {prefix!r} (ForAnyValue or ForAllValues)")
        qualifier = QUALIFIERS[prefix]
    if_exists = base.endswith("IfExists") and base != "IfExists"
    if if_exists:
        base = base[: -len("IfExists")]
    if base not in BASE_OPERATORS:
        raise ValueError(f"unknown condition operator {name!r}")
    key_type, relation, negated = BASE_OPERATORS[base]
    if relation == "null" and (if_exists or qualifier):
        raise ValueError("Null takes neither IfExists nor a set qualifier")
    return Operator(name, base, key_type, relation, negated, if_exists, qualifier)


class ContextError(ValueError):
    """A request context that cannot be evaluated; ``key`` names the culprit."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


class Context:
    """The request context, normalised once per evaluation: lower-case keys,
    every value a tuple (a scalar is a one-value set), conversions cached."""

    __slots__ = ("_converted", "raw")

    def __init__(self, values: Mapping[str, object]) -> None:
        """Raises ContextError for several values under a single-valued key."""
        raw: dict[str, tuple[object, ...]] = {}
        for key, value in values.items():
            if value is None:
                continue  # an explicit None means "absent", as JSON null does
            if isinstance(value, list | tuple | set | frozenset):
                many = tuple(value)
                known = lookup_key(key)
                # one value, or the operators' "the value" would mean
                # different values in different conditions
                if known is not None and not known.multi and len(many) != 1:
                    raise ContextError(key, f"{known.name} takes one value, not {len(many)}")
                raw[key.lower()] = many
            else:
                raw[key.lower()] = (value,)
        self.raw = raw
        self._converted: dict[str, dict[str, tuple[object, ...]]] = {}

    def __contains__(self, key: str) -> bool:
        return key in self.raw

    def setdefault(self, key: str, value: object) -> None:
        if key not in self.raw:
            self.raw[key] = (value,)

    def typed(self, key: str, key_type: str) -> tuple[object, ...] | None:
        """The key's values converted to ``key_type`` (those that do not
        convert dropped), or None when the key is absent."""
        by_key = self._converted.get(key_type)
        if by_key is None:
            by_key = self._converted[key_type] = {}
        else:
            found = by_key.get(key)
            if found is not None:
                return found
        raw = self.raw.get(key)
        if raw is None:
            return None
        convert = _CONVERT[key_type]
        converted = tuple(c for c in map(convert, raw) if c is not None)
        by_key[key] = converted
        return converted

    def variable(self, key: str) -> str | None:
        """The value of a ``${key}`` policy variable: the key's single string value."""
        raw = self.raw.get(key.lower())
        if raw is None or len(raw) != 1:
            return None
        return context_string(raw[0])


def _ip_bits(value: object) -> tuple[int, int] | None:
    """A context address as (version, integer) for fast network tests.  An
    IPv4 client seen through a dual-stack socket (::ffff:10.1.2.3) is the IPv4
    address, so an IPv4 allow or deny list cannot be sidestepped by the family."""
    address = context_ip(value)
    if address is None:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.version, int(address)


def _memo(convert: Callable[[object], object | None]) -> Callable[[object], object | None]:
    # The same client address, time stamp or tag text recurs request after
    # request: remember the conversion of strings (a bounded cache).
    cached = functools.lru_cache(maxsize=4096)(convert)

    def converted(value: object) -> object | None:
        if isinstance(value, str):
            return cached(value)
        return convert(value)

    return converted


_CONVERT: Final[dict[str, Callable[[object], object | None]]] = {
    "string": context_string,
    "numeric": _memo(context_number),
    "date": _memo(context_instant),
    "bool": context_bool,
    "ip": _memo(_ip_bits),
}


class Condition:
    """One (operator, key, values) test, compiled."""

    __slots__ = ("_key_type", "_match", "_plain", "key", "key_name", "op", "values", "variables")

    def __init__(self, op: Operator, key: ContextKey, raw_values: tuple[PolicyScalar, ...]) -> None:
        """Raises ValueError naming the bad value."""
        self.op = op
        self._key_type: str = op.key_type or "string"
        self.key = key.name.lower()
        self.key_name = key.name
        values: list[object] = []
        variables: list[str] = []
        for value in raw_values:
            if op.relation == "null":
                values.append(policy_bool(value))
            elif op.key_type == "string":
                text = policy_string(value)
                glob = Glob.parse(text, wildcards=op.relation == "like", star_crosses_colon=True)
                for var in glob.variables:
                    var_key = lookup_key(var)
                    if var_key is None:
                        raise ValueError(f"unknown policy variable ${{{var}}}")
                    if var_key.multi:
                        raise ValueError(f"${{{var}}} is multi-valued and cannot be a policy variable")
                    variables.append(var_key.name.lower())
                values.append(glob)
            else:
                assert op.key_type is not None
                values.append(_POLICY_VALUE[op.key_type](value))
        self.values = tuple(values)
        self.variables = tuple(dict.fromkeys(variables))
        # Without variables the values are fixed: prepare them once.
        self._plain: tuple[object, ...] | None = None
        if not self.variables:
            self._plain = self._resolved(None)
        self._match = self._matcher()

    def _resolved(self, ctx: Context | None) -> tuple[object, ...] | None:
        if self.op.key_type == "ip":
            return tuple(
                (n.version, int(n.network_address), int(n.netmask))
                for n in self.values
                if isinstance(n, ipaddress.IPv4Network | ipaddress.IPv6Network)
            )
        if self.op.key_type != "string":
            return self.values
        out: list[object] = []
        for glob in self.values:
            assert isinstance(glob, Glob)
            if self.op.relation == "like":
                if glob.variables:
                    assert ctx is not None
                    filled: dict[str, str] = {}
                    for var in glob.variables:
                        value = ctx.variable(var)
                        if value is None:
                            return None
                        filled[var] = value
                    out.append(glob.matcher(filled))
                else:
                    out.append(glob.compiled())
            else:
                text = glob.substitute(ctx.variable if ctx is not None else _no_variable)
                if text is None:
                    return None
                out.append(text.casefold() if self.op.relation == "ieq" else text)
        return tuple(out)

    def _matcher(self) -> Callable[[object, tuple[object, ...]], bool]:
        relation = self.op.relation
        if relation == "null":
            return lambda c, ps: False  # Null is answered in test() from presence alone
        if relation == "like":
            return lambda c, ps: any(p.fullmatch(c) is not None for p in ps)  # type: ignore[attr-defined]
        if relation == "ieq":
            return lambda c, ps: c.casefold() in ps  # type: ignore[attr-defined]
        if relation == "in":
            # c: (version, address), p: (version, network, mask)
            return lambda c, ps: any(c[0] == p[0] and c[1] & p[2] == p[1] for p in ps)  # type: ignore[index]
        if relation == "eq" and self.op.key_type in ("string", "bool"):
            return lambda c, ps: c in ps
        compare = _ORDER[relation]
        return lambda c, ps: any(compare(c, p) for p in ps)

    def test(self, ctx: Context) -> bool:
        op = self.op
        if op.relation == "null":
            absent = self.key not in ctx.raw
            return any(v == absent for v in self.values)
        values = self._plain if self._plain is not None else self._resolved(ctx)
        if values is None:
            return False  # a policy variable without a value
        present = ctx.typed(self.key, self._key_type)
        qualifier = op.qualifier
        if present is None:
            if op.if_exists or qualifier == "all":
                return True
            if qualifier == "any":
                return False
            return op.negated
        match = self._match
        if qualifier is None:
            hit = match(present[0], values) if len(present) == 1 else any(match(c, values) for c in present)
            return not hit if op.negated else hit
        if qualifier == "any":
            if op.negated:
                return any(not match(c, values) for c in present)
            return any(match(c, values) for c in present)
        if op.negated:
            return not any(match(c, values) for c in present)
        return all(match(c, values) for c in present)


def _no_variable(_key: str) -> str | None:
    return None
