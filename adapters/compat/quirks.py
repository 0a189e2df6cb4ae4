"""Per-model request rewrites, expressed as data.  Each quirk names the
model-id prefixes it applies to and is a pure ChatRequest -> ChatRequest
function, applied before the OpenAI encoding."""

from __future__ import annotations

from typing import Any

import msgspec

from adapters.canonical import ChatRequest


class Quirk(msgspec.Struct, frozen=True, kw_only=True):
    models: tuple[str, ...] = ()  # model-id prefixes; empty = every model
    why: str = ""

    def applies(self, model: str) -> bool:
        name = model.rsplit("/", 1)[-1].lower()
        return not self.models or any(name.startswith(p) for p in self.models)

    def apply(self, req: ChatRequest) -> ChatRequest:
        raise NotImplementedError


class ForceField(Quirk, frozen=True, kw_only=True, tag="force"):
    field: str
    value: Any

    def apply(self, req: ChatRequest) -> ChatRequest:
        return msgspec.structs.replace(req, **{self.field: self.value})


class DropForcedToolChoice(Quirk, frozen=True, kw_only=True, tag="drop_forced_tool_choice"):
    """Thinking models that refuse tool_choice=required / a named tool:
    the call still offers the tools, letting the model choose."""

    def apply(self, req: ChatRequest) -> ChatRequest:
        if req.tool_choice is None or req.tool_choice in ("auto", "none"):
            return req
        return msgspec.structs.replace(req, tool_choice=None)


class MaxTokensField(Quirk, frozen=True, kw_only=True, tag="max_tokens_field"):
    """Providers that know max_tokens only: max_completion_tokens moves there."""

    def apply(self, req: ChatRequest) -> ChatRequest:
        if req.max_completion_tokens is None:
            return req
        return msgspec.structs.replace(req, max_tokens=req.max_completion_tokens, max_completion_tokens=None)


class DropMessageReasoning(Quirk, frozen=True, kw_only=True, tag="drop_message_reasoning"):
    """reasoning_content on input messages (carried over from a reasoning
    provider earlier in the conversation) is an unknown field to most
    OpenAI-compatible APIs, and the strict ones (Mistral) answer 422."""

    def apply(self, req: ChatRequest) -> ChatRequest:
        if not any(m.reasoning_content for m in req.messages):
            return req
        return msgspec.structs.replace(
            req,
            messages=[
                msgspec.structs.replace(m, reasoning_content=None) if m.reasoning_content else m
                for m in req.messages
            ],
        )


class DropFields(Quirk, frozen=True, kw_only=True, tag="drop_fields"):
    fields: tuple[str, ...]

    def apply(self, req: ChatRequest) -> ChatRequest:
        return msgspec.structs.replace(req, **dict.fromkeys(self.fields))
