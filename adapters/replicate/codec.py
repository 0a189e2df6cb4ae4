"""Replicate predictions for language models.

The conversation goes in as ``input.prompt`` (+ ``system_prompt``); model
specific inputs ride in nexus_ext.replicate.input.  Unary calls send
``Prefer: wait`` so the prediction comes back finished.  Streaming is two
requests: the prediction is created with ``stream: true`` and the caller
(ingress) then GETs ``stream_url(prediction)``, whose SSE this codec's
stream decoder reads.
"""

from __future__ import annotations

from collections.abc import Mapping

from adapters.base import Capability, CodecBase, CodecError, StreamDecoder, StreamError, Target, WireRequest
from adapters.canonical import (
    CanonicalError,
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Choice,
    EmbeddingRequest,
    EmbeddingResponse,
    ResponseMessage,
    Usage,
)
from adapters.replicate import wire as w
from adapters.wirekit import errors as e
from adapters.wirekit.chunks import ChunkFactory
from adapters.wirekit.jsonio import decode_upstream, encode, join_url
from adapters.wirekit.sse import SSEParser

DEFAULT_BASE_URL = "https://api.replicate.com"
P = "replicate"


def prompt(req: ChatRequest) -> tuple[str, str | None]:
    """(prompt, system_prompt).  One user turn is sent as is; a longer
    conversation as a plain transcript, since prediction inputs are text."""
    system = "\n\n".join(m.text() for m in req.messages if m.role in ("system", "developer")) or None
    turns = [m for m in req.messages if m.role not in ("system", "developer")]
    if any(m.tool_calls or m.role == "tool" for m in turns):
        raise e.unsupported(P, "tool calls are not supported on Replicate predictions")
    if len(turns) == 1 and turns[0].role == "user":
        return turns[0].text(), system
    lines = [f"{m.role}: {m.text()}" for m in turns]
    return "\n".join([*lines, "assistant:"]), system


def stream_url(prediction: bytes) -> str:
    parsed = decode_upstream(prediction, w.Prediction, P)
    if parsed.urls is None or not parsed.urls.stream:
        raise e.bad_upstream(P, "the prediction has no stream URL (does this model stream?)")
    return parsed.urls.stream


class ReplicateStreamDecoder:
    def __init__(self, model: str) -> None:
        self._sse = SSEParser()
        self._chunks = ChunkFactory(model=model)
        self._started = False
        self._done = False

    def feed(self, data: bytes) -> list[ChatChunk]:
        out: list[ChatChunk] = []
        for ev in self._sse.feed(data):
            self._event(ev.event, ev.data, out)
        return out

    def close(self) -> list[ChatChunk]:
        out: list[ChatChunk] = []
        for ev in self._sse.close():
            self._event(ev.event, ev.data, out)
        return out

    def _event(self, name: str, data: str, out: list[ChatChunk]) -> None:
        f = self._chunks
        if not self._started and name in ("output", "done"):
            self._started = True
            out.append(f.role())
        if name == "output":
            if data:
                out.append(f.text(data))
        elif name == "done":
            if not self._done:
                self._done = True
                canceled = '"canceled"' in data
                out.append(f.finish("unknown" if canceled else "stop"))
        elif name == "error":
            raise StreamError(
                e.make("upstream_error", "replicate: the prediction failed mid-stream"), list(out)
            )
        # other events (e.g. "logs") carry nothing for the caller


class ReplicateCodec(CodecBase):
    two_step_stream = True
    name = P
    capabilities = frozenset({Capability.TEXT, Capability.STREAM})

    def encode_chat(self, request: ChatRequest, target: Target) -> WireRequest:
        text, system = prompt(request)
        ext = (request.nexus_ext or {}).get(P, {})
        inputs: dict[str, object] = {"prompt": text}
        if system:
            inputs["system_prompt"] = system
        budget = request.output_budget()
        if budget is not None:
            inputs["max_tokens"] = budget
        if request.temperature is not None:
            inputs["temperature"] = request.temperature
        if request.top_p is not None:
            inputs["top_p"] = request.top_p
        inputs.update(ext.get("input") or {})
        model, _, version = target.provider_model.partition(":")
        if version:
            path = "/v1/predictions"
            body = w.PredictionRequest(input=inputs, version=version, stream=True if request.stream else None)
        else:
            path = f"/v1/models/{model}/predictions"
            body = w.PredictionRequest(input=inputs, stream=True if request.stream else None)
        headers = {"content-type": "application/json", **target.headers}
        if not request.stream:
            headers["prefer"] = "wait"
        if target.api_key:
            headers["authorization"] = f"Token {target.api_key}"
        return WireRequest(
            url=join_url(target.base_url or DEFAULT_BASE_URL, path), headers=headers, body=encode(body)
        )

    def decode_chat(self, body: bytes, target: Target) -> ChatResponse:
        pred = decode_upstream(body, w.Prediction, P)
        if pred.status == "failed":
            raise e.bad_upstream(P, "the prediction failed")
        if pred.status == "canceled":
            raise e.bad_upstream(P, "the prediction was canceled")
        if pred.status != "succeeded":
            # Prefer: wait gave up before the model finished.
            raise CodecError(e.make("timeout", f"replicate: prediction still {pred.status} after the wait"))
        out = pred.output
        content = "".join(str(x) for x in out) if isinstance(out, list) else ("" if out is None else str(out))
        m = pred.metrics or w.Metrics()
        return ChatResponse(
            id=pred.id,
            model=pred.model or target.provider_model,
            choices=[Choice(index=0, message=ResponseMessage(content=content), finish_reason="stop")],
            usage=Usage(
                prompt_tokens=m.input_token_count,
                completion_tokens=m.output_token_count,
                total_tokens=m.input_token_count + m.output_token_count,
            ),
        )

    def stream_decoder(self, target: Target) -> StreamDecoder:
        return ReplicateStreamDecoder(target.provider_model)

    def stream_url(self, created: bytes) -> str:
        return stream_url(created)

    def encode_embeddings(self, request: EmbeddingRequest, target: Target) -> WireRequest:
        raise e.not_served(P, "embeddings")

    def decode_embeddings(self, body: bytes, target: Target) -> EmbeddingResponse:
        raise e.not_served(P, "embeddings")

    def normalise_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> CanonicalError:
        return e.from_status(P, status, None, headers)
