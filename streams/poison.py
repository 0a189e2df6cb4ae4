"""Poison: a stream message a consumer cannot take as it is, and what can
be done about it before it goes to the dead-letter subject
(``streams.deadletter``).

``decode_event`` is the one decoder every consumer of typed events uses.  It
raises ``Poison`` (with a short code and our own words) for what cannot be
read at all, and, when asked to ``sanitise``, repairs in a copy what only a
store could not hold:

* a NUL character (``\\u0000``): Postgres text cannot hold it;
* a lone UTF-16 surrogate escape (``\\ud800`` without its pair): not a
  character at all, UTF-8 cannot encode it (msgspec refuses the document);
* bytes that are not UTF-8.

Each becomes U+FFFD, the Unicode replacement character, as a lossy UTF-8
decoder would do; the list of changes goes with the event so the consumer
can record the original (the dead-letter subject keeps it with disposition
``sanitised``).

``store_text`` is the same rule for a single string, plus a bound for
values that end up in an index (a B-tree row holds at most ~2.7 KB in
Postgres): longer text keeps its start and ends in the SHA-256 of the whole,
so equal values still compare equal.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import msgspec

from streams.catalog import KNOWN_TAGS, SCHEMA_VERSIONS, UPCASTERS, upcast
from streams.codec import UnknownEvent, decode, decode_known

# Short codes: the last token of the dead-letter subject, a metric label.
UNDECODABLE = "undecodable"  # not a JSON document
INVALID_UTF8 = "invalid_utf8"
INVALID_SURROGATE = "invalid_surrogate"
NUL = "nul_character"
INVALID = "invalid"  # JSON, but not the event type's schema (wrong types, out of range)
UNKNOWN_TYPE = "unknown_type"
UNSUPPORTED_VERSION = "unsupported_version"
OUT_OF_RANGE = "out_of_range"
OVERSIZED = "oversized"
REJECTED = "rejected"  # a store or sink refused it for a reason of its own
CODES = (
    UNDECODABLE,
    INVALID_UTF8,
    INVALID_SURROGATE,
    NUL,
    INVALID,
    UNKNOWN_TYPE,
    UNSUPPORTED_VERSION,
    OUT_OF_RANGE,
    OVERSIZED,
    REJECTED,
)


class Poison(Exception):
    """A message that cannot be applied; ``code`` is one of ``CODES``."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


# \uXXXX escapes preceded by an even number of backslashes (an odd number
# would make the backslash itself escaped text, not an escape).
_NUL_ESCAPE = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")
_SURROGATE_ESCAPE = re.compile(
    rb"(?<!\\)((?:\\\\)*)(\\u[dD][89abAB][0-9a-fA-F]{2}(?:\\u[dD][c-fC-F][0-9a-fA-F]{2})?|\\u[dD][c-fC-F][0-9a-fA-F]{2})"
)
_REPLACEMENT = rb"\ufffd"


def _replace_nul(data: bytes) -> tuple[bytes, int]:
    return _NUL_ESCAPE.subn(rb"\1" + _REPLACEMENT.replace(b"\\", b"\\\\"), data)


def _fix_surrogates(data: bytes) -> tuple[bytes, int]:
    """Replace lone surrogate escapes (a high one without its low partner,
    or a low one alone); valid pairs stay."""
    fixed = 0

    def one(m: re.Match[bytes]) -> bytes:
        nonlocal fixed
        escape = m.group(2)
        if len(escape) == 12:  # a high and a low: a valid pair
            return m.group(0)
        fixed += 1
        return m.group(1) + _REPLACEMENT

    return _SURROGATE_ESCAPE.sub(one, data), fixed


def check_version(event: Any) -> None:
    v = getattr(event, "v", 1)
    if v == 1:  # every type reads its first version
        return
    tag = type(event).__struct_config__.tag
    known = SCHEMA_VERSIONS.get(str(tag), 1)
    if not isinstance(v, int) or v > known or v < 1:
        raise Poison(UNSUPPORTED_VERSION, f"{tag} version {v} (this consumer reads up to {known})")


