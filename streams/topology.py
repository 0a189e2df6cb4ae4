"""Streams, subjects and their retention: the JetStream layout of Nexus.

Everything is named from one prefix so that test runs (and several Nexus
installations on one NATS) never see each other's events.
"""

from __future__ import annotations

import msgspec


class StreamSpec(msgspec.Struct, frozen=True):
    name: str
    subjects: tuple[str, ...]
    max_age_s: int
    duplicate_window_s: int
    max_bytes: int = -1
    replicas: int = 1
    description: str = ""


class Topology(msgspec.Struct, frozen=True):
    """Names of streams and subjects under one prefix (``NEXUS`` by default)."""

    prefix: str = "NEXUS"
    # The traffic stream is the source of every projection: it keeps enough
    # history to rebuild them (30 days by default; raise it, or archive to
    # Parquet, for longer).  The duplicate window covers the outbox drain after
    # an outage of up to 10 minutes; consumers are idempotent beyond that.
    traffic_max_age_s: int = 30 * 24 * 3600
    duplicate_window_s: int = 600

    @property
    def subject_root(self) -> str:
        return self.prefix.lower()

    @property
    def traffic_stream(self) -> str:
        return f"{self.prefix}_TRAFFIC"

    def traffic_subject(self, event_type: str) -> str:
        return f"{self.subject_root}.traffic.{event_type}"

    @property
    def traffic_wildcard(self) -> str:
        return f"{self.subject_root}.traffic.>"

    @property
    def spill_bucket(self) -> str:
        return f"{self.prefix}_SPILL"

    def streams(self) -> list[StreamSpec]:
        return [
            StreamSpec(
                name=self.traffic_stream,
                subjects=(self.traffic_wildcard,),
                max_age_s=self.traffic_max_age_s,
                duplicate_window_s=self.duplicate_window_s,
                description="Nexus traffic facts: requests, upstream results, usage, outcomes",
            ),
        ]

    def subject_for(self, event: msgspec.Struct) -> str:
        tag = type(event).__struct_config__.tag
        return self.traffic_subject(str(tag))
