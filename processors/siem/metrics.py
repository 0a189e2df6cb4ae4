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
        self.resent = Counter(
            "nexus_siem_resent",
            "Records sent again because the connection they were written to closed before they were "
            "confirmed (syslog over TCP/TLS: a receiver restart)",
            ["sink"],
            registry=registry,
        )
        self.split = Counter(
            "nexus_siem_split_messages",
            "Extra messages sent because a record was over the sink's maximum message size",
            ["sink"],
            registry=registry,
        )
        self.udp_refused = Counter(
            "nexus_siem_udp_refused",
            "Datagrams the UDP socket reported refused (ICMP port unreachable: nobody listens); "
            "UDP is best effort, they are not resent",
            ["sink"],
            registry=registry,
        )
        self.lag = Gauge(
            "nexus_siem_lag",
            "Messages of a stream not yet forwarded to a sink (pending + in flight)",
            ["sink", "stream"],
            registry=registry,
        )
        # A sink reads every event stream (one worker each): its lag is the
        # sum, or an idle stream's worker would hide a busy one's backlog.
        self._lags: dict[tuple[str, str], float] = {}

    def set_lag(self, sink: str, stream: str, value: float) -> None:
        self._lags[(sink, stream)] = value
        self.lag.labels(sink).set(sum(v for (s, _), v in self._lags.items() if s == sink))


_by_registry: dict[int, SiemMetrics] = {}


def metrics_for(registry: CollectorRegistry | None = None) -> SiemMetrics:
    reg = registry or REGISTRY
    m = _by_registry.get(id(reg))
    if m is None:
        m = _by_registry[id(reg)] = SiemMetrics(reg)
    return m
