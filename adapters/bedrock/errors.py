"""Bedrock errors -> canonical codes.  The error kind is in the
x-amzn-ErrorType header (HTTP) or the :exception-type header (stream);
the body carries only a message."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from adapters.bedrock import wire as w
from adapters.canonical import CanonicalError, ErrorCode
from adapters.wirekit import errors as e

TYPE_TO_CODE: dict[str, ErrorCode] = {
    "ValidationException": "invalid_request",
    "ResourceNotFoundException": "invalid_request",
    "ModelNotReadyException": "upstream_error",
    "AccessDeniedException": "auth_failed",
    "UnrecognizedClientException": "auth_failed",
    "InvalidSignatureException": "auth_failed",
    "ExpiredTokenException": "auth_failed",
    "ThrottlingException": "rate_limited",
    "ServiceQuotaExceededException": "rate_limited",
    "ModelTimeoutException": "timeout",
    "InternalServerException": "upstream_error",
    "ServiceUnavailableException": "upstream_error",
    "ModelStreamErrorException": "upstream_error",
    "ModelErrorException": "upstream_error",
}


def _kind(raw: str) -> str:
    # "ThrottlingException:http://internal.amazon.com/..." or a lowerCamel
    # stream name like "throttlingException".
    name = raw.split(":", 1)[0].strip()
    return name[:1].upper() + name[1:]


def from_kind(kind: str, status: int | None) -> CanonicalError:
    code = TYPE_TO_CODE.get(_kind(kind)) or (e.code_for_status(status) if status else "upstream_error")
    where = f"HTTP {status}" if status else "mid-stream"
    return e.make(code, f"bedrock: {_kind(kind) or 'error'} ({where})", provider_status=status)


def normalise(status: int, body: bytes, headers: Mapping[str, str]) -> CanonicalError:
    kind = next((v for k, v in headers.items() if k.lower() == "x-amzn-errortype"), "")
    if not kind:
        # Some paths put the type in the body as "__type" instead.
        try:
            kind = msgspec.json.decode(body, type=w.ErrorBody).type or ""
        except (msgspec.DecodeError, UnicodeDecodeError):
            kind = ""
    if not kind:
        return e.from_status("bedrock", status, None, headers)
    err = from_kind(kind, status)
    err.retry_after_s = e.retry_after(headers)
    return err
