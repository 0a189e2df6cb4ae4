"""The ``alerts:`` section: rules on events and the channels they notify
(the worker is ``processors.alerts``; docs/alerts.md).

Secrets are never in the section: a channel names the environment variable
or the file (readable by its owner only) that holds its signing secret,
routing key, SMTP password or secret webhook URL.  Every webhook target goes
through the SSRF guard (``streams.config_checks.check_outbound_url``), and
the worker checks the addresses a name resolves to at every connect.

An example (``tests/alerts/test_config.py`` loads it)::

    alerts:
      channels:
        - kind: webhook
          name: ops
          url: https://hooks.example.com/nexus
          signing_secret_env: NEXUS_ALERTS_WEBHOOK_SECRET
        - kind: slack
          name: chat
          url_env: NEXUS_ALERTS_SLACK_URL     # the webhook URL is the secret
        - kind: pagerduty
          name: pager
          routing_key_env: NEXUS_ALERTS_PD_KEY
          min_severity: critical
        - kind: email
          name: mail
          host: smtp.example.com
          port: 587
          starttls: true
          username: nexus
          password_env: NEXUS_ALERTS_SMTP_PASSWORD
          sender: nexus@example.com
          to: [oncall@example.com]
      rules:
        - {kind: budget, name: budgets, thresholds: [0.8, 1.0], channels: [ops, mail]}
        - {kind: block_rate, name: blocks, decisions: [block], window_s: 300, min_count: 20, per: org,
           channels: [ops, chat]}
        - {kind: node_offline, name: nodes, channels: [pager]}
        - {kind: node_drift, name: drift, channels: [ops]}
        - {kind: siem_dead_letters, name: siem, channels: [ops]}
        - {kind: audit_chain, name: audit-chain, channels: [pager, mail]}
"""

from __future__ import annotations

import re
from typing import Literal

from streams.config_base import ConfigError, Strict
from streams.config_checks import check_outbound_url

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_ADDRESS = re.compile(r"^[^@\s<>\"',;]+@[^@\s<>\"',;]+\.[^@\s<>\"',;]+$")

Severity = Literal["info", "warning", "error", "critical"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "error": 2, "critical": 3}


class _ChannelBase(Strict, tag_field="kind", kw_only=True, frozen=True):
    name: str
    enabled: bool = True
    # Alerts below this severity are not sent here.
    min_severity: Severity = "info"
    # At most this many notifications a minute leave through this channel
    # (a token bucket: bursts up to the same number); the rest are recorded
    # in the delivery log as rate_limited and not sent.
    rate_per_minute: int = 30
    # A delivery that fails (connection error, timeout, 5xx, 429) is tried
    # again with exponential backoff, this many attempts in all; then it is
    # recorded as failed with the reason.  A 4xx other than 408/429 is final.
    max_attempts: int = 4
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    timeout_s: float = 10.0


class _HttpChannel(_ChannelBase, kw_only=True, frozen=True):
    # The URL, or the environment variable / file holding it (Slack's and
    # some webhooks' URLs carry their credential).  One of the three.
    url: str = ""
    url_env: str = ""
    url_file: str = ""
    # SSRF guard: private, loopback and link-local targets are refused
    # unless the operator says so here.
    allow_private_network: bool = False


class WebhookChannel(_HttpChannel, tag="webhook", kw_only=True, frozen=True):
    """A JSON POST signed with HMAC-SHA256 over ``<timestamp>.<body>``
    (headers X-Nexus-Timestamp, X-Nexus-Signature: v1=<hex>)."""

    signing_secret_env: str = ""
    signing_secret_file: str = ""


class SlackChannel(_HttpChannel, tag="slack", kw_only=True, frozen=True):
    """A Slack incoming webhook (``text`` plus Block Kit blocks)."""


class PagerDutyChannel(_HttpChannel, tag="pagerduty", kw_only=True, frozen=True):
    """PagerDuty Events API v2: trigger, and resolve when the condition ends."""

    url: str = "https://events.pagerduty.com/v2/enqueue"
    routing_key_env: str = ""
    routing_key_file: str = ""


class EmailChannel(_ChannelBase, kw_only=True, frozen=True, tag="email"):
    host: str
    port: int = 587
    # STARTTLS after EHLO (required when set: a server that does not offer
    # it fails the delivery); ``tls``: implicit TLS from the first byte (465).
    starttls: bool = True
    tls: bool = False
    tls_ca_file: str = ""  # default: the system trust store
    username: str = ""
    password_env: str = ""
    password_file: str = ""
    sender: str
    to: tuple[str, ...]
    subject_prefix: str = "[nexus]"
    allow_private_network: bool = False


