"""The SSE parser's whole-event fast path gives exactly what the general
line scanner gives, for any stream and any way it is split into reads."""

from __future__ import annotations

import random

import pytest

from adapters.openai.sse import SSEEvent, SSEParser

# Pieces a stream is built from: data events, named events, multi-line
# data, comments, ids, stray blank lines, CR and CRLF endings, a field with
# no colon, a value with no space.
_PIECES = [
    b'data: {"a":1}\n\n',
    b"data:{}\n\n",
    b"data: [DONE]\n\n",
    b"event: ping\ndata: x\n\n",
    b"data: one\ndata: two\n\n",
    b": keep-alive\n\n",
    b"id: 7\n\n",
    b"event: only\n\n",
    b"\n",
    b"\n\n",
    b"data\n\n",
    b"data: crlf\r\n\r\n",
    b"data: cr\r\r",
    b"retry: 5\ndata: after retry\n\n",
    b"data: unterminated",
]


def _reference(stream: bytes, cuts: list[int]) -> list[SSEEvent]:
    """The general scanner alone (the fast path never taken)."""
    p = SSEParser()
    out: list[SSEEvent] = []
    last = 0
    for cut in [*cuts, len(stream)]:
        p._scan(p._buf + stream[last:cut], out)
        last = cut
    out.extend(p.close())
    return out


def _parsed(stream: bytes, cuts: list[int]) -> list[SSEEvent]:
    p = SSEParser()
    out: list[SSEEvent] = []
    last = 0
    for cut in [*cuts, len(stream)]:
        out.extend(p.feed(stream[last:cut]))
        last = cut
    out.extend(p.close())
    return out


@pytest.mark.parametrize("seed", range(300))
def test_fast_path_matches_the_line_scanner(seed: int) -> None:
    rng = random.Random(seed)
    stream = b"".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 12)))
    cuts = sorted(rng.sample(range(1, len(stream)), k=min(len(stream) - 1, rng.randint(0, 6))))
    assert _parsed(stream, cuts) == _reference(stream, cuts)


def test_whole_data_events_in_one_read_keep_their_bytes() -> None:
    p = SSEParser()
    events = p.feed(b'data: {"a":1}\n\ndata:{"b":2}\n\n: c\n\nevent: e\ndata: f\n\ndata: par')
    assert events == [
        SSEEvent(b'{"a":1}', "", b'data: {"a":1}\n\n'),
        SSEEvent(b'{"b":2}', "", b'data:{"b":2}\n\n'),
        SSEEvent(b"f", "e", b"event: e\ndata: f\n\n"),
    ]
    assert p.feed(b"tial\n\n") == [SSEEvent(b"partial", "", b"data: partial\n\n")]
