"""Google API error bodies ({"error": {code, message, status}}) -> canonical
codes.  The same shape serves Gemini and Vertex."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from adapters.canonical import CanonicalError, ErrorCode
from adapters.gemini import wire as w
from adapters.wirekit import errors as e

# google.rpc.Code names
STATUS_TO_CODE: dict[str, ErrorCode] = {
    "INVALID_ARGUMENT": "invalid_request",
    "FAILED_PRECONDITION": "invalid_request",
    "OUT_OF_RANGE": "invalid_request",
    "NOT_FOUND": "invalid_request",
    "ALREADY_EXISTS": "invalid_request",
    "UNAUTHENTICATED": "auth_failed",
    "PERMISSION_DENIED": "auth_failed",
    "RESOURCE_EXHAUSTED": "rate_limited",
    "DEADLINE_EXCEEDED": "timeout",
    "UNIMPLEMENTED": "not_implemented",
    "INTERNAL": "upstream_error",
    "UNAVAILABLE": "upstream_error",
    "UNKNOWN": "upstream_error",
    "ABORTED": "upstream_error",
    "CANCELLED": "upstream_error",
}

_decode = msgspec.json.Decoder(w.ErrorBody | list[w.ErrorBody]).decode


def from_detail(provider: str, detail: w.ErrorDetail, status: int | None) -> CanonicalError:
    http = status or detail.code or 502
    code = STATUS_TO_CODE.get(detail.status) or e.code_for_status(http)
    return e.make(code, f"{provider}: {detail.status or 'error'} (HTTP {http})", provider_status=http)


def normalise(provider: str, status: int, body: bytes, headers: Mapping[str, str]) -> CanonicalError:
    try:
        parsed = _decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return e.from_status(provider, status, None, headers)
    # streamGenerateContent without alt=sse answers errors as a JSON array.
    if isinstance(parsed, list):
        if not parsed:
            return e.from_status(provider, status, None, headers)
        parsed = parsed[0]
    err = from_detail(provider, parsed.error, status)
    err.retry_after_s = e.retry_after(headers)
    return err
