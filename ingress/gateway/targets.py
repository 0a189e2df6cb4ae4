"""Where each model's requests go: its provider's codec and the codec
``Target`` (base URL, provider model id, credential, options), built once at
start-up from the config snapshot so the hot path never reads the config or
the environment."""

from __future__ import annotations

from collections.abc import Mapping

from adapters.base import Codec, Target
from adapters.registry import CODECS
from streams.config import ConfigSnapshot, Model, Provider


class Route:
    __slots__ = ("codec", "model", "provider", "target")

    def __init__(self, model: Model, provider: Provider, codec: Codec | None, target: Target) -> None:
        self.model = model
        self.provider = provider
        self.codec = codec  # None: no codec for this provider kind (a clear 400 on use)
        self.target = target

    @property
    def kind(self) -> str:
        return self.provider.kind

    @property
    def serves_responses(self) -> bool:
        # The Responses API is served natively by OpenAI itself only (as the
        # original's Provider.serves_responses_api default).
        return self.provider.kind == "openai"


def build_routes(snapshot: ConfigSnapshot, env: Mapping[str, str]) -> dict[str, Route]:
    routes: dict[str, Route] = {}
    for model in snapshot.config.models:
        provider = snapshot.providers[model.provider]
        api_key = env.get(provider.api_key_env) if provider.api_key_env else None
        target = Target(
            provider=provider.kind,
            base_url=provider.base_url,
            provider_model=model.provider_model or model.name,
            api_key=api_key or None,
            headers=dict(provider.headers),
            options=dict(provider.options),
        )
        routes[model.name] = Route(model, provider, CODECS.get(provider.kind), target)
    return routes
