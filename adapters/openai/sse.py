"""A server-sent-events parser for byte streams that arrive in arbitrary
pieces: a line (or an event) split across reads is held until complete.

Each event keeps the exact bytes it arrived as (``raw``), so a relay can
forward complete events untouched while still reading them.
"""

from __future__ import annotations

from typing import NamedTuple

from adapters.base import CodecError
from adapters.canonical import CanonicalError

_CR = 13
_LF = 10
# A line longer than this is not a stream we can serve; refuse it rather
# than buffer without bound.
MAX_LINE_BYTES = 16 * 1024 * 1024


class SSEEvent(NamedTuple):
    data: bytes  # the event's data lines joined by "\n"
    event: str  # the event name ("" when none was given)
    raw: bytes  # the event's bytes as received, blank-line terminator included


class SSEParser:
    __slots__ = ("_buf", "_data", "_event", "_raw")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[bytes] = []
        self._event = ""
        self._raw: list[bytes] = []

    @property
    def pending(self) -> bool:
        """True when bytes of an unfinished event are buffered."""
        return bool(self._buf or self._raw)

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buf = self._buf + chunk if self._buf else chunk
        # find, not ``in``: bytes.__contains__ first tries its argument as an
        # int and builds (then drops) a TypeError, thousands of instructions.
        if self._raw or buf.find(b"\n\n") < 0 or buf.find(b"\r") >= 0:
            self._buf = b""
            return self._scan(buf, [])
        # The common case, a read of whole ``data: ...`` events ended by LF
        # alone: one split, instead of a find, a slice and a partition per
        # line (a provider stream is dozens of events per request).  Only
        # taken between events, so no line state is pending; what follows
        # the last blank line goes through the general scanner.
        pieces = buf.split(b"\n\n")
        out: list[SSEEvent] = []
        for i in range(len(pieces) - 1):
            piece = pieces[i]
            if piece[:5] == b"data:" and piece.find(b"\n") < 0:
                value = piece[6:] if piece[5:6] == b" " else piece[5:]
                out.append(SSEEvent(value, "", piece + b"\n\n"))
            else:
                self._whole_event(piece, out)
        self._buf = b""
        rest = pieces[-1]
        return self._scan(rest, out) if rest else out

    def _whole_event(self, piece: bytes, out: list[SSEEvent]) -> None:
        """A complete event (its blank line split off) of any shape: each
        line through the general line handler.  Leading blank lines end
        nothing (no event is pending), so they are not part of its bytes."""
        piece = piece.lstrip(b"\n")
        if not piece:
            return
        self._raw = [piece + b"\n\n"]
        for line in piece.split(b"\n"):
            self._line(line, out)
        self._line(b"", out)

    def _scan(self, buf: bytes, out: list[SSEEvent]) -> list[SSEEvent]:
        """Line by line, any line ending (LF, CRLF, CR), any split."""
        pos = 0
        n = len(buf)
        while pos < n:
            lf = buf.find(b"\n", pos)
            cr = buf.find(b"\r", pos, lf if lf >= 0 else n)
            if cr >= 0:
                if cr + 1 == n:
                    break  # a CR at the end: a LF may follow in the next read
                end = cr + 2 if buf[cr + 1] == _LF else cr + 1
                line_end = cr
            elif lf >= 0:
                end = lf + 1
                line_end = lf
            else:
                break
            self._raw.append(buf[pos:end])
            self._line(buf[pos:line_end], out)
            pos = end
        self._buf = buf[pos:]
        if len(self._buf) > MAX_LINE_BYTES:
            raise CodecError(
                CanonicalError(
                    code="upstream_error", message="the provider sent an over-long stream line", status=502
                )
            )
        return out

    def close(self) -> list[SSEEvent]:
        """End of stream.  A final event without its blank line is still
        dispatched (some providers omit it after ``[DONE]``)."""
        out: list[SSEEvent] = []
        if self._buf:
            self._raw.append(self._buf)
            self._line(self._buf.rstrip(b"\r"), out)
            self._buf = b""
        self._line(b"", out)
        return out

    def _line(self, line: bytes, out: list[SSEEvent]) -> None:
        if not line:
            if self._data:
                out.append(SSEEvent(b"\n".join(self._data), self._event, b"".join(self._raw)))
            self._data = []
            self._event = ""
            self._raw = []
            return
        if line[0] == 58:  # ":" starts a comment (keep-alives)
            return
        field, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            self._data.append(value)
        elif field == b"event":
            self._event = value.decode("utf-8", "replace")
        # "id" and "retry" mean nothing to a relay; unknown fields are ignored (per the spec)
