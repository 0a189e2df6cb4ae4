"""Every error a caller can get from the gateway, in one place: the HTTP
status, the OpenAI error shape (``{"error":{message,type,code,param}}``)
and, for 429s, Retry-After.  Messages are our own words: never a prompt,
a key or a provider body."""

from __future__ import annotations

import math
import re
from typing import Any

import msgspec

from adapters.canonical import CanonicalError
from ingress.translate.anthropic_messages import ANTHROPIC_MESSAGES
from ingress.translate.gemini_generate import GEMINI_GENERATE, parse_path
from ingress.translate.grammar import Failure, Grammar
from ingress.translate.openai_chat import OPENAI_CHAT

_encoder = msgspec.json.Encoder()
_SLASHES = re.compile("/{2,}")


class GatewayError(Exception):
    def __init__(
        self,
        status: int,
        type: str,
        code: str,
        message: str,
        *,
        param: str | None = None,
        retry_after_s: float | None = None,
        stage: str = "validate",
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.code = code
        self.message = message
        self.param = param
        self.retry_after_s = retry_after_s
        self.stage = stage
        # The connection cannot carry another request (the body was not read
        # to its end, or its framing is broken): answer with Connection: close.
        self.close = close

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}

    def failure(self) -> Failure:
        return Failure(self.status, self.type, self.code, self.message, self.param)

    def encode(self) -> bytes:
        return _encoder.encode(self.body())

    def headers(self) -> dict[str, str]:
        if self.retry_after_s is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}


def caller_grammar(path: str, anthropic_version: bool = False) -> Grammar:
    """The error format of a caller no handler has read yet (shed, refused
    by the router or the HTTP parser): Anthropic's under /v1/messages (and
    on /v1/models asked with an anthropic-version header), Google's under
    /v1beta and on a Gemini model URL, OpenAI's everywhere else.  Repeated
    slashes count as one (/v1//messages is still an Anthropic client's
    mistake)."""
    if "//" in path:
        path = _SLASHES.sub("/", path)
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return ANTHROPIC_MESSAGES
    if anthropic_version and path == "/v1/models":
        return ANTHROPIC_MESSAGES
    if path.startswith("/v1beta/") or parse_path(path) is not None:
        return GEMINI_GENERATE
    return OPENAI_CHAT


# --- the caller's mistakes ----------------------------------------------------


def invalid_json() -> GatewayError:
    return GatewayError(
        400, "invalid_request_error", "invalid_json", "We could not parse the JSON body of your request."
    )


def invalid_utf8(offset: int) -> GatewayError:
    return GatewayError(
        400,
        "invalid_request_error",
        "invalid_json",
        f"The request body is not valid UTF-8 (byte {offset}); JSON bodies must be UTF-8.",
    )


def too_deep(limit: int) -> GatewayError:
    return GatewayError(
        400,
        "invalid_request_error",
        "invalid_json",
        f"The JSON body nests deeper than {limit} levels.",
    )


def bad_body_encoding(why: str) -> GatewayError:
    """The body could not be read as framed (Content-Encoding that does not
    decode, broken chunked encoding, a body shorter than its length): the
    connection's framing is lost too, so it is closed after the answer."""
    return GatewayError(400, "invalid_request_error", "invalid_body", f"The request body {why}.", close=True)


def unsupported_encoding() -> GatewayError:
    return GatewayError(
        415,
        "invalid_request_error",
        "unsupported_content_encoding",
        "Content-Encoding must be identity, gzip, deflate (or br/zstd where the gateway has their decoders).",
        param="Content-Encoding",
        close=True,
    )


def not_an_object() -> GatewayError:
    return GatewayError(
        400, "invalid_request_error", "invalid_request", "The request body must be a JSON object."
    )


def missing_model() -> GatewayError:
    return GatewayError(
        400, "invalid_request_error", "missing_model", "You must provide a model parameter.", param="model"
    )


def invalid_request(message: str, param: str | None) -> GatewayError:
    return GatewayError(400, "invalid_request_error", "invalid_request", message, param=param)


