"""Canonical error construction shared by the per-provider normalisers.

Every provider's normaliser reads its own error body for a provider-specific
error type, then lands on one of the 8 canonical codes; the HTTP status given
to the caller is fixed per code here, in one place.  The provider's message
text is never carried over: it can quote the prompt (STYLE 14); the caller
sees the provider's error type/status identifiers instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from email.utils import parsedate_to_datetime

from adapters.base import CodecError
from adapters.canonical import CanonicalError, ErrorCode

STATUS: dict[ErrorCode, int] = {
    "invalid_request": 400,
    # The provider refused the gateway's credential: the caller's key was
    # fine, so this is a gateway-side failure.
    "auth_failed": 502,
    "rate_limited": 429,
    "timeout": 504,
    "upstream_error": 502,
    "endpoint_unsupported": 404,
    "not_implemented": 501,
    "no_compatible_provider": 400,
}

RETRYABLE: frozenset[ErrorCode] = frozenset({"rate_limited", "timeout", "upstream_error"})

MAX_MESSAGE = 600


def make(
    code: ErrorCode,
    message: str,
    *,
    provider_status: int | None = None,
    retry_after_s: float | None = None,
    status: int | None = None,
) -> CanonicalError:
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + "…"
    return CanonicalError(
        code=code,
        message=message,
        status=status if status is not None else STATUS[code],
        provider_status=provider_status,
        retryable=code in RETRYABLE,
        retry_after_s=retry_after_s,
    )


def code_for_status(status: int) -> ErrorCode:
    if status in (401, 403):
        return "auth_failed"
    if status == 429:
        return "rate_limited"
    if status in (408, 504):
        return "timeout"
    if status == 404:
        return "endpoint_unsupported"
    if status == 501:
        return "not_implemented"
    if 400 <= status < 500:
        return "invalid_request"
    return "upstream_error"


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date)."""
    raw = None
    for k, v in headers.items():
        if k.lower() == "retry-after":
            raw = v.strip()
            break
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        from datetime import UTC, datetime

        return max(0.0, (parsedate_to_datetime(raw) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def from_status(
    provider: str, status: int, kind: str | None, headers: Mapping[str, str], code: ErrorCode | None = None
) -> CanonicalError:
    """``kind`` is the provider's error type identifier (never its message)."""
    code = code or code_for_status(status)
    text = f"{provider}: upstream returned HTTP {status}" + (f" ({kind})" if kind else "")
    return make(code, text, provider_status=status, retry_after_s=retry_after(headers))


def unsupported(provider: str, what: str) -> CodecError:
    """The caller asked for something this provider cannot express."""
    return CodecError(make("invalid_request", f"{provider}: {what}"))


def bad_upstream(provider: str, what: str) -> CodecError:
    """The provider sent something we could not read."""
    return CodecError(make("upstream_error", f"{provider}: {what}"))


def not_served(provider: str, what: str) -> CodecError:
    return CodecError(make("endpoint_unsupported", f"{provider} does not serve {what}"))
