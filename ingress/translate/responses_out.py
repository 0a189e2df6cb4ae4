"""Canonical answers written in the Responses grammar: the response object
of a unary call and the event stream of a streamed one (shapes:
``ingress.translate.responses_wire``)."""

from __future__ import annotations

import time

import msgspec

from adapters.canonical import ChatChunk, ChatResponse, Usage
from ingress.translate import responses_wire as rw
from ingress.translate.grammar import Failure

_encoder = msgspec.json.Encoder()


def usage_out(usage: Usage | None) -> rw.ResponseUsage:
    u = usage or Usage()
    return rw.ResponseUsage(
        input_tokens=u.prompt_tokens,
        input_tokens_details=rw.InputTokensDetails(cached_tokens=u.cached_tokens),
        output_tokens=u.completion_tokens,
        output_tokens_details=rw.OutputTokensDetails(reasoning_tokens=u.reasoning_tokens),
        total_tokens=u.total_tokens or u.prompt_tokens + u.completion_tokens,
    )


def _response_id(source: str) -> str:
    return "resp_" + (source or "nexus").replace("chatcmpl-", "")


def _message_item(item_id: str, text: str, status: str = "completed") -> rw.OutputMessage:
    content = [rw.OutputText(text=text)] if status == "completed" else []
    return rw.OutputMessage(id=item_id, status=status, content=content)


def _reasoning_item(item_id: str, text: str) -> rw.OutputReasoning:
    return rw.OutputReasoning(id=item_id, summary=[rw.SummaryText(text=text)])


def to_response(resp: ChatResponse, model: str) -> rw.ResponseObject:
    base = resp.id or "nexus"
    output: list[rw.OutputItem] = []
    status = "completed"
    incomplete = None
    if resp.choices:
        choice = resp.choices[0]
        msg = choice.message
        if msg.reasoning_content:
            output.append(_reasoning_item(f"rs_{base}", msg.reasoning_content))
        if msg.content or msg.refusal or not msg.tool_calls:
            output.append(_message_item(f"msg_{base}", msg.content or msg.refusal or ""))
        for i, call in enumerate(msg.tool_calls or ()):
            output.append(
                rw.OutputFunctionCall(
                    id=f"fc_{base}_{i}",
                    call_id=call.id,
                    name=call.function.name,
                    arguments=call.function.arguments,
                    status="completed",
                )
            )
        if choice.finish_reason == "length":
            status, incomplete = "incomplete", rw.IncompleteDetails(reason="max_output_tokens")
    return rw.ResponseObject(
        id=_response_id(resp.id),
        created_at=resp.created or int(time.time()),
        status=status,
        incomplete_details=incomplete,
        model=model,
        output=output,
        usage=usage_out(resp.usage),
    )


def encode_response(resp: ChatResponse, model: str) -> bytes:
    return _encoder.encode(to_response(resp, model))


# --- stream: canonical chunks -> Responses events --------------------------------------------


