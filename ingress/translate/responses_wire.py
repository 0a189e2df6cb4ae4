"""The OpenAI Responses API as typed structs: what a caller sends (the
request, its input items and their content parts) and what Nexus writes back
(the response object, its output items, the stream events).

Reading is tolerant where the API is wider than a translation through chat:
fields not read here are not declared (a native target gets the caller's
body as it is), and the item and part kinds chat cannot carry are turned
away by name before these types see them (``responses.py``).  Writing is
exact: every field the official SDKs expect is present, ``null`` included.
"""

from __future__ import annotations

from typing import Any

import msgspec

from adapters.canonical import Probability, Temperature, TokenCount

# --- the request ----------------------------------------------------------------------


class _Part(msgspec.Struct, tag_field="type"):
    pass


class InputTextPart(_Part, tag="input_text"):
    text: str = ""


class OutputTextPart(_Part, tag="output_text"):
    text: str = ""


class TextPart(_Part, tag="text"):
    text: str = ""


class InputImagePart(_Part, tag="input_image"):
    image_url: str | None = None  # None: a file_id image, which only a native target reads
    detail: str | None = None


class RefusalPart(_Part, tag="refusal"):
    refusal: str = ""


ContentPart = InputTextPart | OutputTextPart | TextPart | InputImagePart | RefusalPart
PART_TYPES = frozenset({"input_text", "output_text", "text", "input_image", "refusal"})  # translated


class _Item(msgspec.Struct, tag_field="type"):
    pass


class MessageItem(_Item, tag="message"):
    role: str | None = None
    content: str | list[ContentPart] | None = None


class FunctionCallItem(_Item, tag="function_call"):
    call_id: str = ""
    name: str = ""
    arguments: str = ""


class FunctionCallOutputItem(_Item, tag="function_call_output"):
    call_id: str = ""
    output: Any = ""  # a string, or content parts a chat target gets as their JSON


class SummaryPart(msgspec.Struct):
    text: str = ""


class ReasoningItem(_Item, tag="reasoning"):
    summary: list[SummaryPart] = []


class ItemReference(_Item, tag="item_reference"):
    id: str = ""


InputItem = MessageItem | FunctionCallItem | FunctionCallOutputItem | ReasoningItem | ItemReference
ITEM_TYPES = frozenset({"message", "function_call", "function_call_output", "reasoning", "item_reference"})

# Every type name the API defines, translated or not: an error may name one
# of these, never whatever else a caller sent in its place (errors are
# shown, logged and stored in events; the caller's text stays out of them).
API_PART_TYPES = PART_TYPES | {"input_file", "input_audio", "summary_text"}
API_ITEM_TYPES = ITEM_TYPES | {
    "file_search_call",
    "web_search_call",
    "computer_call",
    "computer_call_output",
    "image_generation_call",
    "code_interpreter_call",
    "local_shell_call",
    "local_shell_call_output",
    "mcp_list_tools",
    "mcp_approval_request",
    "mcp_approval_response",
    "mcp_call",
    "custom_tool_call",
    "custom_tool_call_output",
}
API_TOOL_TYPES = frozenset(
    {
        "web_search",
        "web_search_preview",
        "file_search",
        "computer_use_preview",
        "code_interpreter",
        "image_generation",
        "mcp",
        "local_shell",
        "custom",
    }
)


class ToolSpec(msgspec.Struct):
    """A tool of the request; only ``function`` tools translate (the fields
    of built-in ones are not read)."""

    type: str
    name: str = ""
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedToolChoice(msgspec.Struct):
    type: str
    name: str | None = None


class FormatSpec(msgspec.Struct):
    type: str
    name: str = "output"
    schema: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class TextConfig(msgspec.Struct):
    format: FormatSpec | None = None


class ReasoningConfig(msgspec.Struct):
    effort: str | None = None


class ResponsesRequest(msgspec.Struct):
    """The fields read, typed: a wrong one is a 400 naming the field,
    whichever target serves the model.  ``input`` items are typed one by one
    (``InputItem``) once the request is known to translate."""

    model: str = ""
    input: str | list[Any] | None = None
    instructions: str | None = None
    max_output_tokens: TokenCount | None = None
    temperature: Temperature | None = None
    top_p: Probability | None = None
    tools: list[ToolSpec] | None = None
    tool_choice: str | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    stream: bool | None = None
    store: bool | None = None
    background: bool | None = None
    previous_response_id: str | None = None
    conversation: Any = None
    reasoning: ReasoningConfig | None = None
    text: TextConfig | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None


# --- the response object ----------------------------------------------------------------


class OutputText(msgspec.Struct, tag_field="type", tag="output_text"):
    text: str
    annotations: list[Any] = []


class SummaryText(msgspec.Struct, tag_field="type", tag="summary_text"):
    text: str


