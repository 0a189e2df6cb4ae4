"""Decoding provider bodies into wire Structs with a clean error, and the
small JSON helpers tool-call translation needs."""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec

from adapters.wirekit.errors import bad_upstream, unsupported

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def _decoder(tp: type[T]) -> msgspec.json.Decoder[T]:
    dec = _decoders.get(tp)
    if dec is None:
        dec = _decoders[tp] = msgspec.json.Decoder(tp)
    return dec


# msgspec quotes the offending value ("Invalid enum value 'x'") and names an
# unknown key ("unknown field `x`"); both are the sender's text, which an
# error must not carry (it is shown, logged and stored in events).
_QUOTED = re.compile(r" ?(?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")")
_UNKNOWN_FIELD = re.compile(r"unknown field `[^`]*`")


def shape_error(exc: msgspec.MsgspecError) -> str:
    """msgspec's description of a shape error (what was expected, and where),
    without the values and key names it quotes."""
    return _UNKNOWN_FIELD.sub("an unknown field", _QUOTED.sub("", str(exc)))


# msgspec raises UnicodeDecodeError (not DecodeError) for invalid UTF-8
# inside a JSON string; both are a body we cannot read.
DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError)


def decode_upstream(body: bytes | str, tp: type[T], provider: str) -> T:
    """A provider response body; a shape error is the provider's fault (502).
    msgspec's message names the path, never the body's text."""
    try:
        return _decoder(tp).decode(body)
    except msgspec.DecodeError as e:
        raise bad_upstream(
            provider, f"response did not match the expected shape ({shape_error(e)})"
        ) from None
    except UnicodeDecodeError:
        raise bad_upstream(provider, "response is not valid UTF-8") from None


def decode_inbound(body: bytes | str, tp: type[T], api: str) -> T:
    """A caller's request body; a shape error is the caller's fault (400)."""
    try:
        return _decoder(tp).decode(body)
    except msgspec.DecodeError as e:
        raise unsupported(api, f"invalid request body ({shape_error(e)})") from None
    except UnicodeDecodeError:
        raise unsupported(api, "invalid request body (not valid UTF-8)") from None


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


def dumps(value: Any) -> str:
    return _encoder.encode(value).decode()


def parse_arguments(arguments: str) -> Any:
    """A tool call's JSON argument text as an object.  Models sometimes emit
    an empty string for no arguments; a non-JSON text is kept under a key
    rather than dropped, so nothing the model said is lost."""
    if not arguments.strip():
        return {}
    try:
        value = msgspec.json.decode(arguments)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return {"_raw_arguments": arguments}
    return value


def join_url(base: str, path: str) -> str:
    """base_url may or may not already end in the API version prefix."""
    base = base.rstrip("/")
    first = "/" + path.lstrip("/").split("/", 1)[0]
    if base.endswith(first) and first in ("/v1", "/v2", "/v1beta"):
        base = base[: -len(first)]
    return base + "/" + path.lstrip("/")
