"""Anthropic error bodies -> the canonical error codes."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from adapters.anthropic import wire as w
from adapters.canonical import CanonicalError, ErrorCode
from adapters.wirekit import errors as e

# https://docs.anthropic.com/en/api/errors
TYPE_TO_CODE: dict[str, ErrorCode] = {
    "invalid_request_error": "invalid_request",
    "request_too_large": "invalid_request",
    "authentication_error": "auth_failed",
    "permission_error": "auth_failed",
    "billing_error": "auth_failed",
    "not_found_error": "invalid_request",
    "rate_limit_error": "rate_limited",
    "timeout_error": "timeout",
    "api_error": "upstream_error",
    "overloaded_error": "upstream_error",
}


def error_from_detail(detail: w.ErrorDetail, status: int | None) -> CanonicalError:
    code = TYPE_TO_CODE.get(detail.type) or (e.code_for_status(status) if status else "upstream_error")
    # 529 overloaded is Anthropic's "try again shortly": retryable, and the
    # caller sees 503 rather than a bare 529 few clients know.
    override = 503 if detail.type == "overloaded_error" else None
    where = f"HTTP {status}" if status else "mid-stream"
    return e.make(code, f"anthropic: {detail.type} ({where})", provider_status=status, status=override)


def normalise(status: int, body: bytes, headers: Mapping[str, str]) -> CanonicalError:
    try:
        parsed = msgspec.json.decode(body, type=w.ErrorBody)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return e.from_status("anthropic", status, None, headers)
    err = error_from_detail(parsed.error, status)
    err.retry_after_s = e.retry_after(headers)
    return err
