"""A native Responses stream that the response hooks read.

A provider that serves the Responses API natively streams events the
gateway must keep as they are: the response id a later
``previous_response_id`` names, built-in tool items, reasoning.  So the
stream is still relayed event by event, but the answer's text goes through
the stream guard first (``compliance.stream_guard``, one per output text
part):

* ``response.output_text.delta`` carries what the guard released (an event
  whose text is all held back is not sent; what is held goes out before the
  part's ``done``);
* the ``done`` events of a text part, its item, and the response envelopes
  carry the text as released (redacted), never the provider's own;
* a block ends the stream with ``response.failed`` (the envelope's id, the
  gateway's reason), and nothing of the blocked text goes out.

It is also the pump's stream decoder: the canonical chunks it hands over
(for usage, the fold and the recorded body) carry the released text.
"""

from __future__ import annotations

from typing import Any

import msgspec

from adapters.base import StreamError
from adapters.canonical import ChatChunk
from adapters.openai.sse import SSEEvent, SSEParser
from ingress.pipeline.errors import GatewayError
from ingress.pipeline.runtime import Runtime
from ingress.pipeline.stages import compliance
from ingress.pipeline.stages.compliance import RequestCompliance
from ingress.translate.responses_native import NativeStreamReader
from ingress.translate.shown_model import ShownModel

_encoder = msgspec.json.Encoder()
_any: msgspec.json.Decoder[Any] = msgspec.json.Decoder()

_ENVELOPES = frozenset(
    {
        "response.created",
        "response.in_progress",
        "response.completed",
        "response.incomplete",
        "response.failed",
    }
)

Part = tuple[int, int]  # (output_index, content_index)


class _Event:
    __slots__ = ("chunks", "payload", "raw")

    def __init__(self, raw: bytes, payload: dict[str, Any] | None, chunks: list[ChatChunk]) -> None:
        self.raw = raw
        self.payload = payload
        self.chunks = chunks  # its canonical chunks (their text is rewritten on release)


def _frame(payload: dict[str, Any]) -> bytes:
    kind = str(payload.get("type", ""))
    return b"event: " + kind.encode() + b"\ndata: " + _encoder.encode(payload) + b"\n\n"


def _part(payload: dict[str, Any]) -> Part:
    out, content = payload.get("output_index", 0), payload.get("content_index", 0)
    return (out if isinstance(out, int) else 0, content if isinstance(content, int) else 0)


