"""Prometheus metrics of the gateway, on the process-wide registry (the
publisher's buffer/outbox gauges live there too, so ``/metrics`` shows both).

Label values are bounded: ``model`` is a configured public model name or ""
(never the caller's text), ``status`` an HTTP status.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

REQUESTS = Counter(
    "nexus_gateway_requests_total", "Requests answered, by outcome status and model", ["status", "model"]
)
LATENCY = Histogram(
    "nexus_gateway_request_duration_seconds",
    "Request received -> last byte sent",
    ["model", "stream"],
    buckets=_LATENCY_BUCKETS,
)
TTFT = Histogram(
    "nexus_gateway_ttft_seconds",
    "Request received -> first token sent (streams)",
    ["model"],
    buckets=_LATENCY_BUCKETS,
)
UPSTREAM = Histogram(
    "nexus_gateway_upstream_duration_seconds",
    "Request sent upstream -> last byte received",
    ["provider"],
    buckets=_LATENCY_BUCKETS,
)
UPSTREAM_ERRORS = Counter(
    "nexus_gateway_upstream_errors_total", "Failed upstream attempts", ["provider", "code"]
)
INFLIGHT = Gauge("nexus_gateway_inflight_requests", "Requests in progress")
SHED = Counter(
    "nexus_gateway_shed_total",
    "Requests refused at admission with 429 + Retry-After, by reason (inflight | event_loop_lag)",
    ["reason"],
)
LOOP_LAG = Gauge("nexus_gateway_event_loop_lag_seconds", "How late the admission probe timer last fired")


_children: dict[tuple[object, tuple[str, ...]], Any] = {}


def child(metric: Counter | Histogram, *labels: str) -> Any:
    """``metric.labels(*labels)``, looked up once per label set: ``labels``
    validates and locks on every call, and a request observes several
    metrics.  Safe to cache because every label value here is bounded (see
    the module docstring)."""
    key = (metric, labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found
