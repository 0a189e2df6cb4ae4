"""Prometheus metrics of the projector, labelled by store."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_APPLIED = Counter(
    "nexus_projection_events_applied_total",
    "Stream messages applied to a projection store (including ignored event types)",
    ["store"],
)
EVENTS_SKIPPED = Counter(
    "nexus_projection_events_skipped_total",
    "Stream messages a projection could not use (reason: undecodable, unknown_type, no_request_id)",
    ["store", "reason"],
)
LAG = Gauge(
    "nexus_projection_lag_events",
    "Stream messages not yet applied (stream last sequence - checkpoint)",
    ["store"],
)
CHECKPOINT = Gauge("nexus_projection_checkpoint", "Last stream sequence applied", ["store"])
BATCH_SECONDS = Histogram(
    "nexus_projection_batch_seconds",
    "Time to write one batch and its checkpoint",
    ["store"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
RESTARTS = Counter(
    "nexus_projection_consumer_restarts_total",
    "Times a store's consumer was re-created from its checkpoint (NATS or database trouble)",
    ["store"],
)
