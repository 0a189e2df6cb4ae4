"""Prometheus metrics of the SIEM forwarder, per sink, created once per
registry."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge


class SiemMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.forwarded = Counter(
            "nexus_siem_forwarded", "Records the sink accepted", ["sink"], registry=registry
        )
        self.filtered = Counter(
            "nexus_siem_filtered", "Events the sink's filter left out", ["sink"], registry=registry
        )
        self.failures = Counter(
            "nexus_siem_failures",
            "Failed deliveries: outage (sink down) or rejected (sink refused the record)",
            ["sink", "kind"],
            registry=registry,
        )
        self.retries = Counter(
            "nexus_siem_retries", "Delivery rounds retried after a failure", ["sink"], registry=registry
        )
        self.dead_lettered = Counter(
            "nexus_siem_dead_lettered", "Records sent to the dead-letter subject", ["sink"], registry=registry
        )
        self.redelivered = Counter(
            "nexus_siem_redelivered",
            "Messages JetStream delivered more than once to this sink's consumer",
            ["sink"],
            registry=registry,
        )
        self.lag = Gauge(
            "nexus_siem_lag", "Messages not yet forwarded (pending + in flight)", ["sink"], registry=registry
        )


_by_registry: dict[int, SiemMetrics] = {}


def metrics_for(registry: CollectorRegistry | None = None) -> SiemMetrics:
    reg = registry or REGISTRY
    m = _by_registry.get(id(reg))
    if m is None:
        m = _by_registry[id(reg)] = SiemMetrics(reg)
    return m
