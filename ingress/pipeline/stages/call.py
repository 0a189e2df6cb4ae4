"""The last stage: the call that serves the endpoint (``ex.spec.call``) —
a model call through the provider's codec, unary or streamed, with the
response side of the features on what comes back — or a read of the
caller's own view."""

from __future__ import annotations

from ingress.pipeline.exchange import Exchange, Next


async def call(ex: Exchange, next: Next) -> None:
    spec = ex.spec
    assert spec is not None
    await spec.call(ex)
    await next(ex)
