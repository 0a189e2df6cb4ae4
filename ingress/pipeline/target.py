"""Where a request goes: its model, the provider's route (codec, URL,
credential) and the upstream session.  Intake aims it at the model asked
for (or a routing rule's first candidate); a quota downgrade, a retry on
another credential or a failover aims it elsewhere later."""

from __future__ import annotations

from ingress.pipeline import errors
from ingress.pipeline.exchange import Exchange


async def aim(ex: Exchange, model_name: str) -> None:
    """Aim the request at ``model_name``: its model, route and upstream
    (a retry, a failover or a downgrade aims it elsewhere later)."""
    rt = ex.rt
    model = rt.snapshot.models[model_name]
    provider = rt.snapshot.providers[model.provider]
    route = rt.routes[model.name]
    ex.model = model
    ex.provider = provider.name
    ex.provider_model = model.provider_model or model.name
    if route.codec is None:
        raise errors.unsupported_provider(provider.kind)
    upstream = rt.upstreams.get(provider.name)
    await route.refresh(upstream.session, rt.request_timeout_s)  # a minted credential
    ex.route = route
    ex.upstream = upstream
