"""The AWS event-stream binary framing (application/vnd.amazon.eventstream).

A message is: total length (u32 BE), headers length (u32 BE), CRC32 of those
8 bytes, the headers, the payload, and a CRC32 of everything before it.
Both CRCs are checked; a mismatch means a corrupt stream and is an upstream
error, never silently skipped.  Bytes arrive in arbitrary pieces, so the
decoder buffers until a whole message is present.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from typing import NamedTuple

from adapters.wirekit.errors import bad_upstream

PRELUDE_LEN = 12
CRC_LEN = 4
MIN_MESSAGE = PRELUDE_LEN + CRC_LEN
# AWS caps a message at 16 MiB (+ prelude); anything larger is corruption.
MAX_MESSAGE = 16 * 1024 * 1024 + MIN_MESSAGE

HeaderValue = bool | int | bytes | str | uuid.UUID


class Message(NamedTuple):
    headers: dict[str, HeaderValue]
    payload: bytes


def _crc(data: bytes | memoryview) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def _headers(raw: memoryview) -> dict[str, HeaderValue]:
    out: dict[str, HeaderValue] = {}
    pos = 0
    end = len(raw)
    try:
        while pos < end:
            name_len = raw[pos]
            pos += 1
            name = bytes(raw[pos : pos + name_len]).decode()
            pos += name_len
            kind = raw[pos]
            pos += 1
            value: HeaderValue
            if kind == 0:
                value = True
            elif kind == 1:
                value = False
            elif kind == 2:
                value = struct.unpack_from(">b", raw, pos)[0]
                pos += 1
            elif kind == 3:
                value = struct.unpack_from(">h", raw, pos)[0]
                pos += 2
            elif kind in (4,):
                value = struct.unpack_from(">i", raw, pos)[0]
                pos += 4
            elif kind in (5, 8):  # long, timestamp (ms since epoch)
                value = struct.unpack_from(">q", raw, pos)[0]
                pos += 8
            elif kind in (6, 7):  # bytes, string
                (n,) = struct.unpack_from(">H", raw, pos)
                pos += 2
                data = bytes(raw[pos : pos + n])
                pos += n
                value = data.decode() if kind == 7 else data
            elif kind == 9:
                value = uuid.UUID(bytes=bytes(raw[pos : pos + 16]))
                pos += 16
            else:
                raise bad_upstream("bedrock", f"event-stream header {name!r} has unknown type {kind}")
            if pos > end:
                raise bad_upstream("bedrock", "event-stream header runs past its section")
            out[name] = value
    except (struct.error, IndexError, UnicodeDecodeError):
        raise bad_upstream("bedrock", "event-stream headers are malformed") from None
    return out


class EventStreamDecoder:
    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        out: list[Message] = []
        while len(self._buf) >= PRELUDE_LEN:
            total, headers_len, prelude_crc = struct.unpack_from(">III", self._buf, 0)
            if _crc(memoryview(self._buf)[:8]) != prelude_crc:
                raise bad_upstream("bedrock", "event-stream prelude CRC mismatch")
            if total < MIN_MESSAGE or total > MAX_MESSAGE or headers_len > total - MIN_MESSAGE:
                raise bad_upstream("bedrock", "event-stream message length is invalid")
            if len(self._buf) < total:
                break
            view = memoryview(self._buf)[:total]
            (message_crc,) = struct.unpack_from(">I", view, total - CRC_LEN)
            if _crc(view[: total - CRC_LEN]) != message_crc:
                raise bad_upstream("bedrock", "event-stream message CRC mismatch")
            headers = _headers(view[PRELUDE_LEN : PRELUDE_LEN + headers_len])
            payload = bytes(view[PRELUDE_LEN + headers_len : total - CRC_LEN])
            view.release()
            del self._buf[:total]
            out.append(Message(headers, payload))
        return out

    def close(self) -> list[Message]:
        if self._buf:
            left = len(self._buf)
            self._buf.clear()
            raise bad_upstream("bedrock", f"event-stream ended inside a message ({left} bytes left)")
        return []


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One message with string headers: what Bedrock sends, and what the
    simulated provider and tests need to produce."""
    raw_headers = bytearray()
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        raw_headers += struct.pack(">B", len(n)) + n + b"\x07" + struct.pack(">H", len(v)) + v
    total = PRELUDE_LEN + len(raw_headers) + len(payload) + CRC_LEN
    prelude = struct.pack(">II", total, len(raw_headers))
    head = prelude + struct.pack(">I", _crc(prelude)) + raw_headers + payload
    return head + struct.pack(">I", _crc(head))
