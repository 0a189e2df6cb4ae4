"""Streams, subjects and their retention: the JetStream layout of Nexus.

Everything is named from one prefix so that test runs (and several Nexus
installations on one NATS) never see each other's events.

Two kinds of stream live here.  The *event* streams (``streams()``: traffic
and admin audit) are what processors consume: the audit chain and the SIEM
forwarder read every one of them.  The *control* stream (``CONFIG``, in
``control_streams()``) is the Hub's event-sourced configuration: it keeps
its history forever (it is the Hub's only source of truth) and is read by
the Hub alone, never forwarded to a SIEM (user records carry password
hashes).  Nodes never read it either: they pull compiled snapshots from the
object store and learn of new ones from the head record in a KV bucket
(``streams.snapshots``).
"""

from __future__ import annotations

import re

import msgspec

# Subject tokens may not contain '.', '*', '>' or white space; ids may hold
# dots (``gpt-4o.mini``) and colons, so everything outside this set is
# %-encoded, reversibly.
_SUBJECT_SAFE = re.compile(r"[^A-Za-z0-9_-]")


def subject_token(value: str) -> str:
    """``value`` as one subject token (an empty value becomes ``%``)."""
    if not value:
        return "%"
    return _SUBJECT_SAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group(0).encode()), value)


def token_value(token: str) -> str:
    """The inverse of ``subject_token``."""
    if token == "%":  # noqa: S105 - the empty value's token, not a secret
        return ""
    from urllib.parse import unquote

    return unquote(token)


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
    # Admin audit records (one per admin API request) are kept as long as
    # the traffic; the hash-chained copy in Postgres is the long-term record.
    admin_max_age_s: int = 30 * 24 * 3600
    # A client retrying a command (same command id, e.g. after a lost
    # answer) within this window is stored once by JetStream itself.
    config_duplicate_window_s: int = 24 * 3600

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

    # --- admin audit --------------------------------------------------------

    @property
    def admin_stream(self) -> str:
        return f"{self.prefix}_ADMIN"

    @property
    def admin_wildcard(self) -> str:
        return f"{self.subject_root}.admin.>"

    def admin_subject(self, event_type: str) -> str:
        return f"{self.subject_root}.admin.{event_type}"

    # --- the Hub's control state ---------------------------------------------

    @property
    def config_stream(self) -> str:
        return f"{self.prefix}_CONFIG"

    @property
    def config_wildcard(self) -> str:
        return f"{self.subject_root}.config.>"

    def config_subject(self, aggregate: str, aggregate_id: str) -> str:
        """One subject per aggregate (``nexus.config.virtual-key.vk_1``):
        the unit of optimistic concurrency
        (``Nats-Expected-Last-Subject-Sequence``)."""
        return f"{self.subject_root}.config.{aggregate}.{subject_token(aggregate_id)}"

    @property
    def snapshot_bucket(self) -> str:
        """Object store of compiled config snapshots (the payloads)."""
        return f"{self.prefix}_SNAPSHOTS"

    @property
    def snapshot_head_bucket(self) -> str:
        """KV bucket holding the small head record of the newest snapshot:
        the change signal nodes watch."""
        return f"{self.prefix}_CONFIG_HEAD"

    @property
    def node_report_bucket(self) -> str:
        """KV bucket where every node reports the snapshot it runs (one key
        per node: the *reported* half of a shadow)."""
        return f"{self.prefix}_NODES"

    @property
    def fleet_sync_bucket(self) -> str:
        """KV bucket of the fleet's sync records (one per thing: the desired
        version tracked, re-pushes, drift; hub.fleet.drift), shared by the
        Hub's replicas."""
        return f"{self.prefix}_FLEET_SYNC"

    @property
    def heartbeat_bucket(self) -> str:
        """KV bucket where every node process that publishes events says it
        is alive (one key per node, streams.publisher): the reconciler
        (processors.reconcile) aborts the open requests of a node that
        restarted or went quiet."""
        return f"{self.prefix}_HEARTBEATS"

    @property
    def vault_bucket(self) -> str:
        """KV bucket of the credential vault's wrapped data keys (one per
        data key id, rewrapped in place; streams.vault.keystore)."""
        return f"{self.prefix}_VAULT"

    @property
    def agents_bucket(self) -> str:
        """KV bucket of enrolled agents (one key per agent id: its
        attestation key, certificates, status; streams.agents).  The Hub
        writes it; proxies read it to check attestation headers."""
        return f"{self.prefix}_AGENTS"

    @property
    def enrolment_bucket(self) -> str:
        """KV bucket of one-time enrolment tokens (keyed by their SHA-256,
        used once by compare-and-set; the Hub's only)."""
        return f"{self.prefix}_ENROLMENT"

    @property
    def session_bucket(self) -> str:
        """KV bucket of the Hub's admin sessions (hashed tokens, with a TTL)."""
        return f"{self.prefix}_HUB_SESSIONS"

    @property
    def signin_bucket(self) -> str:
        """KV bucket of the Hub's sign-in guard, shared by its replicas:
        login throttling buckets, lockouts, OIDC flows in progress, API
        tokens' last use (short-lived entries, hashed keys)."""
        return f"{self.prefix}_HUB_SIGNIN"

    @property
    def proxy_signin_subject(self) -> str:
        """NATS request-reply subject on which the Hub checks a proxy user's
        e-mail and password (``streams.signin_wire``).  No stream captures
        it: a question is answered by one Hub replica or by nobody."""
        return f"{self.subject_root}.hub.proxy-signin"

    @property
    def jobs_bucket(self) -> str:
        """KV bucket of the Hub's scheduler, shared by its replicas: the
        leader lease (``leader``) and one slot per job (``job.<name>``: runs
        claimed, manual run requests)."""
        return f"{self.prefix}_HUB_JOBS"

    def streams(self) -> list[StreamSpec]:
        """The event streams: every processor that reads "all events" (the
        audit chain, the SIEM forwarder) reads these."""
        return [
            StreamSpec(
                name=self.traffic_stream,
                subjects=(self.traffic_wildcard,),
                max_age_s=self.traffic_max_age_s,
                duplicate_window_s=self.duplicate_window_s,
                description="Nexus traffic facts: requests, upstream results, usage, outcomes",
            ),
            StreamSpec(
                name=self.admin_stream,
                subjects=(self.admin_wildcard,),
                max_age_s=self.admin_max_age_s,
                duplicate_window_s=self.duplicate_window_s,
                description="Nexus admin audit: every admin API request, allowed or denied",
            ),
        ]

    def control_streams(self) -> list[StreamSpec]:
        return [
            StreamSpec(
                name=self.config_stream,
                subjects=(self.config_wildcard,),
                max_age_s=0,  # forever: the Hub's state is rebuilt from it
                duplicate_window_s=self.config_duplicate_window_s,
                description="Nexus control state: every admin change, one subject per aggregate",
            ),
        ]

    def subject_for(self, event: msgspec.Struct) -> str:
        tag = str(type(event).__struct_config__.tag)
        if tag.startswith("admin."):
            return self.admin_subject(tag)
        return self.traffic_subject(tag)
