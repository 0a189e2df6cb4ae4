"""An incremental Server-Sent-Events parser.

Upstream bytes arrive in arbitrary pieces (a TCP read can end in the middle
of a line, of a ``\\r\\n`` pair or of a multi-byte UTF-8 character), so the
parser buffers bytes, cuts complete lines only, and decodes text per event.
"""

from __future__ import annotations

from typing import NamedTuple

from adapters.base import CodecError
from adapters.canonical import CanonicalError

# One SSE line longer than this is not a stream we can serve; refuse it
# rather than buffer without bound.
MAX_LINE_BYTES = 16 * 1024 * 1024


class SSEEvent(NamedTuple):
    event: str  # "" when the frame named none ("message" by the spec)
    data: str


class SSEParser:
    def __init__(self) -> None:
        self._buf = bytearray()
        self._event = ""
        self._data: list[bytes] = []
        self._has_data = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        self._buf += chunk
        out: list[SSEEvent] = []
        start = 0
        buf = self._buf
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = bytes(buf[start:nl])
            start = nl + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            ev = self._line(line)
            if ev is not None:
                out.append(ev)
        del buf[:start]
        if len(buf) > MAX_LINE_BYTES:
            raise CodecError(
                CanonicalError(
                    code="upstream_error",
                    message="upstream stream sent an over-long line",
                    status=502,
                )
            )
        return out

    def close(self) -> list[SSEEvent]:
        out: list[SSEEvent] = []
        if self._buf:
            # A last line without its newline still counts.
            ev = self._line(bytes(self._buf).rstrip(b"\r"))
            self._buf.clear()
            if ev is not None:
                out.append(ev)
        ev = self._dispatch()
        if ev is not None:
            out.append(ev)
        return out

    def _line(self, line: bytes) -> SSEEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(b":"):
            return None  # comment / keep-alive
        name, sep, value = line.partition(b":")
        if sep and value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data.append(value)
            self._has_data = True
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        # id / retry and unknown fields carry nothing a codec needs.
        return None

    def _dispatch(self) -> SSEEvent | None:
        if not self._has_data:
            self._event = ""
            return None
        ev = SSEEvent(self._event, b"\n".join(self._data).decode("utf-8", "replace"))
        self._event = ""
        self._data = []
        self._has_data = False
        return ev


def frame(event: str | None, data: bytes) -> bytes:
    """One SSE frame, as the ingress encoders emit them."""
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + data + b"\n\n"
