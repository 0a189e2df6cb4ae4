"""What a gateway holds for routing over a snapshot's lifetime: the rules
indexed by the model names they match, the per-target breakers, and the
random source for unsticky draws."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping

from ingress.routing.breaker import Breakers
from ingress.routing.tree import Decision, RouteContext, decide
from streams.config import Model
from streams.config_routing import Retry, Rule
from streams.config_snapshot import ConfigSnapshot


class RoutingRuntime:
    def __init__(
        self, snapshot: ConfigSnapshot, rng: random.Random | None = None, admin_token: str = ""
    ) -> None:
        cfg = snapshot.config.routing
        self.admin_token = admin_token  # "" = the explain endpoint is off
        self.rules: dict[str, Rule] = {name: rule for rule in cfg.rules for name in rule.match}
        self.models: dict[str, Model] = {m.name: m for m in snapshot.config.models}
        self.default_retry = cfg.retry
        self.breakers = Breakers(cfg.breaker)
        self.rng = rng or random.Random()

    def rule_for(self, requested: str) -> Rule | None:
        return self.rules.get(requested)

    def retry_for(self, rule_name: str) -> Retry:
        for rule in self.rules.values():
            if rule.name == rule_name and rule.retry is not None:
                return rule.retry
        return self.default_retry

    def health(self) -> Mapping[str, str]:
        return {name: self.breakers.health(name) for name in self.models}

    def decide(
        self,
        rule: Rule,
        ctx: RouteContext,
        allowed: Callable[[str], bool],
        smart_pick: str | None = None,
    ) -> Decision:
        return decide(
            rule, ctx, self.health(), models=self.models, allowed=allowed, rng=self.rng, smart_pick=smart_pick
        )
