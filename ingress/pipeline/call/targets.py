"""Where each model's requests go: its provider's codec and the codec
``Target`` (base URL, provider model id, credential, options), built once at
start-up from the config snapshot so the hot path never reads the config or
the environment (a Vertex service account's access token is minted on
first use and refreshed before it expires: ``ingress.pipeline.call.credentials``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import aiohttp
import msgspec

from adapters.base import Codec, Target
from adapters.registry import CODECS
from ingress.pipeline.call.credentials import VertexServiceAccount
from ingress.routing.credentials import Credential, CredentialPool
from streams.config import Model, PooledCredential, Provider
from streams.config_snapshot import ConfigSnapshot

log = logging.getLogger("nexus.gateway.targets")


class Route:
    __slots__ = ("codec", "minted", "model", "pool", "provider", "target")

    def __init__(
        self,
        model: Model,
        provider: Provider,
        codec: Codec | None,
        target: Target,
        minted: VertexServiceAccount | None = None,
        pool: CredentialPool | None = None,
    ) -> None:
        self.model = model
        self.provider = provider
        self.codec = codec  # None: no codec for this provider kind (a clear 400 on use)
        # The target always holds the current credential; a minted one is
        # swapped in by ``refresh`` when the cached token changes.
        self.target = target
        self.minted = minted
        # The provider's credential pool (shared by its models), if it has one.
        self.pool = pool

    def with_credential(self, api_key: str) -> Route:
        """This route for one attempt made with a pool's credential."""
        target = msgspec.structs.replace(self.target, api_key=api_key)
        return Route(self.model, self.provider, self.codec, target, self.minted, self.pool)

    async def refresh(self, session: aiohttp.ClientSession, timeout_s: float) -> None:
        """Make sure a minted credential (Vertex service account) is fresh."""
        if self.minted is None:
            return
        token = await self.minted.token(session, timeout_s)
        if token != self.target.api_key:
            self.target = msgspec.structs.replace(self.target, api_key=token)

    @property
    def kind(self) -> str:
        return self.provider.kind

    @property
    def serves_responses(self) -> bool:
        # The Responses API served natively (OpenAI itself only, as the
        # original's Provider.serves_responses_api default).
        return self.codec is not None and "responses" in self.codec.native


def provider_key(provider: Provider, env: Mapping[str, str], sealed: Mapping[str, str]) -> str | None:
    """A provider's own credential: from its environment variable, or the
    vault credential it names (opened by the node), or none."""
    if provider.api_key_env:
        return env.get(provider.api_key_env)
    if provider.credential:
        return sealed.get(provider.credential)
    return None


def pooled_key(c: PooledCredential, env: Mapping[str, str], sealed: Mapping[str, str]) -> str:
    return env.get(c.env, "") if c.env else sealed.get(c.credential, "")


def build_routes(
    snapshot: ConfigSnapshot, env: Mapping[str, str], sealed: Mapping[str, str] | None = None
) -> dict[str, Route]:
    """``sealed``: the vault credentials the node opened for this snapshot."""
    opened: Mapping[str, str] = sealed if sealed is not None else {}
    routes: dict[str, Route] = {}
    minted: dict[str, VertexServiceAccount | None] = {}
    for p in snapshot.config.providers:
        for c in p.credentials:
            if not pooled_key(c, env, opened):
                where = c.env if c.env else f"vault credential {c.credential}"
                log.warning("provider %s: credential %s: %s is not available", p.name, c.id, where)
    pools = {
        p.name: CredentialPool(
            p.name,
            [Credential(c.id, pooled_key(c, env, opened), c.weight) for c in p.credentials],
            p.credential_cooldown_s,
        )
        for p in snapshot.config.providers
        if p.credentials
    }
    for model in snapshot.config.models:
        provider = snapshot.providers[model.provider]
        api_key = provider_key(provider, env, opened)
        if provider.name not in minted:
            minted[provider.name] = VertexServiceAccount.of(provider, api_key)
        account = minted[provider.name]
        if account is not None:
            api_key = None  # the JSON is not a token: one is minted on first use
        target = Target(
            provider=provider.kind,
            base_url=provider.base_url,
            provider_model=model.provider_model or model.name,
            api_key=api_key or None,
            headers=dict(provider.headers),
            options=dict(provider.options),
        )
        routes[model.name] = Route(
            model, provider, CODECS.get(provider.kind), target, account, pools.get(provider.name)
        )
    return routes
