"""Quota checks on the hot path: estimate, reserve across every axis in one
Valkey call, decide (admit / reject / downgrade, with warnings), headers.
Settlement happens in processors/quota from the usage events.

The gateway, per request (one ``QuotaGate`` per config snapshot)::

    prompt, out = gate.estimate(chat_request, model, provider)
    d = await gate.check(request_id=rid, org=..., project=..., key=..., user=...,
                         model=model, provider=provider,
                         prompt_tokens=prompt, max_output_tokens=out)
    if not d.admitted:           # 429 (QUOTA_EXCEEDED, RATE_LIMITED) or
        ...                      # QUOTA_MODEL_UNPRICED; d.headers() on it
    forward to d.model           # differs from the asked model after a downgrade;
                                 # cap max_tokens at d.output_cap when set
    response headers += d.headers()
    then publish UsageRecorded(request_id=rid, tenant=..., model=d.model, ...)
    or, when no usage will ever be recorded: await gate.release(rid)

``QuotaUnavailable`` (Valkey down) must fail closed (503) when limits apply.
"""

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