Channel = WebhookChannel | SlackChannel | PagerDutyChannel | EmailChannel


class _RuleBase(Strict, tag_field="kind", kw_only=True, frozen=True):
    name: str
    enabled: bool = True
    channels: tuple[str, ...]
    # An alert with the same rule and subject is sent once per this window
    # (default: the section's dedup_window_s); repeats are counted and the
    # next one sent says how many were suppressed.
    dedup_window_s: float | None = None


class BudgetRule(_RuleBase, tag="budget", kw_only=True, frozen=True):
    """A budget's settled spend (USD, tokens or requests) crossed one of its
    ``alert_at`` fractions (the quota processor's quota.alert events).
    ``thresholds``: only these fractions (empty: every one).  Severity:
    ``critical`` at or past the limit, else ``warning``."""

    thresholds: tuple[float, ...] = ()
    budgets: tuple[str, ...] = ()  # only these budget ids (empty: all)


class BlockRateRule(_RuleBase, tag="block_rate", kw_only=True, frozen=True):
    """At least ``min_count`` stage decisions in ``decisions`` within
    ``window_s`` (sliding, by the events' own time) for one org / key /
    the whole fleet; optionally also at least ``min_ratio`` of all the
    decisions of that scope in the window."""

    decisions: tuple[Literal["block", "redact"], ...] = ("block",)
    window_s: float = 300.0
    min_count: int = 10
    min_ratio: float = 0.0
    per: Literal["org", "key", "global"] = "org"
    severity: Severity = "warning"


class NodeOfflineRule(_RuleBase, tag="node_offline", kw_only=True, frozen=True):
    """A node whose heartbeat is ``missed_beats`` intervals late is offline
    (resolved when it beats again)."""

    missed_beats: int = 3
    node_kinds: tuple[str, ...] = ()  # only these kinds (empty: all)
    severity: Severity = "error"


class NodeDriftRule(_RuleBase, tag="node_drift", kw_only=True, frozen=True):
    """A thing of the fleet that did not converge on its desired config
    after its re-pushes is in drift (the Hub's fleet sync records); resolved
    when it catches up."""

    things: tuple[str, ...] = ()  # only these thing ids (empty: all)
    severity: Severity = "warning"


class SiemDeadLetterRule(_RuleBase, tag="siem_dead_letters", kw_only=True, frozen=True):
    """A SIEM sink dead-lettered a record (its receiver refused it for
    good); one alert per sink per window."""

    severity: Severity = "error"


class AuditChainRule(_RuleBase, tag="audit_chain", kw_only=True, frozen=True):
    """A verification of the audit hash chain found a break
    (``nexus audit verify`` publishes audit.verified)."""

    severity: Severity = "critical"


Rule = BudgetRule | BlockRateRule | NodeOfflineRule | NodeDriftRule | SiemDeadLetterRule | AuditChainRule


class AlertsConfig(Strict, kw_only=True, frozen=True):
    enabled: bool = True
    channels: tuple[Channel, ...] = ()
    rules: tuple[Rule, ...] = ()
    dedup_window_s: float = 3600.0


def _check_secret_source(where: str, field: str, env: str, file: str, *, required: bool) -> None:
    if env and file:
        raise ConfigError(f"{where}: {field}_env or {field}_file, not both")
    if required and not (env or file):
        raise ConfigError(f"{where}: {field}_env or {field}_file is required")
    if env and not _ENV.match(env):
        raise ConfigError(f"{where}.{field}_env: {env!r} is not an environment variable name")


