"""Smart routing's pure half: the router's prompt and answer schema, built
from a smart node's catalog, and the reading of its answer.  The call
itself (through the router model's adapter, under its own timeout) is the
gateway's (``ingress.pipeline.stages.smart``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from adapters.canonical import ChatRequest, JSONSchemaSpec, Message, ResponseFormat
from streams.config import Model
from streams.config_routing import Smart

# What the router reads of the caller's request: the last turns' text, cut
# to this many characters (the router needs the gist, and its own prompt
# must stay small and cheap).
REQUEST_CHARS = 4000
_TURNS = 4

_INSTRUCTION = (
    "You are a router. Pick the one model below best suited to answer the user's request, "
    "weighing quality against price: prefer the cheaper model when it is good enough."
)

_any: msgspec.json.Decoder[Any] = msgspec.json.Decoder()


def _price(entry_price: str, model: Model | None) -> str:
    if entry_price:
        return entry_price
    if model is None or model.price is None:
        return ""
    return f"${model.price.input:g} in / ${model.price.output:g} out per 1M tokens"


def catalog_text(node: Smart, models: Mapping[str, Model]) -> str:
    lines = []
    for e in node.catalog:
        parts = [f"- {e.model}"]
        if e.description:
            parts.append(f": {e.description}")
        if e.strengths:
            parts.append(f" Strengths: {', '.join(e.strengths)}.")
        price = _price(e.price, models.get(e.model))
        if price:
            parts.append(f" Price: {price}.")
        lines.append("".join(parts))
    return "\n".join(lines)


def answer_schema(node: Smart) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "model": {"type": "string", "enum": [e.model for e in node.catalog]},
            "reason": {"type": "string"},
        },
        "required": ["model", "reason"],
        "additionalProperties": False,
    }


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return []


def request_text(body: Mapping[str, Any]) -> str:
    """The caller's last turns as plain text, whatever its grammar (OpenAI
    chat, Anthropic messages, Responses ``input``, Gemini ``contents``)."""
    parts: list[str] = []
    messages = body.get("messages")
    if isinstance(messages, list):
        for m in messages[-_TURNS:]:
            if isinstance(m, dict):
                parts.extend(f"{m.get('role', 'user')}: {t}" for t in _texts(m.get("content")))
    contents = body.get("contents")
    if isinstance(contents, list):
        for c in contents[-_TURNS:]:
            if isinstance(c, dict):
                role = "assistant" if c.get("role") == "model" else "user"
                parts.extend(f"{role}: {t}" for t in _texts(c.get("parts")))
    raw_input = body.get("input")
    if isinstance(raw_input, str):
        parts.append(raw_input)
    elif isinstance(raw_input, list):
        for item in raw_input[-_TURNS:]:
            if isinstance(item, dict):
                parts.extend(_texts(item.get("content")))
    return "\n".join(parts)[-REQUEST_CHARS:]


def router_request(node: Smart, models: Mapping[str, Model], text: str) -> ChatRequest:
    names = ", ".join(e.model for e in node.catalog)
    system = (
        f"{node.system_prompt or _INSTRUCTION}\n\nModels:\n{catalog_text(node, models)}\n\n"
        f'Answer with JSON {{"model": "<one of: {names}>", "reason": "<a few words>"}} and nothing else.'
    )
    return ChatRequest(
        model=node.router,
        messages=[Message(role="system", content=system), Message(role="user", content=text or "(empty)")],
        temperature=0.0,
        max_tokens=node.max_tokens,
        response_format=ResponseFormat(
            type="json_schema",
            json_schema=JSONSchemaSpec(name="route", schema=answer_schema(node), strict=True),
        ),
    )


def read_answer(content: str) -> str | None:
    """The model name the router answered: ``{"model": ...}`` (the asked-for
    shape, possibly in a code fence), else a bare name; None when neither."""
    text = content.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    if text.startswith("{"):
        try:
            doc = _any.decode(text)
        except msgspec.DecodeError:
            return None
        name = doc.get("model") if isinstance(doc, dict) else None
        return name.strip() if isinstance(name, str) and name.strip() else None
    bare = text.strip("\"'. \n")
    return bare if bare and len(bare) <= 200 and not any(c.isspace() for c in bare) else None
