"""The nine OpenAI-compatible providers as data."""

from __future__ import annotations

import msgspec

from adapters.base import Capability
from adapters.compat.quirks import (
    DropForcedToolChoice,
    DropMessageReasoning,
    ForceField,
    MaxTokensField,
    Quirk,
)

C = Capability
CHAT = frozenset({C.TEXT, C.STREAM})
TOOLS = frozenset({C.TOOLS, C.TOOLS_STREAM})

# Every compat provider here documents max_tokens; several reject
# max_completion_tokens, so it is always moved.
MAX_TOKENS = MaxTokensField(why="max_completion_tokens is OpenAI-only")
NO_INPUT_REASONING = DropMessageReasoning(why="reasoning_content is not an input field here")
# The default for providers that do not read reasoning back.
PLAIN = (MAX_TOKENS, NO_INPUT_REASONING)


class CompatProvider(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    base_url: str  # up to and including the version segment; /chat/completions is appended
    capabilities: frozenset[Capability]
    quirks: tuple[Quirk, ...] = PLAIN
    # Which non-OpenAI usage fields carry cache hits: "deepseek"
    # (prompt_cache_hit_tokens) or "moonshot" (cached_tokens).
    usage_dialect: str | None = None
    # Whether the provider accepts stream_options.include_usage (the OpenAI
    # codec always sends it on streams).
    stream_options: bool = True
    # Keys of nexus_ext.<name> copied into the request body as they are
    # (vendor knobs such as GLM's "thinking").
    ext_fields: tuple[str, ...] = ()


PROVIDERS: dict[str, CompatProvider] = {
    p.name: p
    for p in (
        CompatProvider(
            name="deepseek",
            base_url="https://api.deepseek.com/v1",
            capabilities=CHAT | TOOLS | {C.REASONING},
            quirks=(
                MAX_TOKENS,
                DropForcedToolChoice(
                    models=("deepseek-reasoner", "deepseek-r1"),
                    why="thinking models reject a forced tool_choice",
                ),
            ),
            usage_dialect="deepseek",
        ),
        CompatProvider(
            name="moonshot",
            base_url="https://api.moonshot.ai/v1",
            capabilities=CHAT | TOOLS | {C.VISION, C.REASONING},
            quirks=(
                MAX_TOKENS,
                ForceField(
                    models=("kimi-k2.5", "kimi-k2.6"),
                    field="temperature",
                    value=1.0,
                    why="these models accept only temperature=1",
                ),
            ),
            usage_dialect="moonshot",
        ),
        CompatProvider(
            name="mistral",
            base_url="https://api.mistral.ai/v1",
            capabilities=CHAT | TOOLS | {C.VISION, C.JSON_SCHEMA, C.EMBEDDINGS},
            # Mistral forbids unknown fields (422 extra_forbidden) on
            # stream_options and max_completion_tokens, and sends usage on
            # the last chunk unasked.
            stream_options=False,
        ),
        CompatProvider(
            name="groq",
            base_url="https://api.groq.com/openai/v1",
            capabilities=CHAT | TOOLS | {C.VISION, C.JSON_SCHEMA},
        ),
        CompatProvider(
            name="fireworks",
            base_url="https://api.fireworks.ai/inference/v1",
            capabilities=CHAT | TOOLS | {C.VISION, C.JSON_SCHEMA, C.EMBEDDINGS},
        ),
        CompatProvider(
            name="together",
            base_url="https://api.together.xyz/v1",
            capabilities=CHAT | TOOLS | {C.VISION, C.JSON_SCHEMA, C.EMBEDDINGS},
        ),
        CompatProvider(
            name="perplexity",
            base_url="https://api.perplexity.ai",
            capabilities=CHAT | {C.JSON_SCHEMA},
        ),
        CompatProvider(
            name="xai",
            base_url="https://api.x.ai/v1",
            capabilities=CHAT | TOOLS | {C.VISION, C.JSON_SCHEMA, C.REASONING},
        ),
        CompatProvider(
            name="huggingface",
            base_url="https://router.huggingface.co/v1",
            capabilities=CHAT | TOOLS,
        ),
    )
}
