"""The provider-neutral heart of the sim.  Each wire format parses and
validates its own request into an ``Ask`` and renders the ``Answer`` in its
own grammar; what the model "says" is decided here once, so every provider
answers the same request the same way:

- tools offered (and not refused, and the last turn is not a tool result):
  a call to the first (or the forced) tool, with arguments built from its
  JSON schema;
- a JSON schema asked for: a JSON document that fits it;
- images: the text names how many were seen;
- reasoning asked for: a reasoning text, counted as reasoning tokens;
- otherwise the deterministic words of ``nexus.sim.text``.

Prompt directives (``sim:cached=8``, ``sim:reasoning=5``, ``sim:fail=429``,
``sim:error_after=2``, ``sim:drop_after=2``) reach the sim through any
translation, where a provider-specific header would not.  Two shape the
answer itself, so the sim can play a router model: ``sim:choose=<value>``
is what every ``enum`` of an asked-for JSON schema gets (even a value the
enum does not list: a model that ignores its schema), ``sim:reply=<text>``
replaces the answer's text."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import msgspec

from nexus.sim import text
from nexus.sim.behaviour import Behaviour

_encoder = msgspec.json.Encoder()
_DIRECTIVE = re.compile(r"sim:(cached|reasoning|fail|error_after|drop_after)=(\d+)")
_ANSWER_DIRECTIVE = re.compile(r"sim:(choose|reply)=(\S+)")


@dataclass
class Ask:
    model: str
    texts: list[str]  # every message's text, system included, in order
    tools: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (name, JSON schema)
    tool_choice: str = "auto"  # auto | none | required | <a tool name>
    after_tool_result: bool = False
    images: int = 0
    json_schema: dict[str, Any] | None = None
    json_mode: bool = False
    reasoning: bool = False
    max_tokens: int | None = None
    stream: bool = False


@dataclass
class Call:
    id: str
    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        return _encoder.encode(self.arguments).decode()


@dataclass
class Answer:
    id: str
    pieces: list[str]  # the text, as streamed
    reasoning: list[str]  # the reasoning text, as streamed
    calls: list[Call]
    finish: str  # stop | length | tool_calls
    prompt_tokens: int
    completion_tokens: int  # includes reasoning tokens
    cached_tokens: int
    reasoning_tokens: int

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def reasoning_text(self) -> str:
        return "".join(self.reasoning)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def directed(b: Behaviour, texts: list[str]) -> Behaviour:
    """The behaviour with the prompt's ``sim:`` directives applied."""
    found = dict(_DIRECTIVE.findall("\n".join(texts)))
    if not found:
        return b
    return msgspec.structs.replace(
        b,
        cached_tokens=int(found.get("cached", b.cached_tokens)),
        reasoning_tokens=int(found.get("reasoning", b.reasoning_tokens)),
        fail_status=int(found.get("fail", b.fail_status)),
        error_after=int(found.get("error_after", b.error_after)),
        drop_after=int(found.get("drop_after", b.drop_after)),
    )


def example(schema: Any, name: str = "value", choose: str | None = None) -> Any:
    """A value that fits a (small) JSON schema (``choose``: every enum's value)."""
    if not isinstance(schema, dict):
        return "Paris"
    if schema.get("enum"):
        return choose if choose is not None else schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    kind = str(kind).lower() if kind else ("object" if "properties" in schema else "string")
    if kind == "object":
        props = schema.get("properties")
        # A schema whose properties are not an object describes no fields
        # (the caller's mistake, passed through by the gateway: no crash).
        return {k: example(v, k, choose) for k, v in props.items()} if isinstance(props, dict) else {}
    if kind == "array":
        return [example(schema.get("items"), name, choose)]
    if kind == "integer":
        return 3
    if kind == "number":
        return 21.5
    if kind == "boolean":
        return True
    return "Paris" if name in ("city", "location", "value") else f"{name}-sim"


def _call_id(model: str, name: str, prompt: str) -> str:
    return "call_" + hashlib.sha256(f"{model}\x00{name}\x00{prompt}".encode()).hexdigest()[:16]


def answer(ask: Ask, b: Behaviour) -> Answer:
    prompt = "\n".join(ask.texts)
    prompt_tokens = text.count_prompt_tokens(ask.texts)
    rid = hashlib.sha256(f"{ask.model}\x00{prompt}".encode()).hexdigest()[:24]
    words = text.completion_words(ask.model, prompt)
    shaped = dict(_ANSWER_DIRECTIVE.findall(prompt))
    reasoning: list[str] = []
    if ask.reasoning:
        thought = ["considering", *words[:6]]
        reasoning = [w if i == 0 else " " + w for i, w in enumerate(thought)]
    reasoning_tokens = max(b.reasoning_tokens, len(reasoning))
    calls: list[Call] = []
    finish = "stop"
    pieces: list[str]
    wants_tool = ask.tools and not ask.after_tool_result and ask.tool_choice != "none"
    if wants_tool:
        chosen = next((t for t in ask.tools if t[0] == ask.tool_choice), ask.tools[0])
        calls.append(Call(_call_id(ask.model, chosen[0], prompt), chosen[0], example(chosen[1])))
        pieces = []
        finish = "tool_calls"
        completion = len(calls[0].arguments_json) // 4 + 1
    elif ask.json_schema is not None or ask.json_mode:
        doc = (
            example(ask.json_schema, choose=shaped.get("choose"))
            if ask.json_schema is not None
            else {"answer": " ".join(words[:4])}
        )
        encoded = shaped.get("reply") or _encoder.encode(doc).decode()
        cut = max(1, len(encoded) // 3)
        pieces = [encoded[:cut], encoded[cut : 2 * cut], encoded[2 * cut :]]
        completion = len(encoded) // 4 + 1
    else:
        if ask.images:
            words = ["saw", str(ask.images), "image" if ask.images == 1 else "images", *words]
        if ask.after_tool_result:
            words = ["tool", "result", "received", *words]
        if "reply" in shaped:
            words = [shaped["reply"]]
        if ask.max_tokens is not None and len(words) > ask.max_tokens:
            words, finish = words[: ask.max_tokens], "length"
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
        completion = len(words)
    return Answer(
        id=rid,
        pieces=pieces,
        reasoning=reasoning,
        calls=calls,
        finish=finish,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion + reasoning_tokens,
        cached_tokens=min(b.cached_tokens, prompt_tokens),
        reasoning_tokens=reasoning_tokens,
    )
