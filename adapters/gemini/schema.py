"""JSON Schema -> the OpenAPI-3 subset Gemini's responseSchema and
functionDeclarations.parameters accept.

Gemini rejects keys outside the subset ("Unknown name additionalProperties")
and knows no ``$ref``; schemas made by Pydantic (the OpenAI SDK's structured
outputs) use ``$defs``/``$ref`` for nested models and ``anyOf [X, null]`` for
optional fields.  So references are inlined, ``null`` alternatives become
``nullable``, and unknown keys are dropped.
"""

from __future__ import annotations

from typing import Any

ALLOWED = frozenset(
    {
        "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems",
        "properties", "required", "propertyOrdering", "items", "anyOf", "minimum", "maximum",
        "minLength", "maxLength", "pattern", "example", "default", "minProperties", "maxProperties",
    }
)  # fmt: skip

# A self-referencing model (a tree) cannot be inlined for ever.
MAX_REF_DEPTH = 8


def to_gemini_schema(schema: Any) -> Any:
    defs: dict[str, Any] = {}
    if isinstance(schema, dict):
        for key in ("$defs", "definitions"):
            if isinstance(schema.get(key), dict):
                defs.update(schema[key])
    return _convert(schema, defs, 0)


def _resolve(ref: str, defs: dict[str, Any]) -> Any:
    name = ref.rsplit("/", 1)[-1]
    return defs.get(name, {})


def _convert(schema: Any, defs: dict[str, Any], depth: int) -> Any:
    if isinstance(schema, list):
        return [_convert(s, defs, depth) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema and isinstance(schema["$ref"], str):
        if depth >= MAX_REF_DEPTH:
            return {"type": "object"}
        merged = {**_resolve(schema["$ref"], defs), **{k: v for k, v in schema.items() if k != "$ref"}}
        return _convert(merged, defs, depth + 1)
    alternatives = schema.get("anyOf")
    if isinstance(alternatives, list):
        rest = [a for a in alternatives if not (isinstance(a, dict) and a.get("type") == "null")]
        if len(rest) < len(alternatives) and len(rest) == 1:
            # Optional[X]: X, nullable.
            single = {**{k: v for k, v in schema.items() if k != "anyOf"}, **rest[0], "nullable": True}
            return _convert(single, defs, depth)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key not in ALLOWED:
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: _convert(sub, defs, depth) for name, sub in value.items()}
        elif key in ("items", "anyOf"):
            out[key] = _convert(value, defs, depth)
        elif key == "type" and isinstance(value, list):
            kinds = [t for t in value if t != "null"]
            out["type"] = kinds[0] if len(kinds) == 1 else kinds
            if "null" in value:
                out["nullable"] = True
        else:
            out[key] = value
    return out