class OutputMessage(msgspec.Struct, tag_field="type", tag="message", kw_only=True):
    id: str
    status: str
    role: str = "assistant"
    content: list[OutputText]


class OutputFunctionCall(msgspec.Struct, tag_field="type", tag="function_call", kw_only=True):
    id: str
    call_id: str
    name: str
    arguments: str
    status: str


class OutputReasoning(msgspec.Struct, tag_field="type", tag="reasoning", kw_only=True):
    id: str
    summary: list[SummaryText]


OutputItem = OutputMessage | OutputFunctionCall | OutputReasoning


class InputTokensDetails(msgspec.Struct):
    cached_tokens: int = 0


class OutputTokensDetails(msgspec.Struct):
    reasoning_tokens: int = 0


class ResponseUsage(msgspec.Struct, kw_only=True):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class IncompleteDetails(msgspec.Struct):
    reason: str


class ResponseError(msgspec.Struct):
    code: str
    message: str


class ResponseObject(msgspec.Struct, kw_only=True):
    id: str
    object: str = "response"
    created_at: int
    status: str  # in_progress | completed | incomplete | failed
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    model: str
    output: list[OutputItem]
    parallel_tool_calls: bool = True
    tool_choice: str = "auto"
    tools: list[Any] = []
    metadata: dict[str, str] = {}
    usage: ResponseUsage | None = None


# --- stream events ------------------------------------------------------------------------


class _Event(msgspec.Struct, tag_field="type", kw_only=True):
    sequence_number: int


class ResponseCreated(_Event, tag="response.created"):
    response: ResponseObject


class ResponseInProgress(_Event, tag="response.in_progress"):
    response: ResponseObject


class ResponseCompleted(_Event, tag="response.completed"):
    response: ResponseObject


class ResponseIncomplete(_Event, tag="response.incomplete"):
    response: ResponseObject


class ResponseFailed(_Event, tag="response.failed"):
    response: ResponseObject


class OutputItemAdded(_Event, tag="response.output_item.added"):
    output_index: int
    item: OutputItem


class OutputItemDone(_Event, tag="response.output_item.done"):
    output_index: int
    item: OutputItem


class ContentPartAdded(_Event, tag="response.content_part.added"):
    item_id: str
    output_index: int
    content_index: int
    part: OutputText


class ContentPartDone(_Event, tag="response.content_part.done"):
    item_id: str
    output_index: int
    content_index: int
    part: OutputText


class OutputTextDelta(_Event, tag="response.output_text.delta"):
    item_id: str
    output_index: int
    content_index: int
    delta: str
    logprobs: list[Any] = []


class OutputTextDone(_Event, tag="response.output_text.done"):
    item_id: str
    output_index: int
    content_index: int
    text: str
    logprobs: list[Any] = []


class FunctionCallArgumentsDelta(_Event, tag="response.function_call_arguments.delta"):
    item_id: str
    output_index: int
    delta: str


class FunctionCallArgumentsDone(_Event, tag="response.function_call_arguments.done"):
    item_id: str
    output_index: int
    arguments: str


class ReasoningSummaryPartAdded(_Event, tag="response.reasoning_summary_part.added"):
    item_id: str
    output_index: int
    summary_index: int
    part: SummaryText


class ReasoningSummaryTextDelta(_Event, tag="response.reasoning_summary_text.delta"):
    item_id: str
    output_index: int
    summary_index: int
    delta: str


class ReasoningSummaryTextDone(_Event, tag="response.reasoning_summary_text.done"):
    item_id: str
    output_index: int
    summary_index: int
    text: str


StreamEvent = (
    ResponseCreated
    | ResponseInProgress
    | ResponseCompleted
    | ResponseIncomplete
    | ResponseFailed
    | OutputItemAdded
    | OutputItemDone
    | ContentPartAdded
    | ContentPartDone
    | OutputTextDelta
    | OutputTextDone
    | FunctionCallArgumentsDelta
    | FunctionCallArgumentsDone
    | ReasoningSummaryPartAdded
    | ReasoningSummaryTextDelta
    | ReasoningSummaryTextDone
)


def event_type(event: StreamEvent) -> str:
    """The event's ``type`` (also its SSE event name)."""
    tag = type(event).__struct_config__.tag
    assert isinstance(tag, str)
    return tag


# --- a native target's answers, read for usage -----------------------------------------


class NativeInputDetails(msgspec.Struct):
    cached_tokens: int | None = None


class NativeOutputDetails(msgspec.Struct):
    reasoning_tokens: int | None = None


class NativeUsage(msgspec.Struct):
    """Usage as a native Responses provider reports it (tolerant: nulls and
    missing details read as zero)."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    input_tokens_details: NativeInputDetails | None = None
    output_tokens_details: NativeOutputDetails | None = None
