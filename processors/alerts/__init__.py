"""The alerts worker: rules on events (budgets, block/redact rates, nodes
offline, SIEM dead letters, audit chain breaks) delivered to webhook,
Slack, PagerDuty and e-mail channels, deduplicated, rate-limited, with a
delivery log.  See docs/alerts.md."""

from processors.alerts.embed import start_alerts
from processors.alerts.worker import AlertsWorker

__all__ = ["AlertsWorker", "start_alerts"]
