"""The canonical request / response / chunk types: OpenAI chat-completions
shaped, wide enough for every provider (tools, vision and audio parts,
json_schema, reasoning, cached tokens).

Inbound API payloads are decoded into these types; fields a provider-neutral
gateway has no use for are kept in ``extra`` (via ``extra_fields``) so a
same-format passthrough loses nothing.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

# Bounds on a caller's numbers, checked as the request is decoded (a 400
# naming the field).  Past them no provider accepts the request anyway, and
# unbounded integers went on to overflow what the quota store holds (a
# max_tokens of 2**63 answered "quota store unreachable").
TokenCount = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
Choices = Annotated[int, msgspec.Meta(ge=1, le=128)]
Seed = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
Temperature = Annotated[float, msgspec.Meta(ge=0, le=2)]
Probability = Annotated[float, msgspec.Meta(ge=0, le=1)]
Penalty = Annotated[float, msgspec.Meta(ge=-2, le=2)]
TopLogprobs = Annotated[int, msgspec.Meta(ge=0, le=20)]
Dimensions = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]

# --- content parts -----------------------------------------------------------


class TextPart(msgspec.Struct, tag_field="type", tag="text", omit_defaults=True):
    text: str


class ImageURL(msgspec.Struct, omit_defaults=True):
    url: str  # https URL or data: URI (base64)
    detail: str | None = None  # auto | low | high


class ImagePart(msgspec.Struct, tag_field="type", tag="image_url", omit_defaults=True):
    image_url: ImageURL


class InputAudio(msgspec.Struct, omit_defaults=True):
    data: str
    format: str


class AudioPart(msgspec.Struct, tag_field="type", tag="input_audio", omit_defaults=True):
    input_audio: InputAudio


class FileRef(msgspec.Struct, omit_defaults=True):
    file_id: str | None = None
    file_data: str | None = None
    filename: str | None = None


class FilePart(msgspec.Struct, tag_field="type", tag="file", omit_defaults=True):
    file: FileRef


class RefusalPart(msgspec.Struct, tag_field="type", tag="refusal", omit_defaults=True):
    refusal: str


ContentPart = TextPart | ImagePart | AudioPart | FilePart | RefusalPart


# --- tools -------------------------------------------------------------------


class FunctionDef(msgspec.Struct, omit_defaults=True):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(msgspec.Struct, omit_defaults=True):
    function: FunctionDef
    type: str = "function"


class FunctionCall(msgspec.Struct, omit_defaults=True):
    name: str = ""
    arguments: str = ""  # JSON text, as OpenAI sends it


class ToolCall(msgspec.Struct, omit_defaults=True):
    id: str
    function: FunctionCall
    type: str = "function"


class ToolChoiceFunction(msgspec.Struct):
    name: str


class ToolChoiceNamed(msgspec.Struct, omit_defaults=True):
    function: ToolChoiceFunction
    type: str = "function"


# "none" | "auto" | "required" | a named function
ToolChoice = str | ToolChoiceNamed


# --- messages ----------------------------------------------------------------

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class Message(msgspec.Struct, omit_defaults=True):
    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    # Reasoning text a provider returned (DeepSeek/Moonshot reasoning_content,
    # Anthropic thinking, Gemini thoughts); carried back on multi-turn calls.
    reasoning_content: str | None = None
    refusal: str | None = None

    def text(self) -> str:
        """The message's text parts joined: what hooks and estimators read."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))


# --- structured output -------------------------------------------------------


class JSONSchemaSpec(msgspec.Struct, omit_defaults=True):
    name: str
    schema: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class ResponseFormat(msgspec.Struct, omit_defaults=True):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaSpec | None = None


class StreamOptions(msgspec.Struct, omit_defaults=True):
    include_usage: bool | None = None


# --- the request -------------------------------------------------------------


