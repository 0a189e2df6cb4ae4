"""Provider name -> codec.  Each codec declares its capabilities; callers
(routing, the conformance suite, /v1/models) ask here which providers can
serve a request."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from adapters.anthropic import AnthropicCodec
from adapters.azure import AzureCodec
from adapters.base import Capability, Codec, CodecError
from adapters.bedrock import BedrockCodec
from adapters.cohere import CohereCodec
from adapters.compat import PROVIDERS, CompatCodec
from adapters.gemini import GeminiCodec
from adapters.glm import GLMCodec
from adapters.minimax import MiniMaxCodec
from adapters.openai import CODEC as OPENAI
from adapters.replicate import ReplicateCodec
from adapters.vertex import VertexCodec
from adapters.voyage import VoyageCodec
from adapters.wirekit.errors import make


def _build() -> dict[str, Codec]:
    codecs: list[Codec] = [
        OPENAI,
        AnthropicCodec(),
        GeminiCodec(),
        VertexCodec(),
        AzureCodec(),
        BedrockCodec(),
        CohereCodec(),
        MiniMaxCodec(),
        GLMCodec(),
        ReplicateCodec(),
        VoyageCodec(),
        *(CompatCodec(p) for p in PROVIDERS.values()),
    ]
    return {c.name: c for c in codecs}


CODECS: Mapping[str, Codec] = MappingProxyType(_build())

# Providers whose chat bodies are OpenAI's, so an OpenAI-format call to them
# can pass through with only the model rewritten.
OPENAI_FAMILY: frozenset[str] = frozenset({"openai", "azure", "minimax", "glm", *PROVIDERS})


def codec_for(provider: str) -> Codec:
    codec = CODECS.get(provider)
    if codec is None:
        raise CodecError(make("no_compatible_provider", f"no codec for provider {provider!r}"))
    return codec


def providers_with(*capabilities: Capability) -> list[str]:
    want = set(capabilities)
    return sorted(name for name, c in CODECS.items() if want <= c.capabilities)


def capability_matrix() -> dict[str, frozenset[Capability]]:
    return {name: CODECS[name].capabilities for name in sorted(CODECS)}