def _check_channel(c: Channel, where: str) -> None:
    if not _NAME.match(c.name):
        raise ConfigError(f"{where}.name: {c.name!r} must be 1-64 letters, digits, _ or -")
    if not 1 <= c.rate_per_minute <= 10_000:
        raise ConfigError(f"{where}.rate_per_minute: 1 to 10000")
    if not 1 <= c.max_attempts <= 20:
        raise ConfigError(f"{where}.max_attempts: 1 to 20")
    if c.backoff_initial_s <= 0 or c.backoff_max_s < c.backoff_initial_s:
        raise ConfigError(f"{where}: backoff_initial_s must be > 0 and <= backoff_max_s")
    if not 0 < c.timeout_s <= 120:
        raise ConfigError(f"{where}.timeout_s: more than 0, at most 120 seconds")
    if isinstance(c, EmailChannel):
        if not 0 < c.port < 65536:
            raise ConfigError(f"{where}.port: must be 1-65535")
        if c.starttls and c.tls:
            raise ConfigError(f"{where}: starttls or tls (implicit), not both")
        _check_secret_source(where, "password", c.password_env, c.password_file, required=False)
        if (c.password_env or c.password_file) and not c.username:
            raise ConfigError(f"{where}.username: required with a password")
        for field, value in (("sender", c.sender), *((f"to[{i}]", a) for i, a in enumerate(c.to))):
            if not _ADDRESS.match(value):
                raise ConfigError(f"{where}.{field}: {value!r} is not an e-mail address")
        if not c.to:
            raise ConfigError(f"{where}.to: at least one recipient")
        host = f"[{c.host}]" if ":" in c.host else c.host
        # The guard speaks URLs; the SMTP server is checked as one so the
        # same private/loopback/link-local rules apply.
        check_outbound_url(
            f"https://{host}:{c.port}/", allow_private=c.allow_private_network, where=f"{where}.host"
        )
        return
    sources = [s for s in (c.url, c.url_env, c.url_file) if s]
    if isinstance(c, PagerDutyChannel):
        # url has a default: the environment or a file may override it.
        sources = [c.url_env or c.url_file or c.url]
        if c.url_env and c.url_file:
            raise ConfigError(f"{where}: url_env or url_file, not both")
        _check_secret_source(where, "routing_key", c.routing_key_env, c.routing_key_file, required=True)
    elif len(sources) != 1:
        raise ConfigError(f"{where}: give one of url, url_env, url_file")
    if c.url_env and not _ENV.match(c.url_env):
        raise ConfigError(f"{where}.url_env: {c.url_env!r} is not an environment variable name")
    if c.url and not (c.url_env or c.url_file):
        check_outbound_url(c.url, allow_private=c.allow_private_network, where=f"{where}.url")
    if isinstance(c, WebhookChannel):
        _check_secret_source(
            where, "signing_secret", c.signing_secret_env, c.signing_secret_file, required=True
        )


def _check_rule(r: Rule, where: str, channels: set[str]) -> None:
    if not _NAME.match(r.name):
        raise ConfigError(f"{where}.name: {r.name!r} must be 1-64 letters, digits, _ or -")
    if not r.channels:
        raise ConfigError(f"{where}.channels: at least one channel")
    for ch in r.channels:
        if ch not in channels:
            raise ConfigError(f"{where}.channels: unknown channel {ch!r}")
    if r.dedup_window_s is not None and not 0 <= r.dedup_window_s <= 30 * 86400:
        raise ConfigError(f"{where}.dedup_window_s: 0 to 30 days")
    if isinstance(r, BudgetRule):
        for t in r.thresholds:
            if not 0 < t <= 10:
                raise ConfigError(f"{where}.thresholds: {t} is not a fraction of the limit in (0, 10]")
    elif isinstance(r, BlockRateRule):
        if not r.decisions:
            raise ConfigError(f"{where}.decisions: block, redact or both")
        if not 1 <= r.window_s <= 86400:
            raise ConfigError(f"{where}.window_s: 1 second to 1 day")
        if not 1 <= r.min_count <= 1_000_000:
            raise ConfigError(f"{where}.min_count: 1 to 1000000")
        if not 0 <= r.min_ratio <= 1:
            raise ConfigError(f"{where}.min_ratio: a fraction in [0, 1]")
    elif isinstance(r, NodeOfflineRule) and not 1 <= r.missed_beats <= 1000:
        raise ConfigError(f"{where}.missed_beats: 1 to 1000")


def validate_alerts(alerts: AlertsConfig) -> None:
    """Raise ConfigError naming the first bad field of the section."""
    if not 0 <= alerts.dedup_window_s <= 30 * 86400:
        raise ConfigError("alerts.dedup_window_s: 0 to 30 days")
    names: set[str] = set()
    for i, c in enumerate(alerts.channels):
        where = f"alerts.channels[{i}]"
        _check_channel(c, where)
        if c.name in names:
            raise ConfigError(f"{where}.name: duplicate channel {c.name!r}")
        names.add(c.name)
    rules: set[str] = set()
    for i, r in enumerate(alerts.rules):
        where = f"alerts.rules[{i}]"
        _check_rule(r, where, names)
        if r.name in rules:
            raise ConfigError(f"{where}.name: duplicate rule {r.name!r}")
        rules.add(r.name)
