"""The Gemini generateContent / embedContent API as msgspec Structs
(camelCase on the wire).  A Part is one struct with optional members, as
the API defines it: exactly one of text/inlineData/fileData/functionCall/
functionResponse is set, and a part with none we know is skipped."""

from __future__ import annotations

from typing import Any

import msgspec


class Blob(msgspec.Struct, rename="camel", omit_defaults=True):
    mime_type: str
    data: str


class FileData(msgspec.Struct, rename="camel", omit_defaults=True):
    file_uri: str
    mime_type: str | None = None


class FunctionCall(msgspec.Struct, rename="camel", omit_defaults=True):
    name: str
    args: dict[str, Any] | None = None
    id: str | None = None


class FunctionResponse(msgspec.Struct, rename="camel", omit_defaults=True):
    name: str
    response: dict[str, Any]
    id: str | None = None


class Part(msgspec.Struct, rename="camel", omit_defaults=True):
    text: str | None = None
    thought: bool | None = None
    thought_signature: str | None = None
    inline_data: Blob | None = None
    file_data: FileData | None = None
    function_call: FunctionCall | None = None
    function_response: FunctionResponse | None = None


class Content(msgspec.Struct, rename="camel", omit_defaults=True):
    parts: list[Part] = []
    role: str | None = None  # user | model


class FunctionDeclaration(msgspec.Struct, rename="camel", omit_defaults=True):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    # JSON Schema as is (the SDKs send it for schemas OpenAPI's subset cannot say)
    parameters_json_schema: dict[str, Any] | None = None


class GeminiTool(msgspec.Struct, rename="camel", omit_defaults=True):
    function_declarations: list[FunctionDeclaration] | None = None


class FunctionCallingConfig(msgspec.Struct, rename="camel", omit_defaults=True):
    mode: str  # AUTO | ANY | NONE
    allowed_function_names: list[str] | None = None


class ToolConfig(msgspec.Struct, rename="camel", omit_defaults=True):
    function_calling_config: FunctionCallingConfig


class ThinkingConfig(msgspec.Struct, rename="camel", omit_defaults=True):
    thinking_budget: int | None = None
    include_thoughts: bool | None = None
    thinking_level: str | None = None


class GenerationConfig(msgspec.Struct, rename="camel", omit_defaults=True):
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_output_tokens: int | None = None
    stop_sequences: list[str] | None = None
    candidate_count: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    response_mime_type: str | None = None
    response_schema: dict[str, Any] | None = None
    response_json_schema: dict[str, Any] | None = None
    response_logprobs: bool | None = None
    logprobs: int | None = None
    thinking_config: ThinkingConfig | None = None


class GenerateContentRequest(msgspec.Struct, rename="camel", omit_defaults=True):
    contents: list[Content]
    system_instruction: Content | None = None
    tools: list[GeminiTool] | None = None
    tool_config: ToolConfig | None = None
    generation_config: GenerationConfig | None = None
    safety_settings: list[dict[str, Any]] | None = None
    cached_content: str | None = None


class Candidate(msgspec.Struct, rename="camel", omit_defaults=True):
    content: Content | None = None
    finish_reason: str | None = None
    index: int = 0


class UsageMetadata(msgspec.Struct, rename="camel", omit_defaults=True):
    prompt_token_count: int = 0
    candidates_token_count: int = 0
    total_token_count: int = 0
    cached_content_token_count: int = 0
    thoughts_token_count: int = 0
    tool_use_prompt_token_count: int = 0


class PromptFeedback(msgspec.Struct, rename="camel", omit_defaults=True):
    block_reason: str | None = None


class GenerateContentResponse(msgspec.Struct, rename="camel", omit_defaults=True):
    candidates: list[Candidate] = []
    usage_metadata: UsageMetadata | None = None
    model_version: str | None = None
    response_id: str | None = None
    prompt_feedback: PromptFeedback | None = None


# --- embeddings ------------------------------------------------------------------


class EmbedContentRequest(msgspec.Struct, rename="camel", omit_defaults=True):
    content: Content
    model: str | None = None  # required inside batchEmbedContents
    task_type: str | None = None
    title: str | None = None
    output_dimensionality: int | None = None


class BatchEmbedContentsRequest(msgspec.Struct, rename="camel"):
    requests: list[EmbedContentRequest]


class ContentEmbedding(msgspec.Struct, rename="camel"):
    values: list[float]


class EmbedResponse(msgspec.Struct, rename="camel", omit_defaults=True):
    """Either shape: embedContent answers ``embedding``, batch ``embeddings``."""

    embedding: ContentEmbedding | None = None
    embeddings: list[ContentEmbedding] | None = None


# --- errors -----------------------------------------------------------------------


class ErrorDetail(msgspec.Struct, omit_defaults=True):
    code: int = 0
    message: str = ""
    status: str = ""


class ErrorBody(msgspec.Struct):
    error: ErrorDetail
