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

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buf = self._buf
        buf += chunk
        # Only whole lines are parsed: up to the last LF.  (A CR at the very
        # end may be half of a CRLF, so it waits with the rest.)
        end = buf.rfind(b"\n")
        if end < 0:
            if len(buf) > MAX_LINE_BYTES:
                raise CodecError(
                    CanonicalError(
                        code="upstream_error",
                        message="upstream stream sent an over-long line",
                        status=502,
                    )
                )
            return []
        region = bytes(buf[: end + 1])
        del buf[: end + 1]
        return self._lines(region.splitlines())

    def close(self) -> list[SSEEvent]:
        # A last line without its newline still counts, then the pending event.
        out = self._lines(bytes(self._buf).splitlines())
        self._buf.clear()
        ev = self._dispatch()
        if ev is not None:
            out.append(ev)
        return out

    def _lines(self, lines: list[bytes]) -> list[SSEEvent]:
        out: list[SSEEvent] = []
        data = self._data
        for line in lines:
            if not line:
                ev = self._dispatch()
                if ev is not None:
                    out.append(ev)
                data = self._data
            elif line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
            elif line.startswith(b"event:"):
                value = line[6:]
                self._event = (value[1:] if value.startswith(b" ") else value).decode("utf-8", "replace")
            elif line == b"data":
                data.append(b"")
            # comments (":...") and id / retry / unknown fields carry nothing
            # a codec needs.
        return out

    def _dispatch(self) -> SSEEvent | None:
        if not self._data:
            self._event = ""
            return None
        ev = SSEEvent(self._event, b"\n".join(self._data).decode("utf-8", "replace"))
        self._event = ""
        self._data = []
        return ev


def frame(event: str | None, data: bytes) -> bytes:
    """One SSE frame, as the ingress encoders emit them."""
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + data + b"\n\n"
