"""Routing configuration: rules whose strategy is a tree of nodes, and the
resilience settings (retries, circuit breakers, timeouts) the gateway applies
to every routed attempt.

A rule answers for the model names it ``match``-es: a caller asking for
``chat-auto`` is served by whatever model the rule's tree picks.  Leaves name
public models of ``models:``; a key's ``allowed_models`` filters the picked
candidates afterwards, so no fallback or split can reach a model the key may
not call.

    routing:
      rules:
        - name: chat-auto
          match: [chat-auto]
          strategy:
            type: fallback
            on_failure: [5xx, "429", timeout]
            targets:
              - {type: loadbalance, sticky_on: "header:x-session-id",
                 targets: [{weight: 3, node: {type: single, model: a}},
                           {weight: 1, node: {type: single, model: b}}]}
              - {type: single, model: c}
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import Any, Literal

import msgspec

from streams.config_base import ConfigError, Strict
from streams.config_checks import check_re2

# Failure classes a fallback or a retry acts on.  "network": refused or
# reset connections; "timeout": connect, first-token or total deadline.
FailureClass = Literal["4xx", "429", "5xx", "timeout", "network"]
FAILURE_CLASSES: tuple[str, ...] = ("4xx", "429", "5xx", "timeout", "network")

MAX_DEPTH = 10
REGEX_MAX_LEN = 256


class _Node(Strict, frozen=True, kw_only=True, tag_field="type"):
    pass


class Single(_Node, frozen=True, kw_only=True, tag="single"):
    model: str


class Fallback(_Node, frozen=True, kw_only=True, tag="fallback"):
    targets: tuple[StrategyNode, ...]
    # (Not "on": YAML 1.1 reads that key as the boolean true.)
    # A failed attempt moves on to the next target only for these classes;
    # anything else (a 400, a policy refusal) is the caller's answer.
    on_failure: tuple[FailureClass, ...] = ("429", "5xx", "timeout", "network")


class WeightedTarget(Strict, frozen=True, kw_only=True):
    weight: float
    node: StrategyNode


class LoadBalance(_Node, frozen=True, kw_only=True, tag="loadbalance"):
    targets: tuple[WeightedTarget, ...]
    # "key", "user", "org", "project" or "header:<name>": the same value
    # always draws the same target (a hash, not state: every node agrees).
    sticky_on: str | None = None


class Condition(Strict, frozen=True, kw_only=True):
    when: dict[str, Any]
    then: StrategyNode


class Conditional(_Node, frozen=True, kw_only=True, tag="conditional"):
    conditions: tuple[Condition, ...]
    default: StrategyNode | None = None


class Arm(Strict, frozen=True, kw_only=True):
    name: str
    weight: float
    model: str


class AbSplit(_Node, frozen=True, kw_only=True, tag="ab_split"):
    arms: tuple[Arm, ...]
    # An experiment keeps a caller in one arm; "none" draws per request.
    sticky_on: str | None = "key"


class Policy(_Node, frozen=True, kw_only=True, tag="policy"):
    """Narrows what ``node`` picks: allow lists intersect, deny lists remove."""

    node: StrategyNode
    allow_models: tuple[str, ...] = ()
    deny_models: tuple[str, ...] = ()
    allow_providers: tuple[str, ...] = ()
    deny_providers: tuple[str, ...] = ()


class CatalogEntry(Strict, frozen=True, kw_only=True):
    """One model the smart router may pick, as the router is told about it
    (the price comes from the model's ``price`` unless given here)."""

    model: str
    description: str = ""
    strengths: tuple[str, ...] = ()
    price: str = ""  # e.g. "$0.15 in / $0.60 out per 1M tokens"


class Smart(_Node, frozen=True, kw_only=True, tag="smart"):
    """``model: "auto"``: a router model (a chat model of ``models:``,
    called through its adapter like any target) picks one model of
    ``catalog``; the pick is served, then ``default`` if it fails.  Any
    router failure (timeout, error, an answer that names no catalog model
    or a model the key may not call) serves ``default``.  Only at the root
    of a rule's strategy (or inside root-level policies): the router is
    asked once per request, before the tree is walked."""

    router: str
    catalog: tuple[CatalogEntry, ...]
    default: str
    timeout_ms: float = 3000.0  # the router call's own bound
    max_tokens: int = 64
    system_prompt: str = ""  # replaces the built-in instruction
    # The picked model failing upstream hands the request to ``default``.
    on_failure: tuple[FailureClass, ...] = ("429", "5xx", "timeout", "network")


StrategyNode = Single | Fallback | LoadBalance | Conditional | AbSplit | Policy | Smart


class Retry(Strict, frozen=True, kw_only=True):
    # Attempts on one target (1 = no retry); the whole request never makes
    # more than ``max_total_attempts`` upstream calls across all targets.
    max_attempts: int = 1
    max_total_attempts: int = 4
    backoff_ms: float = 100.0
    max_backoff_ms: float = 2000.0
    on_failure: tuple[FailureClass, ...] = ("429", "5xx", "timeout", "network")


class Breaker(Strict, frozen=True, kw_only=True):
    enabled: bool = True
    failures: int = 5  # failures within window_s open the breaker
    window_s: float = 30.0
    open_s: float = 15.0  # then one half-open probe
    half_open_probes: int = 1


class Rule(Strict, frozen=True, kw_only=True):
    name: str
    match: tuple[str, ...]
    strategy: StrategyNode
    retry: Retry | None = None


class RoutingConfig(Strict, frozen=True, kw_only=True):
    rules: tuple[Rule, ...] = ()
    retry: Retry = Retry()
    breaker: Breaker = Breaker()


_OPERATORS = {
    "$and",
    "$or",
    "$not",
    "$eq",
    "$ne",
    "$gt",
    "$gte",
    "$lt",
    "$lte",
    "$in",
    "$nin",
    "$regex",
    "$exists",
}
_FIELD_ROOTS = {"model", "endpoint", "stream", "headers", "key", "metadata"}


def validate_predicate(expr: Any, where: str) -> None:
    """A condition's ``when``: every operator known, every field rooted in
    what the request context holds, every regex short and compilable."""
    if not isinstance(expr, dict):
        raise ConfigError(f"{where}: a condition must be a mapping")
    for k, v in expr.items():
        if k in ("$and", "$or"):
            if not isinstance(v, list) or not v:
                raise ConfigError(f"{where}.{k}: must be a non-empty list")
            for i, sub in enumerate(v):
                validate_predicate(sub, f"{where}.{k}[{i}]")
        elif k == "$not":
            validate_predicate(v, f"{where}.$not")
        elif k.startswith("$"):
            raise ConfigError(f"{where}: unknown operator {k!r}")
        else:
            if k.split(".", 1)[0] not in _FIELD_ROOTS:
                roots = ", ".join(sorted(_FIELD_ROOTS))
                raise ConfigError(f"{where}: field {k!r} must start with one of {roots}")
            _validate_field_test(v, f"{where}.{k}")


def _validate_field_test(test: Any, where: str) -> None:
    if not isinstance(test, dict):
        return  # a literal: equality
    for op, arg in test.items():
        if op not in _OPERATORS or op in ("$and", "$or"):
            raise ConfigError(f"{where}: unknown operator {op!r}")
        if op in ("$in", "$nin") and not isinstance(arg, list):
            raise ConfigError(f"{where}.{op}: must be a list")
        if op == "$regex":
            if not isinstance(arg, str) or len(arg) > REGEX_MAX_LEN:
                raise ConfigError(f"{where}.$regex: must be a string of at most {REGEX_MAX_LEN} chars")
            check_re2(arg, where=f"{where}.$regex")
        if op == "$not":
            _validate_field_test(arg, f"{where}.$not")


def _sticky(value: str | None, where: str) -> None:
    if value is None or value in ("key", "user", "org", "project", "none"):
        return
    if value.startswith("header:") and len(value) > len("header:"):
        return
    raise ConfigError(f"{where}.sticky_on: key, user, org, project, none or header:<name>")


def root_smart(node: StrategyNode) -> Smart | None:
    """The smart node at the root of a strategy (through policies), if any."""
    while isinstance(node, Policy):
        node = node.node
    return node if isinstance(node, Smart) else None


def _smart(node: Smart, where: str, models: Mapping[str, str]) -> None:
    if models.get(node.router) != "chat":
        raise ConfigError(f"{where}.router: {node.router!r} is not a chat model of models:")
    if not node.catalog:
        raise ConfigError(f"{where}.catalog: at least one model")
    for i, entry in enumerate(node.catalog):
        if models.get(entry.model) != "chat":
            raise ConfigError(f"{where}.catalog[{i}].model: {entry.model!r} is not a chat model")
    if models.get(node.default) != "chat":
        raise ConfigError(f"{where}.default: {node.default!r} is not a chat model")
    if not 1 <= node.timeout_ms <= 60_000 or not 1 <= node.max_tokens <= 4096:
        raise ConfigError(f"{where}: timeout_ms 1-60000, max_tokens 1-4096")


def _node(node: StrategyNode, where: str, models: set[str], providers: set[str], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ConfigError(f"{where}: the strategy tree is deeper than {MAX_DEPTH}")
    if isinstance(node, Single):
        if node.model not in models:
            raise ConfigError(f"{where}.model: unknown model {node.model!r}")
    elif isinstance(node, Fallback):
        if not node.targets:
            raise ConfigError(f"{where}.targets: at least one target")
        for i, t in enumerate(node.targets):
            _node(t, f"{where}.targets[{i}]", models, providers, depth + 1)
    elif isinstance(node, LoadBalance):
        _sticky(node.sticky_on, where)
        if not node.targets:
            raise ConfigError(f"{where}.targets: at least one target")
        for i, w in enumerate(node.targets):
            if not w.weight > 0:
                raise ConfigError(f"{where}.targets[{i}].weight: must be positive")
            _node(w.node, f"{where}.targets[{i}].node", models, providers, depth + 1)
    elif isinstance(node, Conditional):
        for i, c in enumerate(node.conditions):
            validate_predicate(c.when, f"{where}.conditions[{i}].when")
            _node(c.then, f"{where}.conditions[{i}].then", models, providers, depth + 1)
        if node.default is not None:
            _node(node.default, f"{where}.default", models, providers, depth + 1)
    elif isinstance(node, AbSplit):
        _sticky(node.sticky_on, where)
        if not node.arms:
            raise ConfigError(f"{where}.arms: at least one arm")
        for i, a in enumerate(node.arms):
            if not a.weight > 0:
                raise ConfigError(f"{where}.arms[{i}].weight: must be positive")
            if a.model not in models:
                raise ConfigError(f"{where}.arms[{i}].model: unknown model {a.model!r}")
    elif isinstance(node, Smart):
        raise ConfigError(f"{where}: a smart node only stands at the root of a strategy")
    elif isinstance(node, Policy):
        for m in (*node.allow_models, *node.deny_models):
            if m not in models:
                raise ConfigError(f"{where}: unknown model {m!r} in a policy list")
        for p in (*node.allow_providers, *node.deny_providers):
            if p not in providers:
                raise ConfigError(f"{where}: unknown provider {p!r} in a policy list")
        _node(node.node, f"{where}.node", models, providers, depth + 1)


def _retry(r: Retry, where: str) -> None:
    if not 1 <= r.max_attempts <= 10 or not 1 <= r.max_total_attempts <= 20:
        raise ConfigError(f"{where}: max_attempts 1-10, max_total_attempts 1-20")
    if r.backoff_ms < 0 or r.max_backoff_ms < r.backoff_ms:
        raise ConfigError(f"{where}: 0 <= backoff_ms <= max_backoff_ms")


def validate_routing(
    r: RoutingConfig, *, kinds: Mapping[str, str], aliases: Set[str], providers: set[str]
) -> None:
    """Raise ConfigError naming the first bad field.  ``kinds``: each public
    model's kind (chat, embedding) by name; ``aliases``: the models' other
    names (a rule may not match one)."""
    models = set(kinds)
    matched: set[str] = set()
    names: set[str] = set()
    for i, rule in enumerate(r.rules):
        where = f"routing.rules[{i}]"
        if rule.name in names:
            raise ConfigError(f"{where}.name: duplicate rule {rule.name!r}")
        names.add(rule.name)
        if not rule.match:
            raise ConfigError(f"{where}.match: at least one model name")
        for name in rule.match:
            if name in matched:
                raise ConfigError(f"{where}.match: {name!r} is matched by an earlier rule")
            if name in aliases:
                raise ConfigError(f"{where}.match: {name!r} is a model alias")
            matched.add(name)
        smart = root_smart(rule.strategy)
        if smart is not None:
            path = f"{where}.strategy"
            node = rule.strategy
            while isinstance(node, Policy):
                _node(
                    msgspec.structs.replace(node, node=Single(model=smart.default)),
                    path,
                    models,
                    providers,
                    1,
                )
                node, path = node.node, f"{path}.node"
            _smart(smart, path, kinds)
        else:
            _node(rule.strategy, f"{where}.strategy", models, providers, 1)
        if rule.retry is not None:
            _retry(rule.retry, f"{where}.retry")
    _retry(r.retry, "routing.retry")
    b = r.breaker
    if b.failures < 1 or b.window_s <= 0 or b.open_s <= 0 or b.half_open_probes < 1:
        raise ConfigError("routing.breaker: failures, window_s, open_s, half_open_probes must be positive")
