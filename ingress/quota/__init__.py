"""Quota checks on the hot path: estimate, reserve across every axis in one
Valkey call, decide (admit / reject / downgrade, with warnings), headers.
Settlement happens in processors/quota from the usage events."""

from ingress.quota.estimate import estimate_prompt_tokens, seed_tiktoken_cache
from ingress.quota.gate import CounterState, QuotaDecision, QuotaGate, QuotaUnavailable, quota_headers
from ingress.quota.stream import StreamMeter
from ingress.quota.usage import KeyUsage, LimitUsage, key_usage

__all__ = [
    "CounterState",
    "KeyUsage",
    "LimitUsage",
    "QuotaDecision",
    "QuotaGate",
    "QuotaUnavailable",
    "StreamMeter",
    "estimate_prompt_tokens",
    "key_usage",
    "quota_headers",
    "seed_tiktoken_cache",
]
