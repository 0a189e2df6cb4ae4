"""Policy documents: the wire types, the strict parser and the compiled form.

A document is AWS-shaped JSON::

    {"Version": "2026-01-01",
     "Statement": [{"Sid": "KeysInEu", "Effect": "Allow",
                    "Action": ["admin:virtual-key.*"],
                    "Resource": "nrn:nexus:gateway:acme/eu:virtual-key/*",
                    "Condition": {"IpAddress": {"nexus:SourceIp": "10.0.0.0/8"}}}]}

Parsing is strict: an unknown field, a bad operator, an unknown condition
key, a value of the wrong type, an action that names nothing in the
catalogue or a resource pattern that can never match is a ``PolicyError``
whose ``field`` names the place (``Statement[1].Condition.StringLike``).
Parsing also compiles the statements (wildcards to matchers, condition
values to typed values), so evaluation does no parsing.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

import msgspec

from hub.iam.actions import ACTIONS
from hub.iam.conditions import Condition, Context, parse_operator
from hub.iam.context_keys import lookup_key
from hub.iam.globs import Glob
from hub.iam.nrn import check_pattern

VERSION: Final = "2026-01-01"

MAX_DOCUMENT_BYTES: Final = 32 * 1024
MAX_STATEMENTS: Final = 64
MAX_ITEMS: Final = 100  # actions, resources or values in one element

ConditionValue = str | int | float | bool | list[str | int | float | bool]


class StatementDocument(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    Effect: Literal["Allow", "Deny"]
    Sid: str | None = None
    Action: str | list[str] | None = None
    NotAction: str | list[str] | None = None
    Resource: str | list[str] | None = None
    NotResource: str | list[str] | None = None
    Condition: dict[str, dict[str, ConditionValue]] | None = None


class PolicyDocument(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    Version: str
    Statement: list[StatementDocument] | StatementDocument
    Id: str | None = None


# What the parser decodes first: condition values untyped, so that a bad one
# is reported with its operator and key (msgspec names dict keys "[...]").
class _LooseStatement(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    Effect: Literal["Allow", "Deny"]
    Sid: str | None = None
    Action: str | list[str] | None = None
    NotAction: str | list[str] | None = None
    Resource: str | list[str] | None = None
    NotResource: str | list[str] | None = None
    Condition: dict[str, dict[str, Any]] | None = None


class _LooseDocument(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    Version: str
    Statement: list[_LooseStatement] | _LooseStatement
    Id: str | None = None


class PolicyError(ValueError):
    """A policy that is not valid; ``field`` is where (``Statement[0].Effect``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


_SID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_ACTION = re.compile(r"\*|[a-z*?][a-z0-9*?-]*:[a-z0-9*?.-]+")
_MSGSPEC_PATH = re.compile(r" - at `\$\.?(.*)`$")


class CompiledStatement:
    """One statement ready to evaluate; ``index`` is its place in the document."""

    __slots__ = (
        "_action_cache",
        "_resource_globs",
        "action_globs",
        "conditions",
        "effect",
        "index",
        "not_action",
        "not_resource",
        "referenced_keys",
        "resource_globs",
        "resource_vars",
        "sid",
    )

    def __init__(
        self,
        index: int,
        sid: str,
        effect: str,
        action_globs: tuple[Glob, ...],
        not_action: bool,
        resource_globs: tuple[Glob, ...],
        not_resource: bool,
        conditions: tuple[Condition, ...],
    ) -> None:
        self.index = index
        self.sid = sid
        self.effect = effect
        self.action_globs = action_globs
        self.not_action = not_action
        self.resource_globs = resource_globs
        self.not_resource = not_resource
        self.conditions = conditions
        self._action_cache: dict[str, bool] = {}
        self.resource_vars = tuple(
            dict.fromkeys(v.lower() for g in resource_globs for v in g.variables if not g.any)
        )
        self._resource_globs = tuple((g.compiled() if not g.variables else None, g) for g in resource_globs)
        # Keys whose absence this statement can notice (for missing_context_keys):
        # every key a condition compares or substitutes, except Null's own key
        # (absence is what Null asks about).
        keys: dict[str, str] = {}
        for cond in conditions:
            if cond.op.relation != "null":
                keys[cond.key] = cond.key_name
            for var in cond.variables:
                keys[var] = _canonical(var)
        for var in self.resource_vars:
            keys[var] = _canonical(var)
        self.referenced_keys = tuple(keys.items())

    def matches_action(self, action: str) -> bool:
        found = self._action_cache.get(action)
        if found is None:
            found = any(g.matches(action) for g in self.action_globs) != self.not_action
            if len(self._action_cache) < 4096:  # callers pass catalogue actions; bound the odd one
                self._action_cache[action] = found
        return found

    def matches_resource(self, resource: str, ctx: Context) -> bool | None:
        """True or False, or None when a ``${key}`` in a pattern has no value."""
        undecided = False
        for regex, glob in self._resource_globs:
            if regex is None:
                filled: dict[str, str] = {}
                for var in glob.variables:
                    value = ctx.variable(var)
                    if value is None:
                        undecided = True
                        break
                    filled[var] = value
                else:
                    regex = glob.matcher(filled)
                if regex is None:
                    continue
            if regex.fullmatch(resource) is not None:
                return not self.not_resource
        if undecided:
            return None
        return self.not_resource


def _canonical(lower_key: str) -> str:
    found = lookup_key(lower_key)
    return found.name if found is not None else lower_key


class Policy:
    """A parsed, validated and compiled policy document.  Build it with
    ``parse_policy``; ``document`` is the wire form (what to store)."""

    __slots__ = ("document", "statements")

    def __init__(self, document: PolicyDocument, statements: tuple[CompiledStatement, ...]) -> None:
        self.document = document
        self.statements = statements

    def to_json(self) -> bytes:
        return msgspec.json.encode(self.document)

    def to_builtins(self) -> dict[str, Any]:
        built: dict[str, Any] = msgspec.to_builtins(self.document)
        return built

    def statement_documents(self) -> list[StatementDocument]:
        stmt = self.document.Statement
        return list(stmt) if isinstance(stmt, list) else [stmt]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Policy) and self.document == other.document

    def __hash__(self) -> int:
        return hash(self.to_json())

    def __repr__(self) -> str:
        return f"Policy({self.to_json().decode()})"