def unknown_model(name: str) -> GatewayError:
    shown = name if len(name) <= 100 else name[:100] + "..."
    return GatewayError(
        404, "invalid_request_error", "model_not_found", f"The model {shown!r} does not exist.", param="model"
    )


def model_not_allowed(name: str) -> GatewayError:
    return GatewayError(
        403,
        "permission_error",
        "model_not_allowed",
        f"This key is not allowed to use the model {name!r}.",
        param="model",
        stage="auth",
    )


def too_large(limit: int) -> GatewayError:
    return GatewayError(
        413,
        "invalid_request_error",
        "request_too_large",
        f"The request body exceeds the limit of {limit} bytes.",
        close=True,  # the rest of the body is never read
    )


def missing_key() -> GatewayError:
    return GatewayError(
        401,
        "authentication_error",
        "missing_api_key",
        "No virtual key provided: send Authorization: Bearer nvk_... or x-nexus-virtual-key.",
        stage="auth",
    )


def invalid_key() -> GatewayError:
    return GatewayError(
        401, "authentication_error", "invalid_api_key", "Incorrect virtual key provided.", stage="auth"
    )


def inactive_key(code: str, why: str) -> GatewayError:
    return GatewayError(401, "authentication_error", code, f"This virtual key {why}.", stage="auth")


def unknown_route(method: str, path: str) -> GatewayError:
    shown = path if len(path) <= 200 else path[:200] + "..."
    return GatewayError(
        404, "invalid_request_error", "unknown_url", f"Unknown request URL: {method} {shown}.", stage="route"
    )


def method_not_allowed(method: str) -> GatewayError:
    return GatewayError(
        405,
        "invalid_request_error",
        "method_not_allowed",
        f"Method {method} is not allowed here.",
        stage="route",
    )


def unsupported_provider(kind: str) -> GatewayError:
    return GatewayError(
        400,
        "invalid_request_error",
        "no_compatible_provider",
        f"The model's provider format {kind!r} has no codec in this gateway.",
        stage="route",
    )


def needs_native_responses(what: str) -> GatewayError:
    return GatewayError(
        400,
        "invalid_request_error",
        "feature_requires_native_responses_target",
        f"{what} needs a provider that serves the Responses API natively; "
        "this model's provider is reached through chat completions.",
        stage="route",
    )


# --- ours and the provider's ------------------------------------------------------


def overloaded() -> GatewayError:
    return GatewayError(
        429,
        "rate_limit_error",
        "overloaded",
        "The gateway is at capacity; retry shortly.",
        retry_after_s=1,
        stage="admission",
    )


def upstream_unreachable() -> GatewayError:
    return GatewayError(
        502, "api_error", "upstream_error", "The provider could not be reached.", stage="upstream"
    )


def upstream_timeout() -> GatewayError:
    return GatewayError(504, "api_error", "timeout", "The provider did not answer in time.", stage="upstream")


def internal() -> GatewayError:
    return GatewayError(
        500,
        "server_error",
        "internal_error",
        "The gateway hit an unexpected error; it has been logged.",
        stage="internal",
    )


_CANONICAL_TYPES = {
    "invalid_request": "invalid_request_error",
    "auth_failed": "api_error",  # the provider refused *our* credential
    "rate_limited": "rate_limit_error",
    "timeout": "api_error",
    "upstream_error": "api_error",
}


def from_canonical(err: CanonicalError, *, stage: str = "upstream") -> GatewayError:
    if err.code in ("invalid_request", "not_implemented", "no_compatible_provider") and err.status == 400:
        # A request the codec cannot express for this provider: the caller's
        # to fix, so an invalid_request_error with the codec's explanation.
        return GatewayError(400, "invalid_request_error", err.code, err.message, stage=stage)
    return GatewayError(
        err.status,
        _CANONICAL_TYPES.get(err.code, "api_error"),
        err.code,
        err.message,
        retry_after_s=err.retry_after_s
        if err.retry_after_s is not None
        else (1 if err.status == 429 else None),
        stage=stage,
    )
