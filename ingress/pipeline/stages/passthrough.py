"""Pass-through: a request its caller addressed to a provider itself (an
SDK with its own key, decrypted by the compliance proxy), served on the
caller's terms -- the provider host it named, its own credential, the model
it asked for -- while every feature of the pipeline sees it as any other
request: the request hooks, the response hooks and stream guards, usage and
cost, body capture, the same events.

What differs from a gateway call, and why:

- no virtual key: the caller is whoever the front end says (a proxy user,
  an attested device, a source address), set on ``ex.tenant`` before the
  stages run;
- no routing, quota or cache: the request goes where it was addressed, in
  one attempt, paid for with the caller's own key; answering it from
  somebody else's cached answer, or moving it to another provider, would
  change what the caller asked for;
- the model need not be configured: it is priced when a configured model
  of the same provider kind serves it under that id, else recorded
  unpriced;
- a block at the response stage is 451 (the provider's answer exists, but
  may not be shown), still in the provider's own error format.

The front end describes the target with a ``PassThrough`` on the exchange.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.base import Target
from adapters.registry import CODECS
from ingress.pipeline import errors
from ingress.pipeline.call.targets import Route
from ingress.pipeline.errors import GatewayError
from ingress.pipeline.exchange import Exchange, Next
from ingress.pipeline.stages.intake import read_request
from ingress.upstream import Upstream
from ingress.upstream.transport import Transport
from streams.config import Model, Provider
from streams.config_snapshot import ConfigSnapshot


class PassThrough:
    """Where the caller's request goes: its provider kind (the codec that
    reads it), the base URL it addressed, the headers it sent that the
    provider must see (its credential among them, forwarded as sent), and
    the client that reaches that host (the front end's: its resolver and
    guard, its upstream TLS verification)."""

    __slots__ = ("base_url", "headers", "http", "kind", "listed", "options")

    def __init__(
        self,
        kind: str,
        base_url: str,
        headers: Mapping[str, str],
        http: Transport,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.kind = kind
        self.base_url = base_url
        self.headers = headers
        self.http = http
        # What the codec needs besides the base URL to address the call as
        # the caller did (Vertex: project, location, API version).
        self.options: Mapping[str, Any] = options or {}
        self.listed = False  # the model asked for is one the config lists (a metrics label then)


def listed_model(snapshot: ConfigSnapshot, kind: str, requested: str) -> Model | None:
    """The configured model of a ``kind`` provider that serves ``requested``
    under that provider model id (or that name): its price prices the call."""
    for model in snapshot.config.models:
        if (model.provider_model or model.name) != requested and model.name != requested:
            continue
        provider = snapshot.providers.get(model.provider)
        if provider is not None and provider.kind == kind:
            return model
    return None


async def passthrough(ex: Exchange, next: Next) -> None:
    """The stage in place of authentication and intake: the body read and
    parsed in the endpoint's grammar, the request aimed at the provider the
    caller addressed."""
    pt = ex.passthrough
    spec = ex.spec
    assert pt is not None and spec is not None
    await read_request(ex)
    codec = CODECS.get(pt.kind)
    if codec is None:
        raise errors.unsupported_provider(pt.kind)
    requested = ex.requested_model
    known = listed_model(ex.rt.snapshot, pt.kind, requested)
    pt.listed = known is not None
    provider = Provider(
        name=pt.kind,
        kind=pt.kind,
        base_url=pt.base_url,
        headers=pt.headers,
        options=pt.options,
        # The front end's client resolves and guards the addresses itself
        # (the proxy checked the target when the client connected).
        allow_private_network=True,
    )
    model = Model(
        name=known.name if known is not None else requested,
        provider=provider.name,
        provider_model=requested,
        price=known.price if known is not None else None,
        kind="embedding" if spec.kind == "embedding" else "chat",
    )
    # The caller's credential travels in its own headers, as it sent them.
    target = Target(
        provider=pt.kind,
        base_url=pt.base_url,
        provider_model=requested,
        headers=pt.headers,
        options=pt.options,
    )
    ex.model = model
    ex.provider = provider.name
    ex.provider_model = requested
    ex.route = Route(model, provider, codec, target)
    ex.upstream = Upstream(provider, None, None, pt.http)
    await next(ex)


async def provider_answers(ex: Exchange, next: Next) -> None:
    """A response the hooks blocked is 451 (Unavailable For Legal Reasons):
    the provider answered, policy withholds it.  A request block stays 403."""
    try:
        await next(ex)
    except GatewayError as exc:
        if exc.status == 403 and exc.stage == "hooks_response":
            exc.status = 451
        raise