_decoder = msgspec.json.Decoder(_LooseDocument)


def parse_policy(
    raw: bytes | str | Mapping[str, Any] | PolicyDocument, *, known_actions: Iterable[str] | None = ACTIONS
) -> Policy:
    """Parse and compile a policy; raises PolicyError naming the field.

    ``known_actions``: an action (or wildcard) that names none of these is an
    error (a typo would otherwise grant or deny nothing, silently).  Pass None
    when re-reading stored documents, so that retiring an action from the
    catalogue never makes an old policy unreadable."""
    if isinstance(raw, bytes):
        text = raw
    elif isinstance(raw, str):
        text = raw.encode()
    else:
        try:
            text = msgspec.json.encode(raw)
        except (TypeError, msgspec.EncodeError) as exc:
            raise PolicyError("", f"not a JSON document: {exc}") from None
    catalogue = tuple(known_actions) if known_actions is not None else None
    # The Hub builds a caller's policies from stored documents on every
    # request: the same document compiles once (a parsed Policy is immutable).
    return _parse_cached(text, catalogue)


@functools.lru_cache(maxsize=2048)
def _parse_cached(text: bytes, catalogue: tuple[str, ...] | None) -> Policy:
    if len(text) > MAX_DOCUMENT_BYTES:
        raise PolicyError("", f"the document is larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        document = _decoder.decode(text)
    except msgspec.ValidationError as exc:
        raise _from_msgspec(exc) from None
    except msgspec.DecodeError as exc:
        raise PolicyError("", f"not valid JSON: {exc}") from None
    if document.Version != VERSION:
        raise PolicyError("Version", f"must be {VERSION!r}")
    many = isinstance(document.Statement, list)
    docs = document.Statement if isinstance(document.Statement, list) else [document.Statement]
    if not docs:
        raise PolicyError("Statement", "must hold at least one statement")
    if len(docs) > MAX_STATEMENTS:
        raise PolicyError("Statement", f"holds more than {MAX_STATEMENTS} statements")
    sids: set[str] = set()
    compiled = []
    for index, stmt in enumerate(docs):
        where = f"Statement[{index}]" if many else "Statement"
        compiled.append(_compile_statement(index, stmt, where, catalogue))
        if stmt.Sid is not None:
            if stmt.Sid in sids:
                raise PolicyError(f"{where}.Sid", f"{stmt.Sid!r} is used by an earlier statement")
            sids.add(stmt.Sid)
    typed = msgspec.convert(msgspec.to_builtins(document), PolicyDocument)
    return Policy(typed, tuple(compiled))


def _from_msgspec(exc: msgspec.ValidationError) -> PolicyError:
    text = str(exc)
    found = _MSGSPEC_PATH.search(text)
    field = found.group(1) if found else ""
    message = text[: found.start()] if found else text
    unknown = re.match(r"Object contains unknown field `(.*)`", message)
    if unknown:
        field = f"{field}.{unknown.group(1)}" if field else unknown.group(1)
        message = "unknown field"
    missing = re.match(r"Object missing required field `(.*)`", message)
    if missing:
        field = f"{field}.{missing.group(1)}" if field else missing.group(1)
        message = "required field missing"
    return PolicyError(field, message)


@functools.lru_cache(maxsize=4096)
def _names_an_action(glob: Glob, catalogue: tuple[str, ...]) -> bool:
    return any(glob.matches(a) for a in catalogue)


def _items(value: str | list[str], where: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not items:
        raise PolicyError(where, "must not be empty")
    if len(items) > MAX_ITEMS:
        raise PolicyError(where, f"holds more than {MAX_ITEMS} entries")
    return items


def _compile_statement(
    index: int, stmt: _LooseStatement, where: str, catalogue: tuple[str, ...] | None
) -> CompiledStatement:
    if stmt.Sid is not None and not _SID.fullmatch(stmt.Sid):
        raise PolicyError(f"{where}.Sid", "must be 1-128 letters, digits, '_' or '-'")
    if (stmt.Action is None) == (stmt.NotAction is None):
        raise PolicyError(f"{where}.Action", "exactly one of Action and NotAction is required")
    if (stmt.Resource is None) == (stmt.NotResource is None):
        raise PolicyError(f"{where}.Resource", "exactly one of Resource and NotResource is required")

    action_field = "Action" if stmt.Action is not None else "NotAction"
    action_value = stmt.Action if stmt.Action is not None else stmt.NotAction
    assert action_value is not None
    action_globs = []
    for n, text in enumerate(_items(action_value, f"{where}.{action_field}")):
        item = f"{where}.{action_field}" + (f"[{n}]" if isinstance(action_value, list) else "")
        if not _ACTION.fullmatch(text):
            raise PolicyError(item, f"{text!r} is not an action: expected '*' or admin:<resource>.<verb>")
        glob = Glob.parse(text, wildcards=True, any_if_star=True)
        if catalogue is not None and not _names_an_action(glob, catalogue):
            raise PolicyError(item, f"{text!r} matches no action in the catalogue")
        action_globs.append(glob)

    resource_field = "Resource" if stmt.Resource is not None else "NotResource"
    resource_value = stmt.Resource if stmt.Resource is not None else stmt.NotResource
    assert resource_value is not None
    resource_globs = []
    for n, text in enumerate(_items(resource_value, f"{where}.{resource_field}")):
        item = f"{where}.{resource_field}" + (f"[{n}]" if isinstance(resource_value, list) else "")
        problem = check_pattern(text)
        if problem:
            raise PolicyError(item, problem)
        glob = Glob.parse(text, any_if_star=True)
        for var in glob.variables:
            key = lookup_key(var)
            if key is None:
                raise PolicyError(item, f"unknown policy variable ${{{var}}}")
            if key.multi or key.type != "string":
                raise PolicyError(item, f"${{{var}}} is not a single-valued string key")
        resource_globs.append(glob)

    conditions: list[Condition] = []
    for op_name, by_key in (stmt.Condition or {}).items():
        op_where = f"{where}.Condition.{op_name}"
        try:
            op = parse_operator(op_name)
        except ValueError as exc:
            raise PolicyError(op_where, str(exc)) from None
        if not by_key:
            raise PolicyError(op_where, "must name at least one condition key")
        for key_name, raw in by_key.items():
            key_where = f"{op_where}.{key_name}"
            key = lookup_key(key_name)
            if key is None:
                raise PolicyError(key_where, f"unknown condition key {key_name!r}")
            if op.key_type is not None and key.type != op.key_type:
                raise PolicyError(
                    key_where, f"{op.base} compares {op.key_type} values; {key.name} is {key.type}"
                )
            if op.qualifier and not key.multi:
                raise PolicyError(key_where, f"{key.name} is single-valued: drop the set qualifier")
            if not op.qualifier and key.multi and op.relation != "null":
                raise PolicyError(
                    key_where,
                    f"{key.name} is multi-valued: use ForAnyValue:{op.base} or ForAllValues:{op.base}",
                )
            values = tuple(raw) if isinstance(raw, list) else (raw,)
            for value in values:
                if not isinstance(value, str | int | float | bool):
                    raise PolicyError(key_where, "Expected a string, number or boolean, or a list of them")
            if not values:
                raise PolicyError(key_where, "must hold at least one value")
            if len(values) > MAX_ITEMS:
                raise PolicyError(key_where, f"holds more than {MAX_ITEMS} values")
            try:
                conditions.append(Condition(op, key, values))
            except ValueError as exc:
                raise PolicyError(key_where, str(exc)) from None

    return CompiledStatement(
        index=index,
        sid=stmt.Sid or "",
        effect=stmt.Effect,
        action_globs=tuple(action_globs),
        not_action=stmt.NotAction is not None,
        resource_globs=tuple(resource_globs),
        not_resource=stmt.NotResource is not None,
        conditions=tuple(conditions),
    )
