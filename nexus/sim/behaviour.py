"""Per-request behaviour: the server's settings, overridden by ``x-sim-*``
request headers, so one sim can serve a healthy and a failing request side by
side (and a gateway can target a failure mode through a provider's
configured headers).

Headers:
  x-sim-delay-ms          latency before the response headers
  x-sim-ttft-ms           delay before the first token
  x-sim-tokens-per-s      token rate (0 = unthrottled)
  x-sim-fail-status       answer with this HTTP status and an OpenAI-shaped error
  x-sim-retry-after       Retry-After seconds sent with a 429/503 (default 1)
  x-sim-drop-after        drop the stream (abort the connection) after N content chunks
  x-sim-error-after       send an OpenAI error frame (data: {"error": ...}) after N content chunks
  x-sim-hang              "1": never answer
  x-sim-cached-tokens     report this many cached prompt tokens
  x-sim-reasoning-tokens  report this many reasoning tokens (added to completion tokens)
  x-sim-omit-usage        "1": send no usage at all
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from nexus.sim.settings import SimSettings


class Behaviour(msgspec.Struct, kw_only=True):
    delay_ms: float = 0.0
    ttft_ms: float = 0.0
    tokens_per_s: float = 0.0
    fail_status: int = 0
    retry_after: str = "1"
    drop_after: int = -1
    error_after: int = -1
    hang: bool = False
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    omit_usage: bool = False


class BadSimHeader(ValueError):
    pass


def _number(headers: Mapping[str, str], name: str, default: float) -> float:
    raw = headers.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadSimHeader(f"{name} must be a number") from None
    if value < 0 and name not in ("x-sim-drop-after", "x-sim-error-after"):
        raise BadSimHeader(f"{name} must not be negative")
    return value


def resolve(settings: SimSettings, headers: Mapping[str, str], request_number: int) -> Behaviour:
    scheduled_failure = (
        settings.fail_status
        if settings.fail_status and request_number % max(settings.fail_every, 1) == 0
        else 0
    )
    fail = int(_number(headers, "x-sim-fail-status", scheduled_failure))
    if fail and not 400 <= fail <= 599:
        raise BadSimHeader("x-sim-fail-status must be an HTTP error status (400-599)")
    return Behaviour(
        delay_ms=_number(headers, "x-sim-delay-ms", settings.latency_ms),
        ttft_ms=_number(headers, "x-sim-ttft-ms", settings.ttft_ms),
        tokens_per_s=_number(headers, "x-sim-tokens-per-s", settings.tokens_per_s),
        fail_status=fail,
        retry_after=headers.get("x-sim-retry-after", "1"),
        drop_after=int(_number(headers, "x-sim-drop-after", settings.drop_after)),
        error_after=int(_number(headers, "x-sim-error-after", -1)),
        hang=headers.get("x-sim-hang", "1" if settings.hang else "0") == "1",
        cached_tokens=int(_number(headers, "x-sim-cached-tokens", 0)),
        reasoning_tokens=int(_number(headers, "x-sim-reasoning-tokens", 0)),
        omit_usage=headers.get("x-sim-omit-usage") == "1",
    )
