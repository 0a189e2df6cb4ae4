"""Upstream errors -> canonical errors.

The caller-facing message is ours: a provider's error text can quote the
prompt, so only its identifiers (type, code, param) are carried over.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

import msgspec

from adapters.canonical import CanonicalError
from adapters.openai.wire import ErrorBody, ErrorEnvelope

_envelope = msgspec.json.Decoder(ErrorEnvelope)


def provider_error(body: bytes) -> ErrorBody | None:
    try:
        env = _envelope.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if isinstance(env.error, str):
        return ErrorBody(message=env.error)
    return env.error


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """``retry-after-ms`` (OpenAI) or ``Retry-After`` as seconds or an HTTP date."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(float(ms) / 1000, 0.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _detail(err: ErrorBody | None) -> str:
    if err is None:
        return ""
    parts = []
    if err.type:
        parts.append(f"type {err.type}")
    if err.code is not None and isinstance(err.code, str | int):
        parts.append(f"code {err.code}")
    if err.param:
        parts.append(f"param {err.param}")
    return f" ({', '.join(parts)})" if parts else ""


def normalise_error(status: int, body: bytes, headers: Mapping[str, str]) -> CanonicalError:
    lower = {k.lower(): v for k, v in headers.items()}
    detail = _detail(provider_error(body))
    if status in (400, 409, 413, 415, 422):
        return CanonicalError(
            code="invalid_request",
            message=f"the provider rejected the request as invalid{detail}",
            status=413 if status == 413 else 400,
            provider_status=status,
        )
    if status in (401, 403):
        # The provider refused *our* credential: the caller's key was fine,
        # so this is a gateway-side failure (502), not a 401 for the caller.
        return CanonicalError(
            code="auth_failed",
            message=f"the provider refused the gateway's credential (HTTP {status}){detail}",
            status=502,
            provider_status=status,
        )
    if status == 429:
        return CanonicalError(
            code="rate_limited",
            message=f"the provider is rate limiting requests{detail}",
            status=429,
            provider_status=status,
            retryable=True,
            retry_after_s=retry_after_seconds(lower),
        )
    if status in (408, 504):
        return CanonicalError(
            code="timeout",
            message=f"the provider timed out (HTTP {status})",
            status=504,
            provider_status=status,
            retryable=True,
            retry_after_s=retry_after_seconds(lower),
        )
    return CanonicalError(
        code="upstream_error",
        message=f"the provider failed (HTTP {status}){detail}",
        status=502,
        provider_status=status,
        retryable=status >= 500,
        retry_after_s=retry_after_seconds(lower),
    )