class ResponsesEvents:
    """Canonical chunks -> the Responses event grammar: response.created,
    an output item per reasoning summary / message / function call (added,
    deltas, done), then response.completed with usage."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.seq = 0
        self.rid = ""
        self.created = int(time.time())
        self.started = False
        self.output: list[rw.OutputItem] = []
        self.open: rw.OutputItem | None = None  # the item being streamed
        self.open_key: tuple[str, int] | None = None
        self.text: list[str] = []
        self.finish_reason: str | None = None
        self.usage: Usage | None = None

    def _next(self) -> int:
        self.seq += 1
        return self.seq - 1

    def _frame(self, event: rw.StreamEvent) -> bytes:
        return b"event: " + rw.event_type(event).encode() + b"\ndata: " + _encoder.encode(event) + b"\n\n"

    def _envelope(self, status: str, output: list[rw.OutputItem]) -> rw.ResponseObject:
        return rw.ResponseObject(
            id=self.rid, created_at=self.created, status=status, model=self.model, output=output
        )

    def _start(self, chunk_id: str) -> bytes:
        self.started = True
        self.rid = _response_id(chunk_id)
        env = self._envelope("in_progress", [])
        return self._frame(rw.ResponseCreated(sequence_number=self._next(), response=env)) + self._frame(
            rw.ResponseInProgress(sequence_number=self._next(), response=env)
        )

    def _close(self) -> bytes:
        item = self.open
        if item is None:
            return b""
        self.open, self.open_key = None, None
        index = len(self.output)
        out = b""
        text = "".join(self.text)
        self.text = []
        done: rw.OutputItem
        if isinstance(item, rw.OutputMessage):
            part = rw.OutputText(text=text)
            out += self._frame(
                rw.OutputTextDone(
                    sequence_number=self._next(),
                    item_id=item.id,
                    output_index=index,
                    content_index=0,
                    text=text,
                )
            )
            out += self._frame(
                rw.ContentPartDone(
                    sequence_number=self._next(),
                    item_id=item.id,
                    output_index=index,
                    content_index=0,
                    part=part,
                )
            )
            done = _message_item(item.id, text)
        elif isinstance(item, rw.OutputFunctionCall):
            done = msgspec.structs.replace(item, arguments=text, status="completed")
            out += self._frame(
                rw.FunctionCallArgumentsDone(
                    sequence_number=self._next(), item_id=item.id, output_index=index, arguments=text
                )
            )
        else:
            out += self._frame(
                rw.ReasoningSummaryTextDone(
                    sequence_number=self._next(),
                    item_id=item.id,
                    output_index=index,
                    summary_index=0,
                    text=text,
                )
            )
            done = _reasoning_item(item.id, text)
        out += self._frame(rw.OutputItemDone(sequence_number=self._next(), output_index=index, item=done))
        self.output.append(done)
        return out

    def _open(self, key: tuple[str, int], item: rw.OutputItem) -> bytes:
        if self.open_key == key:
            return b""
        out = self._close()
        self.open, self.open_key = item, key
        index = len(self.output)
        out += self._frame(rw.OutputItemAdded(sequence_number=self._next(), output_index=index, item=item))
        if isinstance(item, rw.OutputMessage):
            out += self._frame(
                rw.ContentPartAdded(
                    sequence_number=self._next(),
                    item_id=item.id,
                    output_index=index,
                    content_index=0,
                    part=rw.OutputText(text=""),
                )
            )
        elif isinstance(item, rw.OutputReasoning):
            out += self._frame(
                rw.ReasoningSummaryPartAdded(
                    sequence_number=self._next(),
                    item_id=item.id,
                    output_index=index,
                    summary_index=0,
                    part=rw.SummaryText(text=""),
                )
            )
        return out

    def _open_id(self) -> str:
        return self.open.id if self.open is not None else ""

    def feed(self, chunk: ChatChunk) -> bytes:
        out = b"" if self.started else self._start(chunk.id)
        if chunk.usage is not None:
            self.usage = chunk.usage
        base = self.rid[5:]
        for choice in chunk.choices[:1]:
            d = choice.delta
            index = len(self.output)
            if d.reasoning_content:
                out += self._open(("reasoning", -1), rw.OutputReasoning(id=f"rs_{base}_{index}", summary=[]))
                self.text.append(d.reasoning_content)
                out += self._frame(
                    rw.ReasoningSummaryTextDelta(
                        sequence_number=self._next(),
                        item_id=self._open_id(),
                        output_index=len(self.output),
                        summary_index=0,
                        delta=d.reasoning_content,
                    )
                )
            if d.content:
                out += self._open(
                    ("message", -1), _message_item(f"msg_{base}_{len(self.output)}", "", "in_progress")
                )
                self.text.append(d.content)
                out += self._frame(
                    rw.OutputTextDelta(
                        sequence_number=self._next(),
                        item_id=self._open_id(),
                        output_index=len(self.output),
                        content_index=0,
                        delta=d.content,
                    )
                )
            for tc in d.tool_calls or ():
                fn = tc.function
                if self.open_key != ("call", tc.index):
                    item = rw.OutputFunctionCall(
                        id=f"fc_{base}_{len(self.output)}",
                        call_id=tc.id or "",
                        name=(fn.name if fn else "") or "",
                        arguments="",
                        status="in_progress",
                    )
                    out += self._open(("call", tc.index), item)
                if fn is not None and fn.arguments and self.open is not None:
                    self.text.append(fn.arguments)
                    out += self._frame(
                        rw.FunctionCallArgumentsDelta(
                            sequence_number=self._next(),
                            item_id=self.open.id,
                            output_index=len(self.output),
                            delta=fn.arguments,
                        )
                    )
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
        return out

    def finish(self) -> bytes:
        out = b"" if self.started else self._start("")
        out += self._close()
        env = self._envelope("completed", self.output)
        env.usage = usage_out(self.usage)
        if self.finish_reason == "length":
            env.status = "incomplete"
            env.incomplete_details = rw.IncompleteDetails(reason="max_output_tokens")
            return out + self._frame(rw.ResponseIncomplete(sequence_number=self._next(), response=env))
        return out + self._frame(rw.ResponseCompleted(sequence_number=self._next(), response=env))

    def error(self, failure: Failure) -> bytes:
        out = b"" if self.started else self._start("")
        env = self._envelope("failed", self.output)
        env.error = rw.ResponseError(
            code="server_error" if failure.status >= 500 else failure.code, message=failure.message
        )
        return out + self._frame(rw.ResponseFailed(sequence_number=self._next(), response=env))
