"""Encoders and decoders for events, built once per process.

Decoding tolerates unknown fields and unknown event types: a consumer that
meets a newer producer's event type skips it (and records its checkpoint)
instead of crashing.
"""

from __future__ import annotations

from typing import Any

import msgspec

from streams.catalog import UPCASTERS, AnyEvent, upcast

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(AnyEvent)
# The typed decoder itself, for the hot paths that handle its errors
# themselves (streams.poison): a known event of the current version, or a
# ValidationError / DecodeError / UnicodeDecodeError.
decode_known = _decoder.decode


class UnknownEvent(msgspec.Struct):
    """What a decoder returns for a type tag it does not know."""

    type: str = ""
    id: str = ""


_probe = msgspec.json.Decoder(UnknownEvent)


def encode(event: msgspec.Struct) -> bytes:
    return _encoder.encode(event)


def decode(data: bytes) -> Any:
    """Decode one event; an unknown type yields ``UnknownEvent``."""
    try:
        event = _decoder.decode(data)
        # (A call saved per event while no type has an old version to lift.)
        return upcast(event) if UPCASTERS else event
    except msgspec.ValidationError:
        probe = _probe.decode(data)
        from streams.catalog import KNOWN_TAGS

        if probe.type in KNOWN_TAGS:
            raise
        return probe
