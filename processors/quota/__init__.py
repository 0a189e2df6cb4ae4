"""processors/quota: settles UsageRecorded events on the Valkey quota
counters, exactly once, and emits QuotaAlert events."""

from processors.quota.replay import ReplayReport, replay_quotas
from processors.quota.settle import Settler, plan
from processors.quota.worker import QuotaProcessor

__all__ = ["QuotaProcessor", "ReplayReport", "Settler", "plan", "replay_quotas"]
