"""Prometheus metrics of rollup maintenance."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "nexus_analytics_events_total",
    "Traffic events whose request buckets the rollup maintenance processed",
)
BATCH_SECONDS = Histogram(
    "nexus_analytics_batch_seconds",
    "Time to record one batch's verdicts and stale rollup buckets with the rollup checkpoint",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
REFRESH_SECONDS = Histogram(
    "nexus_analytics_refresh_seconds",
    "Time to recompute the stale buckets of one grain",
    ["grain"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
BUCKETS_REFRESHED = Counter("nexus_analytics_buckets_refreshed_total", "Rollup buckets recomputed", ["grain"])
STALE_BUCKETS = Gauge("nexus_analytics_stale_buckets", "Rollup buckets waiting for a refresh", ["grain"])
CHECKPOINT = Gauge("nexus_analytics_checkpoint", "Last traffic stream sequence the rollups account for")
LAG_EVENTS = Gauge(
    "nexus_analytics_lag_events",
    "Stream messages the traffic_event table holds that the rollups do not yet account for",
)
STALENESS_SECONDS = Gauge(
    "nexus_analytics_staleness_seconds",
    "Seconds since the oldest stale-bucket mark not yet refreshed (0 when every rollup is current)",
)
