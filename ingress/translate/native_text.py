"""The text a request carries, read from the caller's own JSON body.

The compliance hooks screen what leaves the gateway.  A same-format call
forwards the caller's body as it is (model rewritten), so the text screened
must be the body's, not a canonical decode of it: a decode keeps what it
knows and drops the rest (an Anthropic block type it does not model, a
Responses item only a native target reads, OpenAI's ``prediction``), and
whatever it dropped would reach the provider unscreened.

So every string of the parts of a body that carry the conversation is
read, whatever the item or block type (a type added to an API tomorrow is
screened too), except values that are not prose: identifiers, roles and
types, media (base64 data, image and file URLs), signatures and encrypted
reasoning.  A redaction is written back where each string was read, so
the body forwarded, the canonical form decoded from it and the body
recorded are the same redacted request.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Keys whose values are never prose: walked past, whatever their value.
_NOT_TEXT = frozenset(
    {
        "type",
        "id",
        "role",
        "status",
        "name",
        "call_id",
        "tool_call_id",
        "tool_use_id",
        "item_id",
        "approval_request_id",
        "server_label",
        "version",
        "image_url",
        "url",
        "file_url",
        "file_id",
        "file_data",
        "input_audio",
        "audio",
        "media_type",
        "mime_type",
        "detail",
        "format",
        "cache_control",
        "signature",
        "encrypted_content",
        # Gemini (either spelling): media and the model's signatures
        "inlineData",
        "inline_data",
        "fileData",
        "mimeType",
        "fileUri",
        "file_uri",
        "thoughtSignature",
        "thought_signature",
    }
)
# Objects whose content is opaque: media and encrypted reasoning.
_OPAQUE_TYPES = frozenset({"base64", "redacted_thinking", "image", "input_image", "image_generation_call"})
# Keys whose whole value is the model's or a tool's own data (Anthropic's
# tool_use ``input``, Gemini's functionCall ``args`` and functionResponse
# ``response``): every string under them is read, whatever its key.
_ALL_TEXT = frozenset({"input", "args", "response"})


class NativeText:
    """Every text of a request body, in reading order, and where it sits."""

    __slots__ = ("_slots", "messages", "segments")

    def __init__(self) -> None:
        self.segments: list[str] = []
        self._slots: list[tuple[Any, Any]] = []  # (container, key) of each segment
        self.messages = 0  # turns or items, for the hooks' message limits

    def write(self, segments: list[str]) -> bool:
        """Put (redacted) segments back where they were read, in place.
        Returns whether anything changed."""
        changed = False
        for (container, key), old, new in zip(self._slots, self.segments, segments, strict=True):
            if new != old:
                container[key] = new
                changed = True
        self.segments = list(segments)
        return changed

    def _walk(self, container: Any, key: Any, everything: bool = False) -> None:
        value = container[key]
        if isinstance(value, str):
            if value:
                self.segments.append(value)
                self._slots.append((container, key))
        elif isinstance(value, dict):
            if not everything and value.get("type") in _OPAQUE_TYPES:
                return
            for k in value:
                if everything or k in _ALL_TEXT:
                    self._walk(value, k, True)
                elif k not in _NOT_TEXT:
                    self._walk(value, k)
        elif isinstance(value, list):
            for i in range(len(value)):
                self._walk(value, i, everything)

    def _read(self, body: dict[str, Any], keys: Iterable[str]) -> NativeText:
        for k in keys:
            if k in body:
                self._walk(body, k)
        return self


def _count(value: Any) -> int:
    if isinstance(value, list):
        return len(value)
    return 1 if value else 0


def chat_text(body: dict[str, Any]) -> NativeText:
    """OpenAI chat completions: the messages (every part and tool call),
    and a predicted output."""
    text = NativeText()._read(body, ("messages", "prediction"))
    text.messages = _count(body.get("messages"))
    return text


def messages_text(body: dict[str, Any]) -> NativeText:
    """Anthropic Messages (and count_tokens): the system prompt and every
    block of every turn (tool inputs and results, documents, thinking)."""
    text = NativeText()._read(body, ("system", "messages"))
    text.messages = _count(body.get("messages")) + _count(body.get("system"))
    return text


def responses_text(body: dict[str, Any]) -> NativeText:
    """The Responses API: instructions, every input item of every kind
    (messages, function and tool calls and their outputs, reasoning
    summaries), and a reusable prompt's variables."""
    text = NativeText()._read(body, ("instructions", "input", "prompt"))
    text.messages = _count(body.get("input")) + _count(body.get("instructions"))
    return text


