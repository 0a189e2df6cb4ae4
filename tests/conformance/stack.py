"""One simulated provider speaking every wire format, and one gateway in
front of it with a provider of every kind pointed at the sim's mount for
that format.  Shared by the conformance suite, the SDK tests and the
translation benchmark."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from adapters.base import Capability
from adapters.registry import CODECS
from ingress.gateway import GatewayServer, create_app, start_gateway
from nexus.sim import SimServer, SimSettings, start_sim
from streams.config_validation import parse_config
from streams.keys import hash_key, new_key
from tests.gateway.conftest import EventRecorder
from tests.inprocess import in_process_snapshot

SECRET = b"conformance-secret-0123456789"
SIM_SECRET = "sk-sim-conformance"
ENV = {"SIM_KEY": SIM_SECRET, "SIM_AWS": f"AKIDSIMULATED:{SIM_SECRET}"}

# provider -> (chat provider model, embeddings provider model or None, options)
PROVIDERS: dict[str, tuple[str, str | None, dict[str, Any]]] = {
    "openai": ("gpt-4o", "text-embedding-3-small", {}),
    "anthropic": ("claude-sonnet-4-5", None, {}),
    "gemini": ("gemini-2.5-flash", "gemini-embedding-001", {}),
    "vertex": (
        "gemini-2.5-flash",
        "text-embedding-005",
        {"project": "sim-project", "location": "us-central1"},
    ),
    "azure": ("gpt-4o", "text-embedding-3-small", {"api_version": "2024-10-21"}),
    "bedrock": (
        "anthropic.claude-sonnet-4-5-20250929-v1:0",
        "cohere.embed-english-v3",
        {"region": "us-east-1"},
    ),
    "cohere": ("command-a-reasoning-08-2025", "embed-v4.0", {}),
    "replicate": ("meta/meta-llama-3-8b-instruct", None, {}),
    "voyage": ("", "voyage-3.5", {}),
    # Claude on Vertex AI: the Vertex codec's rawPredict path, Anthropic bodies.
    "vertex-claude": (
        "claude-sonnet-4-5@20250929",
        None,
        {"project": "sim-project", "location": "us-central1", "publisher": "anthropic"},
    ),
    "minimax": ("MiniMax-M2", None, {}),
    "glm": ("glm-4.6", "embedding-3", {}),
    "deepseek": ("deepseek-chat", None, {}),
    "moonshot": ("kimi-k2-0905-preview", None, {}),
    "mistral": ("mistral-large-latest", "mistral-embed", {}),
    "groq": ("llama-3.3-70b-versatile", None, {}),
    "fireworks": ("accounts/fireworks/models/llama-v3p1-8b-instruct", "nomic-ai/nomic-embed-text-v1.5", {}),
    "together": ("meta-llama/Llama-3.3-70B-Instruct-Turbo", "BAAI/bge-base-en-v1.5", {}),
    "perplexity": ("sonar", None, {}),
    "xai": ("grok-4", None, {}),
    "huggingface": ("meta-llama/Llama-3.1-8B-Instruct", None, {}),
}


# Providers configured twice with different options: name -> codec kind.
VARIANTS = {"vertex-claude": "vertex"}


def kind_of(provider: str) -> str:
    return VARIANTS.get(provider, provider)


def capabilities(provider: str) -> frozenset[Capability]:
    """What the provider claims (Claude on Vertex: Claude's, not Gemini's)."""
    if provider == "vertex-claude":
        return CODECS["vertex"].capabilities & CODECS["anthropic"].capabilities
    return CODECS[provider].capabilities


def base_url(root: str, kind: str) -> str:
    if kind == "openai":
        return f"{root}/v1"
    if kind in ("anthropic", "gemini", "vertex", "bedrock", "cohere", "replicate", "voyage", "azure"):
        return f"{root}/{'gemini' if kind == 'gemini' else kind}"
    return f"{root}/{kind}/v1"  # the OpenAI-compatible providers


def chat_model(provider: str) -> str:
    return f"{provider}-chat"


def embed_model(provider: str) -> str:
    return f"{provider}-embed"


def config_yaml(root: str, key: str) -> bytes:
    providers = []
    models: list[dict[str, Any]] = []
    for name, (chat, embed, options) in PROVIDERS.items():
        kind = kind_of(name)
        assert kind in CODECS, name
        providers.append(
            {
                "name": name,
                "kind": kind,
                "base_url": base_url(root, kind),
                "allow_private_network": True,
                "api_key_env": "SIM_AWS" if name == "bedrock" else "SIM_KEY",
                "options": options,
            }
        )
        caps = capabilities(name)
        price = {"input": 1.0, "output": 2.0, "cached_input": 0.5}
        if chat:
            models.append(
                {"name": chat_model(name), "provider": name, "provider_model": chat, "price": price}
            )
        if embed and Capability.EMBEDDINGS in caps:
            models.append(
                {"name": embed_model(name), "provider": name, "provider_model": embed, "kind": "embedding"}
            )
    config = {
        "version": 1,
        # The SDK clients share the in-process gateway's event loop: the loop-lag
        # gate is off (in_process_snapshot), the in-flight cap stays.
        "gateway": {"request_timeout_s": 10, "node_id": "gw-conformance"},
        "orgs": [{"id": "acme"}],
        "projects": [{"id": "web", "org": "acme"}],
        "virtual_keys": [{"id": "k-conf", "hash": hash_key(key, SECRET), "org": "acme", "project": "web"}],
        "providers": providers,
        "models": models,
    }
    return msgspec.yaml.encode(config)


@dataclass
class Stack:
    gateway: GatewayServer
    sim: SimServer
    events: EventRecorder
    key: str

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def root(self) -> str:
        return self.url.removesuffix("/v1")

    async def close(self) -> None:
        await self.gateway.close()
        await self.sim.close()


async def start_stack(sink: Any = None) -> Stack:
    sim = await start_sim(SimSettings(api_key=SIM_SECRET))
    key = new_key()
    snapshot = in_process_snapshot(parse_config(config_yaml(sim.root, key)), SECRET)
    events = EventRecorder()
    app = create_app(snapshot, sink or events, env=ENV)
    gateway = await start_gateway(app)
    return Stack(gateway=gateway, sim=sim, events=events, key=key)
