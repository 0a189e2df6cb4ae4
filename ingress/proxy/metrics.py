"""The proxy's Prometheus metrics, in a registry of its own (two proxy
nodes in one process, as in the tests, keep separate counts)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class ProxyMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connections = Counter(
            "nexus_proxy_connections_total",
            "Connections by how they were handled",
            ["bump_status"],
            registry=r,
        )
        self.handshake_failures = Counter(
            "nexus_proxy_handshake_failures_total",
            "TLS handshakes that failed, by side and reason",
            ["side", "reason"],
            registry=r,
        )
        self.leaf_cache = Counter(
            "nexus_proxy_leaf_cache_total", "Per-host TLS context lookups", ["result"], registry=r
        )
        self.attestation = Counter(
            "nexus_proxy_attestation_total", "Attestation headers checked, by result", ["result"], registry=r
        )
        self.bytes = Counter("nexus_proxy_bytes_total", "Bytes relayed", ["direction"], registry=r)
        self.requests = Counter(
            "nexus_proxy_requests_total", "HTTP requests inside bumped connections", ["action"], registry=r
        )
        self.refused = Counter(
            "nexus_proxy_refused_total",
            "Connections refused before a tunnel, by reason",
            ["reason"],
            registry=r,
        )
        self.auth = Counter(
            "nexus_proxy_auth_total",
            "Proxy-Authorization checks, by who was let in (user, virtual_key, hub_user) or failed",
            ["result"],
            registry=r,
        )
        self.hub_signin = Counter(
            "nexus_proxy_hub_signin_total",
            "Hub users' sign-ins, by outcome (ok, cached, denied, throttled, unavailable, malformed)",
            ["outcome"],
            registry=r,
        )
        self.active = Gauge("nexus_proxy_active_tunnels", "Connections open now", registry=r)
        self.pinned = Gauge("nexus_proxy_pinned_hosts", "Hosts spliced after a pinning failure", registry=r)
        self.kill_switch = Gauge("nexus_proxy_kill_switch", "1 while bumping is off", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        v = self.registry.get_sample_value(name, labels or {})
        return 0.0 if v is None else v
