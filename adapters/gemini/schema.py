"""JSON Schema -> the OpenAPI-3 subset Gemini's responseSchema and
functionDeclarations.parameters accept.  Gemini rejects keys outside the
subset ("Unknown name additionalProperties"), so they are dropped, and a
JSON-Schema type list with "null" becomes ``nullable``."""

from __future__ import annotations

from typing import Any

ALLOWED = frozenset(
    {
        "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems",
        "properties", "required", "propertyOrdering", "items", "anyOf", "minimum", "maximum",
        "minLength", "maxLength", "pattern", "example", "default", "minProperties", "maxProperties",
    }
)  # fmt: skip


def to_gemini_schema(schema: Any) -> Any:
    if isinstance(schema, list):
        return [to_gemini_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key not in ALLOWED:
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: to_gemini_schema(sub) for name, sub in value.items()}
        elif key in ("items", "anyOf"):
            out[key] = to_gemini_schema(value)
        elif key == "type" and isinstance(value, list):
            kinds = [t for t in value if t != "null"]
            out["type"] = kinds[0] if len(kinds) == 1 else kinds
            if "null" in value:
                out["nullable"] = True
        else:
            out[key] = value
    return out
