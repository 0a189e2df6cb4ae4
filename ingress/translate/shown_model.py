"""The model name a caller sees in answers relayed as the provider wrote them.

A caller names a public model (or an alias, or a routing rule); the provider
answers with its own id (``sim-gpt-4o-mini``, a dated snapshot name).  Answers
the gateway re-encodes already carry the caller's name; answers relayed as
they are (same-format unary bodies, raw stream events) get only their
``model`` value rewritten here: a byte substitution, not a decode and a
re-encode of the whole answer.

The substitution rewrites the first ``"model": "..."`` key of a JSON text
(``"model"`` followed by a colon can only be a key: inside a string its
quotes are escaped).  Where that first key is the one meant is a property of
the grammar: an OpenAI chat completion, chunk or embeddings list has one
``model``, at the top, as does an Anthropic stream's message_start.  An
Anthropic message (tool inputs) and a Responses object (the caller's tools,
metadata and schemas) may carry ``model`` keys of the caller's own, so their
rewrite is checked and falls back to a full decode when the first key was
not the envelope's.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from adapters.openai.sse import SSEEvent, SSEParser

_KEY = re.compile(rb'"model"\s*:\s*"(?:[^"\\]|\\.)*"')
_encoder = msgspec.json.Encoder()
_any: msgspec.json.Decoder[Any] = msgspec.json.Decoder()


class _Top(msgspec.Struct):
    model: Any = None


class _Envelope(msgspec.Struct):
    response: _Top | None = None


_top = msgspec.json.Decoder(_Top)
_envelope = msgspec.json.Decoder(_Envelope)


class ShownModel:
    """Rewrites the provider's model id to ``name`` in relayed JSON."""

    __slots__ = ("_field", "_seen", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._field = b'"model":' + _encoder.encode(name)
        # The provider's own ``"model": "..."`` bytes once found: a stream
        # repeats them in every chunk, and a plain byte replace of a known
        # string costs a fraction of a regex search with a callback (this
        # runs per chunk of every relayed stream).
        self._seen = b""

    def _first(self, data: bytes) -> bytes:
        seen = self._seen
        if seen:
            patched = data.replace(seen, self._field, 1)
            if patched is not data:
                return patched
        found = _KEY.search(data)
        if found is None:
            return data
        self._seen = found.group(0)
        return data[: found.start()] + self._field + data[found.end() :]

    def learn(self, data: bytes) -> None:
        """Find the provider's ``"model"`` bytes in ``data`` (a stream's
        first read), so later reads are patched by a plain replace."""
        found = _KEY.search(data)
        if found is not None:
            self._seen = found.group(0)

    @property
    def seen(self) -> bytes:
        """The provider's own ``"model": "..."`` bytes, once found."""
        return self._seen

    @property
    def field(self) -> bytes:
        """What they are replaced with."""
        return self._field

    def document(self, body: bytes) -> bytes:
        """A unary answer whose grammar has one ``model`` key, at the top
        (an OpenAI chat completion or embeddings list), with it rewritten."""
        return self._first(body)

    def checked_document(self, body: bytes) -> bytes:
        """A unary answer that may echo ``model`` keys of the caller's own
        (an Anthropic message's tool inputs, a Responses object's tools and
        metadata): the top-level one rewritten, checked, else the document
        decoded and written again (the body unchanged when it has none, or
        is not JSON)."""
        patched = self._first(body)
        try:
            if _top.decode(patched).model == self.name:
                return patched
            doc = _any.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return body
        if not isinstance(doc, dict) or "model" not in doc:
            return body
        doc["model"] = self.name
        return _encoder.encode(doc)

    def event(self, raw: bytes) -> bytes:
        """One SSE event of a chat or Messages stream (its raw bytes)."""
        return self._first(raw)

    def responses_event(self, raw: bytes, data: bytes) -> bytes:
        """One SSE event of a native Responses stream: the ``response``
        envelope of response.created / in_progress / completed / failed
        carries the model (``data`` is the event's data)."""
        if raw.find(b'"model"') < 0:
            return raw
        try:
            envelope = _envelope.decode(self._first(data))
            if envelope.response is None:
                return raw  # not an envelope event: its "model" is not the answer's
            if envelope.response.model == self.name and data.find(b"\n") < 0:
                return self._first(raw)
            doc = _any.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return raw
        response = doc.get("response") if isinstance(doc, dict) else None
        if not isinstance(response, dict):
            return raw
        response["model"] = self.name
        kind = doc.get("type")
        head = b"event: " + str(kind).encode() + b"\n" if isinstance(kind, str) else b""
        return head + b"data: " + _encoder.encode(doc) + b"\n\n"


_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')


class _UsageProbe(msgspec.Struct):
    choices: list[Any] | None = None
    usage: Any = None


_usage_probe = msgspec.json.Decoder(_UsageProbe)


def _usage_only(data: bytes) -> bool:
    """An OpenAI chunk that carries usage and no choices (the one
    ``stream_options.include_usage`` asks for)."""
    if _USAGE_OBJECT.search(data) is None:
        return False
    try:
        probe = _usage_probe.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False
    return probe.choices == [] and probe.usage is not None


def _is_error(ev: SSEEvent) -> bool:
    """A provider's error event: named so (Anthropic, Responses), or an
    OpenAI-style ``{"error": ...}`` frame."""
    if ev.event == "error":
        return True
    data = ev.data
    return data[:1] == b"{" and b'"error"' in data and b'"choices"' not in data


def _without_usage_events(data: bytes) -> bytes:
    """Whole SSE events (LF-separated) without the usage-only chunks."""
    parts: list[bytes] = []
    pos = 0
    for m in _USAGE_OBJECT.finditer(data):
        if m.start() < pos:
            continue
        start = data.rfind(b"\n\n", pos, m.start())
        start = pos if start < 0 else start + 2
        end = data.find(b"\n\n", m.end())
        if end < 0:
            break
        end += 2
        events = SSEParser().feed(data[start:end])
        if len(events) == 1 and _usage_only(events[0].data):
            parts.append(data[pos:start])
            pos = end
    if not parts:
        return data
    parts.append(data[pos:])
    return b"".join(parts)


class RelayedStream:
    """A stream relayed as the provider sent it, with the model id rewritten
    in the events that carry it.  Bytes are cut into whole events only when
    they must be: a read that ends on an event boundary and names no model
    goes out untouched (most reads of a stream).

    ``drop_usage``: the usage chunk the gateway asked for on the caller's
    behalf (OpenAI's include_usage) is accounted but not relayed."""

    __slots__ = ("_drop_usage", "_responses", "_shown", "_sse")

    def __init__(self, shown: ShownModel, *, responses: bool = False, drop_usage: bool = False) -> None:
        self._shown = shown
        self._responses = responses  # a native Responses stream (envelope events)
        self._drop_usage = drop_usage
        self._sse = SSEParser()

    def feed(self, data: bytes) -> bytes:
        if self._sse.pending or not data.endswith(b"\n\n") or self._responses or b"\r" in data:
            return self._join(self._sse.feed(data))
        # Whole events, the usual case: no event parse.  The usage chunk the
        # caller did not ask for is cut out where its usage object is, and
        # the provider's model bytes, once learnt, are replaced in the whole
        # read at once (``"model":"..."`` with bare quotes is always a key:
        # inside a string they are escaped).  A read that names a model
        # some other way is cut into events after all.
        if self._drop_usage and _USAGE_OBJECT.search(data) is not None:
            data = _without_usage_events(data)
        models = data.count(b'"model"')
        if not models:
            return data
        shown = self._shown
        if not shown.seen:
            shown.learn(data)
        seen = shown.seen
        if seen and data.count(seen) == models:
            return data.replace(seen, shown.field)
        return self._join(self._sse.feed(data))

    def close(self) -> bytes:
        """What was held of an unfinished last event."""
        return self._join(self._sse.close())

    def until_error(self, data: bytes) -> bytes:
        """This read's events before the provider's error event: the error
        itself is never relayed (the caller gets the gateway's own frame,
        in its grammar, with the provider's details left out)."""
        events = self._sse.feed(data)
        for i, ev in enumerate(events):
            if _is_error(ev):
                return self._join(events[:i])
        return self._join(events)

    def _join(self, events: list[SSEEvent]) -> bytes:
        if self._drop_usage:
            events = [e for e in events if not _usage_only(e.data)]
        if self._responses:
            return b"".join(self._shown.responses_event(e.raw, e.data) for e in events)
        return b"".join(self._shown.event(e.raw) for e in events)
