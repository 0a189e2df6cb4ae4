"""Routing: strategy trees evaluated as pure functions, and the per-target
circuit breakers whose state orders the candidates."""

from ingress.routing.breaker import Breakers, BreakerState
from ingress.routing.runtime import RoutingRuntime
from ingress.routing.tree import Candidate, Decision, RouteContext, decide

__all__ = ["BreakerState", "Breakers", "Candidate", "Decision", "RouteContext", "RoutingRuntime", "decide"]