class ResponsesStreamGate:
    def __init__(self, state: Runtime, rc: RequestCompliance, shown: ShownModel, provider_model: str) -> None:
        self._state = state
        self._rc = rc
        self._shown = shown
        self._sse = SSEParser()
        self._reader = NativeStreamReader(provider_model)
        self._queue: list[_Event] = []
        self._released: dict[Part, list[str]] = {}
        self._guards: dict[Part, Any] = {}
        self._envelope: dict[str, Any] = {}  # the response as response.created described it
        self._seq = 0

    # --- the decoder's side (the pump's StreamDecoder) -----------------------------

    def feed(self, data: bytes) -> list[ChatChunk]:
        return self._take(self._sse.feed(data))

    def close(self) -> list[ChatChunk]:
        return self._take(self._sse.close())

    def _take(self, events: list[SSEEvent]) -> list[ChatChunk]:
        out: list[ChatChunk] = []
        for ev in events:
            try:
                payload = _any.decode(ev.data)
            except msgspec.DecodeError:
                payload = None
            if not isinstance(payload, dict):
                self._queue.append(_Event(ev.raw, None, []))
                continue
            mine: list[ChatChunk] = []
            event = _Event(ev.raw, payload, mine)
            self._queue.append(event)
            kind = payload.get("type", ev.event)
            if kind == "response.output_text.done":
                # Where the text the guard still holds is released.
                mine.append(self._reader.text_chunk(""))
            try:
                self._reader.translate(kind, payload, mine)
            except StreamError as exc:
                raise StreamError(exc.error, out + mine) from None
            out.extend(mine)
        return out

    # --- what the caller receives -----------------------------------------------------

    async def release(self) -> tuple[bytes, GatewayError | None]:
        """The events decoded so far, as the caller may see them; with the
        block that ended the stream, if one did (its response.failed event
        is then the last of the bytes)."""
        out: list[bytes] = []
        queue, self._queue = self._queue, []
        for event in queue:
            payload = event.payload
            if payload is None:
                out.append(event.raw)
                continue
            seq = payload.get("sequence_number")
            if isinstance(seq, int):
                self._seq = max(self._seq, seq + 1)
            kind = payload.get("type")
            try:
                if kind == "response.output_text.delta":
                    out.append(await self._delta(event, payload))
                elif kind == "response.output_text.done":
                    out.append(await self._text_done(event, payload))
                elif kind == "response.content_part.done":
                    out.append(self._part_done(payload))
                elif kind == "response.output_item.done":
                    out.append(self._item_done(payload))
                elif kind in _ENVELOPES:
                    out.append(self._envelope_event(payload))
                else:
                    out.append(event.raw)
            except compliance.StreamBlocked as block:
                out.append(self._failed(block.error))
                return b"".join(out), block.error
        return b"".join(out), None

    def _guard(self, part: Part) -> Any:
        guard = self._guards.get(part)
        if guard is None:
            guard = self._guards[part] = compliance.stream_guard(self._state, self._rc)
            # stream_summary audits every guard of the request.
            self._rc.guards[len(self._rc.guards)] = guard
            self._released[part] = []
        return guard

    async def _delta(self, event: _Event, payload: dict[str, Any]) -> bytes:
        part = _part(payload)
        guard = self._guard(part)
        step = await guard.feed(str(payload.get("delta", "")))
        if step.blocked:
            raise compliance.StreamBlocked(compliance.blocked(step.result or guard.summary()), [], 0)
        self._set_text(event, step.emit)
        if not step.emit:
            return b""
        self._released[part].append(step.emit)
        return _frame({**payload, "delta": step.emit})

    async def _text_done(self, event: _Event, payload: dict[str, Any]) -> bytes:
        part = _part(payload)
        guard = self._guard(part)
        step = await guard.finish()
        if step.blocked:
            raise compliance.StreamBlocked(compliance.blocked(step.result or guard.summary()), [], 0)
        self._set_text(event, step.emit)
        head = b""
        if step.emit:
            self._released[part].append(step.emit)
            delta = {
                "type": "response.output_text.delta",
                "sequence_number": payload.get("sequence_number"),
                "item_id": payload.get("item_id"),
                "output_index": part[0],
                "content_index": part[1],
                "delta": step.emit,
                "logprobs": [],
            }
            head = _frame(delta)
        return head + _frame({**payload, "text": self._text(part)})

    def _text(self, part: Part) -> str:
        return "".join(self._released.get(part, ()))

    def _set_text(self, event: _Event, text: str) -> None:
        for chunk in event.chunks:
            for choice in chunk.choices:
                choice.delta.content = text or None

    def _parts(self, output_index: int, content: Any) -> Any:
        """An item's content list with each output_text part as released."""
        if not isinstance(content, list):
            return content
        fixed = []
        for i, p in enumerate(content):
            if isinstance(p, dict) and p.get("type") == "output_text" and (output_index, i) in self._released:
                p = {**p, "text": self._text((output_index, i))}
            fixed.append(p)
        return fixed

    def _part_done(self, payload: dict[str, Any]) -> bytes:
        part = _part(payload)
        p = payload.get("part")
        if isinstance(p, dict) and p.get("type") == "output_text" and part in self._released:
            payload = {**payload, "part": {**p, "text": self._text(part)}}
        return _frame(payload)

    def _item_done(self, payload: dict[str, Any]) -> bytes:
        item = payload.get("item")
        index = payload.get("output_index", 0)
        if isinstance(item, dict) and isinstance(index, int) and "content" in item:
            payload = {**payload, "item": {**item, "content": self._parts(index, item["content"])}}
        return _frame(payload)

    def _envelope_event(self, payload: dict[str, Any]) -> bytes:
        response = payload.get("response")
        if not isinstance(response, dict):
            return _frame(payload)
        response = {**response, "model": self._shown.name}
        output = response.get("output")
        if isinstance(output, list):
            response["output"] = [
                {**item, "content": self._parts(i, item["content"])}
                if isinstance(item, dict) and "content" in item
                else item
                for i, item in enumerate(output)
            ]
        if payload.get("type") == "response.created":
            self._envelope = response
        return _frame({**payload, "response": response})

    def _failed(self, error: GatewayError) -> bytes:
        response = {
            **self._envelope,
            "model": self._shown.name,
            "status": "failed",
            "output": [],
            "error": {"code": error.code, "message": error.message},
        }
        return _frame({"type": "response.failed", "sequence_number": self._seq, "response": response})
