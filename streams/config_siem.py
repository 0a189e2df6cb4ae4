"""Config sections for the audit trail and SIEM forwarding (strict, like the
rest of the file): ``audit:`` (body retention policy) and ``siem:`` (sinks,
each with its own filters, retry policy and body policy).

Credentials are never in the file: a sink names the environment variable
that holds its token.  Every sink target goes through the SSRF guard.

An example (``tests/siem/test_records_and_config.py`` loads it)::

    audit:
      body_retention_days: 30       # stored bodies; the chain keeps their digests
      spill_retention_days: 30
    siem:
      sinks:
        - kind: syslog              # RFC 5424, octet-counted over TLS
          name: soc
          host: siem.example.com
          port: 6514
          transport: tls            # tcp | tls | udp
          format: cef               # json | cef (the MSG part)
          filter: {event_types: ["request.failed", "hook.*"], verdicts: [block]}
        - kind: splunk_hec
          name: splunk
          url: https://splunk.example.com:8088
          token_env: NEXUS_SPLUNK_HEC_TOKEN
          filter: {statuses: ["5xx", "429"], orgs: [acme]}
        - kind: elastic
          name: elastic
          url: https://es.example.com:9200
          index: nexus-events
          api_key_env: NEXUS_ELASTIC_API_KEY
        - kind: webhook
          name: hook
          url: https://hooks.example.com/nexus
          signing_secret_env: NEXUS_WEBHOOK_SECRET   # X-Nexus-Signature: sha256=<hmac>
          include_bodies: false     # bodies leave only when a sink says so
          max_attempts: 5           # rejections before the dead-letter subject
          deliver: new              # where a new sink starts: new | all
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

from streams.config_base import ConfigError, Strict
from streams.config_checks import check_outbound_url

# JetStream durable names may not contain dots or spaces; a sink name becomes
# part of its consumer name and of its dead-letter subject.
_SINK_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_STATUS = re.compile(r"^[1-5]([0-9]{2}|xx)$")


class AuditConfig(Strict, frozen=True):
    """What the audit processor keeps.  The hash chain covers body digests,
    never bodies, so purging bodies by this policy never breaks the chain."""

    enabled: bool = True
    # Copy inline request/response bodies into the audit body table (the
    # digest is always chained, whether or not the bytes are kept).
    store_bodies: bool = True
    # Days after which stored bodies / spilled objects are purged; 0 keeps
    # them forever.
    body_retention_days: int = 30
    spill_retention_days: int = 30
    # Records per transaction at most (a backlog is appended in batches this
    # big; a single event still commits at once): 1,000 appends ~25 % more
    # records/s than 256.
    batch_size: int = 1000


class SinkFilter(Strict, frozen=True):
    """Every non-empty list must match (AND); an empty list matches all.
    ``event_types`` entries are exact tags or a prefix ending in ``*``
    ("request.*").  ``statuses`` are HTTP statuses ("429") or classes
    ("5xx"); ``verdicts`` match a verdict/decision/action field.  An event
    without the field does not match a non-empty list."""

    event_types: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    verdicts: tuple[str, ...] = ()
    orgs: tuple[str, ...] = ()


class _SinkBase(Strict, tag_field="kind", frozen=True):
    name: str
    enabled: bool = True
    filter: SinkFilter = SinkFilter()
    # Bodies leave Nexus only when a sink's policy says so; otherwise only
    # their digest (sha256, size) is forwarded.
    include_bodies: bool = False
    # A record the sink *rejects* (a 4xx, a per-item error) is retried this
    # many times, then sent to the dead-letter subject.  An unreachable or
    # failing sink (connection error, timeout, 5xx, 429, 401/403) is an
    # outage: the backlog stays in the stream and is retried with backoff
    # until the sink returns, never dead-lettered.
    max_attempts: int = 5
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    batch_size: int = 100
    # Where a new consumer starts: "new" (events from now on) or "all"
    # (everything the stream still holds).
    deliver: Literal["new", "all"] = "new"
    allow_private_network: bool = False
    timeout_s: float = 10.0
    # The largest message the receiver takes whole, in bytes; a longer
    # record is split (its largest list across several messages) or its
    # longest strings shortened.  0: the kind's default (syslog over TCP or
    # TLS 8192, rsyslog's own default; UDP 2048, what RFC 5426 receivers
    # must accept; Splunk HEC 10000, its default TRUNCATE; Elastic and
    # webhooks 1 MiB).
    max_message_bytes: int = 0


class SyslogSink(_SinkBase, tag="syslog", kw_only=True, frozen=True):
    """RFC 5424 over TCP (octet counting, RFC 6587), TLS (RFC 5425) or UDP
    (RFC 5426).  ``format`` is the MSG part: JSON or CEF."""

    host: str
    port: int
    transport: Literal["tcp", "tls", "udp"] = "tcp"
    format: Literal["json", "cef"] = "json"
    facility: int = 13  # log audit
    app_name: str = "nexus"
    hostname: str = ""  # default: this machine's name
    tls_ca_file: str | None = None  # default: the system trust store
    tls_server_name: str | None = None
    tls_cert_file: str | None = None  # client certificate (mutual TLS)
    tls_key_file: str | None = None
    # TCP and TLS: a batch counts as delivered (and is acknowledged to
    # JetStream) only once the receiver's TCP has acknowledged every byte of
    # it and the connection has stayed open this long after that.  A
    # receiver that restarts closes the connection; everything written in
    # the last confirm_after_s is sent again (duplicates are possible, loss
    # is not: receivers deduplicate by event id).
    confirm_after_s: float = 1.0


class SplunkHecSink(_SinkBase, tag="splunk_hec", kw_only=True, frozen=True):
    url: str  # base URL; /services/collector/event is appended when no path is given
    token_env: str
    index: str = ""
    source: str = "nexus"
    sourcetype: str = "nexus:event"


class ElasticSink(_SinkBase, tag="elastic", kw_only=True, frozen=True):
    url: str  # base URL; /_bulk is appended
    index: str = "nexus-events"
    api_key_env: str | None = None  # Authorization: ApiKey <value>


class WebhookSink(_SinkBase, tag="webhook", kw_only=True, frozen=True):
    url: str
    token_env: str | None = None  # Authorization: Bearer <value>
    # HMAC-SHA256 of the body under this secret, in X-Nexus-Signature.
    signing_secret_env: str | None = None
    headers: Mapping[str, str] = {}


Sink = SyslogSink | SplunkHecSink | ElasticSink | WebhookSink


class SiemConfig(Strict, frozen=True):
    sinks: tuple[Sink, ...] = ()


_FORBIDDEN_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


def _check_common(s: _SinkBase, where: str) -> None:
    if s.max_attempts < 1:
        raise ConfigError(f"{where}.max_attempts: must be at least 1")
    if s.backoff_initial_s <= 0 or s.backoff_max_s < s.backoff_initial_s:
        raise ConfigError(f"{where}: backoff_initial_s must be > 0 and <= backoff_max_s")
    if not 1 <= s.batch_size <= 10_000:
        raise ConfigError(f"{where}.batch_size: must be 1-10000")
    if s.timeout_s <= 0:
        raise ConfigError(f"{where}.timeout_s: must be positive")
    if s.max_message_bytes and not 480 <= s.max_message_bytes <= 64 * 1024 * 1024:
        raise ConfigError(f"{where}.max_message_bytes: 480 bytes to 64 MiB (0: the kind's default)")
    for st in s.filter.statuses:
        if not _STATUS.match(st):
            raise ConfigError(f"{where}.filter.statuses: {st!r} is not a status like 429 or 5xx")


def validate_siem(siem: SiemConfig, *, known_orgs: set[str] | None = None) -> None:
    """Raise ConfigError for the first bad sink.  ``known_orgs``, when given,
    catches a filter that names an org the file does not define."""
    names: set[str] = set()
    for i, s in enumerate(siem.sinks):
        where = f"siem.sinks[{i}]"
        if not _SINK_NAME.match(s.name):
            raise ConfigError(f"{where}.name: {s.name!r} must be 1-64 letters, digits, _ or -")
        if s.name in names:
            raise ConfigError(f"{where}.name: duplicate sink {s.name!r}")
        names.add(s.name)
        _check_common(s, where)
        if known_orgs is not None:
            for org in s.filter.orgs:
                if org not in known_orgs:
                    raise ConfigError(f"{where}.filter.orgs: unknown org {org!r}")
        if isinstance(s, SyslogSink):
            if not 0 < s.port < 65536:
                raise ConfigError(f"{where}.port: must be 1-65535")
            if not 0 <= s.facility <= 23:
                raise ConfigError(f"{where}.facility: must be 0-23")
            if (s.tls_cert_file is None) != (s.tls_key_file is None):
                raise ConfigError(f"{where}: tls_cert_file and tls_key_file go together")
            if not 0 <= s.confirm_after_s <= 60:
                raise ConfigError(f"{where}.confirm_after_s: 0 to 60 seconds")
            if s.transport == "udp" and s.max_message_bytes > 65_000:
                raise ConfigError(f"{where}.max_message_bytes: a UDP datagram holds at most 65000 bytes here")
            host = f"[{s.host}]" if ":" in s.host else s.host
            # The guard speaks URLs; a syslog target is checked as one so the
            # same private/loopback/link-local rules apply.
            check_outbound_url(
                f"https://{host}:{s.port}/", allow_private=s.allow_private_network, where=f"{where}.host"
            )
        else:
            check_outbound_url(s.url, allow_private=s.allow_private_network, where=f"{where}.url")
        if isinstance(s, WebhookSink):
            for h in s.headers:
                if h.lower() in _FORBIDDEN_HEADERS:
                    raise ConfigError(
                        f"{where}.headers: {h!r} would put a credential in the file; use token_env"
                    )


def validate_audit(audit: AuditConfig) -> None:
    if audit.body_retention_days < 0 or audit.spill_retention_days < 0:
        raise ConfigError("audit: retention days must not be negative (0 keeps forever)")
    if not 1 <= audit.batch_size <= 10_000:
        raise ConfigError("audit.batch_size: must be 1-10000")