def responses_output_text(body: dict[str, Any]) -> NativeText:
    """The text of a Responses answer: every output item (message text,
    refusals, function call arguments, tool call outputs)."""
    text = NativeText()._read(body, ("output",))
    text.messages = _count(body.get("output"))
    return text


def gemini_text(body: dict[str, Any]) -> NativeText:
    """Gemini generateContent (and countTokens, whose prompt may sit in a
    whole ``generateContentRequest``): the system instruction and every
    part of every turn (function calls' args and function responses)."""
    text = NativeText()
    for req in (body, body.get("generateContentRequest"), body.get("generate_content_request")):
        if isinstance(req, dict):
            text._read(req, ("systemInstruction", "system_instruction", "contents"))
            text.messages += _count(req.get("contents"))
    return text


def gemini_cache_text(body: dict[str, Any]) -> NativeText:
    """A Gemini cached content: what a later generateContent sends by name
    -- the system instruction, every part of every turn, and the tools (a
    function's description is prompt text too; names and schema types are
    not read)."""
    text = NativeText()._read(body, ("systemInstruction", "system_instruction", "contents", "tools"))
    text.messages = _count(body.get("contents"))
    return text


def gemini_embed_text(body: dict[str, Any]) -> NativeText:
    """Gemini embedContent and batchEmbedContents: every part of the content
    and the title, of the body or of each of its ``requests`` (not their
    model or taskType, which are no prose)."""
    text = NativeText()
    batch = body.get("requests")
    reqs = [r for r in batch if isinstance(r, dict)] if isinstance(batch, list) else [body]
    for req in reqs:
        content = req.get("content")
        if isinstance(content, dict):
            text._read(content, ("parts",))
        text._read(req, ("title",))
    text.messages = len(reqs)
    return text


def vertex_embed_text(body: dict[str, Any]) -> NativeText:
    """Vertex AI's embedContent and batchEmbedContents: every part of the
    content and the title (at the top or in ``embedContentConfig``), of the
    body or of each of its ``requests``."""
    text = NativeText()
    batch = body.get("requests")
    reqs = [r for r in batch if isinstance(r, dict)] if isinstance(batch, list) else [body]
    for req in reqs:
        text._read(req, ("content", "title"))
        for key in ("embedContentConfig", "embed_content_config"):
            config = req.get(key)
            if isinstance(config, dict):
                text._read(config, ("title",))
    text.messages = len(reqs)
    return text


def vertex_predict_text(body: dict[str, Any]) -> NativeText:
    """Vertex AI's text embeddings (``:predict``): each instance's content
    and title."""
    text = NativeText()
    instances = body.get("instances")
    for inst in instances if isinstance(instances, list) else ():
        if isinstance(inst, dict):
            text._read(inst, ("content", "title"))
    text.messages = _count(instances)
    return text


def embeddings_text(body: dict[str, Any]) -> NativeText:
    """Embeddings: the input strings (token arrays carry no text)."""
    text = NativeText()
    value = body.get("input")
    if isinstance(value, str):
        text._walk(body, "input")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, str):
                text._walk(value, i)
    text.messages = _count(value)
    return text


_BY_ENDPOINT = {
    "chat": chat_text,
    "messages": messages_text,
    "count_tokens": messages_text,
    "responses": responses_text,
    "embeddings": embeddings_text,
    "generate_content": gemini_text,
    "stream_generate_content": gemini_text,
    "gemini_count_tokens": gemini_text,
    "embed_content": gemini_embed_text,
    "batch_embed_contents": gemini_embed_text,
    "cached_contents": gemini_cache_text,
    "vertex_predict": vertex_predict_text,
    "vertex_embed_content": vertex_embed_text,
    "vertex_batch_embed_contents": vertex_embed_text,
}


def request_text(endpoint: str, body: dict[str, Any]) -> NativeText:
    return _BY_ENDPOINT[endpoint](body)