def decode_event(data: bytes, *, sanitise: bool = False) -> tuple[Any, tuple[str, ...]]:
    """(event, changes made to it).  Raises ``Poison`` for a message that is
    not a known event of a supported version; with ``sanitise`` a NUL,
    lone surrogate or invalid UTF-8 is replaced (and named in the changes)
    instead of refused."""
    # A backslash is rare in an event (msgspec escapes only quotes, control
    # characters and backslashes): one memchr before the escape search.
    if sanitise and data.find(b"\\") >= 0 and b"\\u0000" in data:
        fixed, n = _replace_nul(data)
        if n:
            return _repaired(fixed, [f"{n} NUL character(s) replaced by U+FFFD"])
    try:
        event = decode_known(data)
    except RecursionError:  # msgspec's answer to nesting 1,000 levels deep
        raise Poison(UNDECODABLE, "nested too deeply to decode") from None
    except (UnicodeDecodeError, msgspec.DecodeError, msgspec.ValidationError):
        # The slow path: an unknown type (codec.decode names it), or poison.
        if not sanitise:
            try:
                return _known(decode(data)), _NO_CHANGES
            except (UnicodeDecodeError, msgspec.DecodeError, msgspec.ValidationError):
                raise _diagnosis(data) from None
        return _repaired(data, [])
    if event.v != 1:
        check_version(event)
    return (upcast(event) if UPCASTERS else event), _NO_CHANGES


_NO_CHANGES: tuple[str, ...] = ()


def _known(event: Any) -> Any:
    if type(event) is UnknownEvent:
        what = f"event type {event.type!r}" if event.type else "no event type"
        raise Poison(UNKNOWN_TYPE, f"{what} (known: {len(KNOWN_TAGS)} types)")
    if event.v != 1:
        check_version(event)
    return upcast(event) if UPCASTERS else event


def _diagnosis(data: bytes) -> Poison:
    """Why ``data`` does not decode, as a Poison (no repair attempted)."""
    try:
        decode(data)
    except UnicodeDecodeError:
        return Poison(INVALID_UTF8, "the payload is not valid UTF-8")
    except msgspec.ValidationError as exc:
        return Poison(INVALID, f"does not match its event type: {exc}")
    except msgspec.DecodeError as exc:
        if b"\\u" in data and _fix_surrogates(data)[1]:
            return Poison(INVALID_SURROGATE, "a string holds a lone UTF-16 surrogate")
        return Poison(UNDECODABLE, f"not a JSON event: {exc}")
    return Poison(UNDECODABLE, "could not be decoded")


def _repaired(data: bytes, changes: list[str]) -> tuple[Any, tuple[str, ...]]:
    """Decode, replacing invalid UTF-8 and lone surrogates (each at most
    once) on the way; ``Poison`` for what no replacement can fix."""
    for _ in range(3):
        try:
            event = decode(data)
            break
        except UnicodeDecodeError:
            if any("UTF-8" in c for c in changes):
                raise Poison(INVALID_UTF8, "the payload is not valid UTF-8") from None
            data = data.decode("utf-8", "replace").encode()
            changes.append("invalid UTF-8 replaced by U+FFFD")
        except msgspec.ValidationError as exc:
            raise Poison(INVALID, f"does not match its event type: {exc}") from None
        except msgspec.DecodeError as exc:
            data, fixed = _fix_surrogates(data) if b"\\u" in data else (data, 0)
            if not fixed:
                raise Poison(UNDECODABLE, f"not a JSON event: {exc}") from None
            changes.append(f"{fixed} lone UTF-16 surrogate escape(s) replaced by U+FFFD")
    else:
        raise Poison(UNDECODABLE, "could not be repaired")
    return _known(event), tuple(changes)


def store_text(value: str, limit: int = 1024) -> str:
    """``value`` as a text column can hold it: NUL and lone surrogates become
    U+FFFD; over ``limit`` UTF-8 bytes, its first 256 characters, an
    ellipsis and the SHA-256 of the whole (still unique, still equal for
    equal input)."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        encoded = value.encode()
    except UnicodeEncodeError:
        encoded = value.encode("utf-8", "replace")
        value = encoded.decode()
    if len(encoded) > limit:
        value = f"{value[:256]}…sha256:{hashlib.sha256(encoded).hexdigest()}"
    return value
