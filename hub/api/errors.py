"""The admin API's one error shape and its stable codes.

Every error is ``{"error": {"code", "message", "field"?, "current_version"?,
"request_id"}}`` with one of the codes below; bad input is a 4xx naming the
field, never a 500; an unexpected failure is a 500 that says only that
(the log has the rest, keyed by request id).
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

from hub.commands import DomainError

CODES: Final[dict[str, int]] = {
    "invalid_json": 400,
    "invalid_field": 422,
    "invalid_query": 400,
    "unauthenticated": 401,
    "invalid_credentials": 401,
    "access_denied": 403,
    "csrf_required": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "already_exists": 409,
    "version_conflict": 409,
    "in_use": 409,
    "invalid_transition": 409,
    "precondition_required": 428,
    "unsupported_media_type": 415,
    "payload_too_large": 413,
    "rate_limited": 429,
    "locked_out": 429,
    "busy": 503,
    "unavailable": 503,
    "internal": 500,
}


class ErrorBody(msgspec.Struct, omit_defaults=True, kw_only=True):
    code: str
    message: str
    request_id: str = ""
    field: str | None = None
    current_version: int | None = None


class ErrorDocument(msgspec.Struct):
    error: ErrorBody


class ApiError(Exception):
    def __init__(
        self,
        code: str,
        message: str,
        *,
        field: str | None = None,
        current_version: int | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        assert code in CODES, code
        self.code = code
        self.status = CODES[code]
        self.message = message
        self.field = field
        self.current_version = current_version
        self.retry_after_s = retry_after_s

    def body(self, request_id: str) -> ErrorDocument:
        return ErrorDocument(
            ErrorBody(
                code=self.code,
                message=self.message,
                request_id=request_id,
                field=self.field,
                current_version=self.current_version,
            )
        )


def from_domain(exc: DomainError) -> ApiError:
    code = exc.code if exc.code in CODES else "invalid_field"
    return ApiError(code, exc.message, field=exc.field, current_version=exc.current_version)


_AT = re.compile(r" - at `\$\.?([^`]*)`$")
_UNKNOWN = re.compile(r"unknown field `([^`]*)`")


def from_validation(exc: msgspec.ValidationError, prefix: str = "") -> ApiError:
    """A msgspec error on a request body, with the field it names."""
    text = str(exc)
    m = _AT.search(text)
    path = m.group(1) if m else ""
    message = text[: m.start()] if m else text
    unknown = _UNKNOWN.search(message)
    if unknown:
        path = f"{path}.{unknown.group(1)}" if path else unknown.group(1)
    if prefix:
        path = f"{prefix}.{path}" if path else prefix
    return ApiError("invalid_field", f"{path}: {message}" if path else message, field=path or None)
