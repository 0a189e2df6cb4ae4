"""Alerting events (``processors.alerts``): an alert a rule raised, what
became of each notification, and the audit chain's verification result
that one of the rules watches.

The delivery log (the ``alert_delivery`` read model) is built from
``alert.raised`` and ``alert.delivery`` alone, so replaying the traffic
stream rebuilds it.  Neither event carries a secret, a webhook URL or a
receiver's answer body: reasons are our words (``HTTP 503``,
``ConnectionRefusedError``).
"""

from __future__ import annotations

from streams.events import Event


class AlertRaised(Event, tag="alert.raised"):
    """A rule fired for a subject and was not suppressed as a duplicate.
    Its id is derived from the dedup key and the time it was sent, so a
    worker that crashes before acknowledging its source event raises it
    once (the stream's duplicate window)."""

    rule: str = ""  # the rule's name in the alerts: section
    rule_kind: str = ""  # budget | block_rate | node_offline | siem_dead_letters | audit_chain
    subject: str = ""  # what it is about: a budget counter, an org, a node, a sink
    dedup_key: str = ""  # rule + subject: the same key is sent once per window
    severity: str = "warning"  # info | warning | error | critical
    status: str = "firing"  # firing | resolved
    title: str = ""
    summary: str = ""
    details: dict[str, str] = {}
    channels: list[str] = []  # the channels it is sent to
    suppressed: int = 0  # duplicates suppressed since the last one sent
    source_event_id: str = ""  # the event that made it fire ("" for a timer)


class AlertDelivery(Event, tag="alert.delivery"):
    """One alert on one channel: delivered, failed (after its attempts, with
    the reason) or not sent because the channel's rate limit was reached."""

    alert_id: str = ""
    rule: str = ""
    channel: str = ""
    channel_kind: str = ""  # webhook | slack | pagerduty | email
    outcome: str = ""  # delivered | failed | rate_limited
    attempts: int = 0
    status_code: int = 0  # the receiver's last HTTP status or SMTP reply code (0: none)
    reason: str = ""  # our words, never a receiver's body
    elapsed_ms: float = 0.0


class AuditVerified(Event, tag="audit.verified"):
    """A verification of the audit hash chain (``nexus audit verify``) and
    its result: ``ok`` false names the first break."""

    ok: bool = True
    first_n: int = 0
    last_n: int = 0
    checked: int = 0
    head_n: int = 0
    broken_n: int = 0  # the first record that does not verify (0: none)
    broken_event_id: str = ""
    reason: str = ""  # what is wrong there (missing, altered, inserted...)


AlertEvent = AlertRaised | AlertDelivery | AuditVerified