class ChatRequest(msgspec.Struct, omit_defaults=True):
    model: str
    messages: list[Message]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: TokenCount | None = None
    max_completion_tokens: TokenCount | None = None
    temperature: Temperature | None = None
    top_p: Probability | None = None
    n: Choices | None = None
    stop: str | list[str] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    seed: Seed | None = None
    user: str | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: str | None = None  # low | medium | high (OpenAI o-series style)
    logprobs: bool | None = None
    top_logprobs: TopLogprobs | None = None
    metadata: dict[str, str] | None = None
    # Vendor-only knobs ride here: {"anthropic": {"thinking": {...}}, ...}
    # (the original's nexus.ext.<provider>.<key>).
    nexus_ext: dict[str, dict[str, Any]] | None = None

    def output_budget(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


# --- the response ------------------------------------------------------------


class PromptTokensDetails(msgspec.Struct, omit_defaults=True):
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    audio_tokens: int = 0


class CompletionTokensDetails(msgspec.Struct, omit_defaults=True):
    reasoning_tokens: int = 0
    audio_tokens: int = 0
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0


class Usage(msgspec.Struct, omit_defaults=True):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None

    @property
    def cached_tokens(self) -> int:
        return self.prompt_tokens_details.cached_tokens if self.prompt_tokens_details else 0

    @property
    def cache_creation_tokens(self) -> int:
        return self.prompt_tokens_details.cache_creation_tokens if self.prompt_tokens_details else 0

    @property
    def reasoning_tokens(self) -> int:
        return self.completion_tokens_details.reasoning_tokens if self.completion_tokens_details else 0


# finish reasons a provider may send beyond OpenAI's are mapped to one of
# these; anything unknown becomes "unknown" with a warning, never a crash.
FinishReason = str  # stop | length | tool_calls | content_filter | function_call | unknown


class ResponseMessage(msgspec.Struct, omit_defaults=True):
    role: str = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    reasoning_content: str | None = None
    refusal: str | None = None


class Choice(msgspec.Struct, omit_defaults=True):
    index: int
    message: ResponseMessage
    finish_reason: FinishReason | None = None
    logprobs: Any = None


class ChatResponse(msgspec.Struct, omit_defaults=True):
    id: str
    model: str
    choices: list[Choice]
    created: int = 0
    object: str = "chat.completion"
    usage: Usage | None = None
    system_fingerprint: str | None = None
    service_tier: str | None = None


# --- stream chunks -----------------------------------------------------------


class FunctionCallDelta(msgspec.Struct, omit_defaults=True):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(msgspec.Struct, omit_defaults=True):
    index: int
    id: str | None = None
    type: str | None = None
    function: FunctionCallDelta | None = None


class Delta(msgspec.Struct, omit_defaults=True):
    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    refusal: str | None = None


class ChunkChoice(msgspec.Struct, omit_defaults=True):
    index: int
    delta: Delta
    finish_reason: FinishReason | None = None
    logprobs: Any = None


class ChatChunk(msgspec.Struct, omit_defaults=True):
    id: str
    model: str
    choices: list[ChunkChoice]
    created: int = 0
    object: str = "chat.completion.chunk"
    usage: Usage | None = None
    system_fingerprint: str | None = None


# --- embeddings --------------------------------------------------------------


class EmbeddingRequest(msgspec.Struct, omit_defaults=True):
    model: str
    # str | list[str] | list[int] | list[list[int]]: msgspec cannot decode a
    # union of several array types, so the items are checked by the codecs.
    input: str | list[Any]
    encoding_format: str | None = None  # float | base64
    dimensions: Dimensions | None = None
    user: str | None = None
    nexus_ext: dict[str, dict[str, Any]] | None = None


class Embedding(msgspec.Struct, omit_defaults=True):
    index: int
    embedding: list[float] | str
    object: str = "embedding"


class EmbeddingUsage(msgspec.Struct, omit_defaults=True):
    prompt_tokens: int = 0
    total_tokens: int = 0


class EmbeddingResponse(msgspec.Struct, omit_defaults=True):
    data: list[Embedding]
    model: str
    object: str = "list"
    usage: EmbeddingUsage | None = None


# --- canonical errors ----------------------------------------------------------

ErrorCode = Literal[
    "invalid_request",
    "auth_failed",
    "rate_limited",
    "timeout",
    "upstream_error",
    "endpoint_unsupported",
    "not_implemented",
    "no_compatible_provider",
]


class CanonicalError(msgspec.Struct, omit_defaults=True):
    code: ErrorCode
    message: str
    status: int  # the HTTP status to give the caller
    provider_status: int | None = None
    retryable: bool = False
    retry_after_s: float | None = None
