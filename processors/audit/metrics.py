"""Prometheus metrics of the audit processor, created once per registry."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge


class AuditMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.recorded = Counter(
            "nexus_audit_records", "Audit records appended to the chain", ["stream"], registry=registry
        )
        self.redelivered = Counter(
            "nexus_audit_redelivered",
            "Messages skipped because they were already recorded (redeliveries)",
            ["stream"],
            registry=registry,
        )
        self.failures = Counter(
            "nexus_audit_failures", "Failed append transactions (retried)", ["stream"], registry=registry
        )
        self.lag = Gauge(
            "nexus_audit_lag", "Messages in the stream not yet recorded", ["stream"], registry=registry
        )


_by_registry: dict[int, AuditMetrics] = {}


def metrics_for(registry: CollectorRegistry | None = None) -> AuditMetrics:
    reg = registry or REGISTRY
    m = _by_registry.get(id(reg))
    if m is None:
        m = _by_registry[id(reg)] = AuditMetrics(reg)
    return m
