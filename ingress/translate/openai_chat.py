"""The OpenAI chat completions grammar: the request body is the canonical
request itself (canonical is OpenAI-shaped); answers, stream chunks,
embeddings and errors are written as ``ingress.translate.openai_wire``."""

from __future__ import annotations

import msgspec

from adapters.canonical import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Delta,
    EmbeddingResponse,
    ResponseMessage,
    ToolCallDelta,
    Usage,
)
from ingress.translate import openai_wire as ow
from ingress.translate.grammar import Failure, StreamEncoder

_encoder = msgspec.json.Encoder()
_chat = msgspec.json.Decoder(ChatRequest)


def usage_out(usage: Usage) -> ow.UsageOut:
    prompt = completion = None
    if usage.prompt_tokens_details is not None:
        prompt = ow.PromptTokensDetails(
            cached_tokens=usage.cached_tokens, cache_creation_tokens=usage.cache_creation_tokens
        )
    if usage.completion_tokens_details is not None:
        completion = ow.CompletionTokensDetails(reasoning_tokens=usage.reasoning_tokens)
    return ow.UsageOut(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens or usage.prompt_tokens + usage.completion_tokens,
        prompt_tokens_details=prompt,
        completion_tokens_details=completion,
    )


def _message(msg: ResponseMessage) -> ow.MessageOut:
    calls = None
    if msg.tool_calls is not None:
        calls = [
            ow.ToolCallOut(
                id=c.id,
                type=c.type or "function",
                function=ow.FunctionOut(name=c.function.name or "", arguments=c.function.arguments or ""),
            )
            for c in msg.tool_calls
        ]
    return ow.MessageOut(
        role=msg.role or "assistant",
        content=msg.content,
        reasoning_content=msg.reasoning_content,
        tool_calls=calls,
        refusal=msg.refusal,
    )


def chat_completion(resp: ChatResponse, model: str) -> ow.ChatCompletion:
    return ow.ChatCompletion(
        id=resp.id,
        object="chat.completion",
        created=resp.created,
        model=model,
        choices=[
            ow.ChoiceOut(
                index=c.index,
                message=_message(c.message),
                finish_reason=c.finish_reason,
                logprobs=c.logprobs,
            )
            for c in resp.choices
        ],
        usage=None if resp.usage is None else usage_out(resp.usage),
        system_fingerprint=resp.system_fingerprint,
        service_tier=resp.service_tier,
    )


def encode_chat_response(resp: ChatResponse, model: str) -> bytes:
    return _encoder.encode(chat_completion(resp, model))


def _tool_delta(tc: ToolCallDelta) -> ow.ToolCallDeltaOut:
    fn = tc.function
    return ow.ToolCallDeltaOut(
        index=tc.index,
        id=tc.id,
        # The SDKs want the type on the delta that opens a call.
        type=tc.type or ("function" if tc.id else None),
        function=None if fn is None else ow.FunctionDeltaOut(name=fn.name, arguments=fn.arguments),
    )


def _delta(d: Delta) -> ow.DeltaOut:
    return ow.DeltaOut(
        role=d.role,
        content=d.content,
        reasoning_content=d.reasoning_content,
        tool_calls=None if d.tool_calls is None else [_tool_delta(tc) for tc in d.tool_calls],
        refusal=d.refusal,
    )


def completion_chunk(chunk: ChatChunk, model: str) -> ow.ChatCompletionChunk:
    return ow.ChatCompletionChunk(
        id=chunk.id,
        object="chat.completion.chunk",
        created=chunk.created,
        model=model,
        choices=[
            ow.ChunkChoiceOut(
                index=c.index, delta=_delta(c.delta), finish_reason=c.finish_reason, logprobs=c.logprobs
            )
            for c in chunk.choices
        ],
        usage=None if chunk.usage is None else usage_out(chunk.usage),
        system_fingerprint=chunk.system_fingerprint,
    )


def embeddings_response(resp: EmbeddingResponse, model: str) -> bytes:
    usage = resp.usage
    prompt = usage.prompt_tokens if usage else 0
    total = (usage.total_tokens or prompt) if usage else 0
    return _encoder.encode(
        ow.EmbeddingList(
            data=[ow.EmbeddingOut(index=e.index, embedding=e.embedding) for e in resp.data],
            model=model,
            usage=ow.EmbeddingUsageOut(prompt_tokens=prompt, total_tokens=total),
        )
    )


def error_body(failure: Failure) -> bytes:
    return _encoder.encode(
        ow.ErrorEnvelope(
            error=ow.ErrorOut(
                message=failure.message, type=failure.type, code=failure.code, param=failure.param
            )
        )
    )


class OpenAIChunks:
    __slots__ = ("include_usage", "model")

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage

    def feed(self, chunk: ChatChunk) -> bytes:
        if not chunk.choices and not (self.include_usage and chunk.usage is not None):
            return b""
        if chunk.usage is not None and not self.include_usage:
            chunk = msgspec.structs.replace(chunk, usage=None)
        return b"data: " + _encoder.encode(completion_chunk(chunk, self.model)) + b"\n\n"

    def finish(self) -> bytes:
        return b"data: [DONE]\n\n"

    def error(self, failure: Failure) -> bytes:
        return b"data: " + error_body(failure) + b"\n\n"


class OpenAIChat:
    name = "openai"

    def decode(self, raw: bytes) -> ChatRequest:
        return _chat.decode(raw)

    def encode_response(self, resp: ChatResponse, model: str) -> bytes:
        return encode_chat_response(resp, model)

    def stream_encoder(self, model: str, include_usage: bool) -> StreamEncoder:
        return OpenAIChunks(model, include_usage)

    def error_body(self, failure: Failure) -> bytes:
        return error_body(failure)


OPENAI_CHAT = OpenAIChat()
