"""A request's life, in order.  Read this first.

Every ingress turns bytes into an ``Exchange`` (``ingress.pipeline.
exchange``) and runs it through one of the stage lists below; the stages
write the answer through the front end the exchange carries.  Each stage
is an ``async def stage(ex, next)``: it does its part, calls ``next(ex)``
to hand the request on, and may act again when that returns or raises (a
reservation released, a cache entry stored, another target tried).  The
stages know no HTTP framework: the gateway's ``/v1`` API
(``ingress.gateway``), the compliance proxy's decrypted flows
(``ingress.proxy``) and the agent's local listener differ only in how they
make the exchange and which list they run.

What comes back from the provider passes the response side of the same
features inside ``call``: the compliance engine's response stage (the
whole answer, or a stream batch by batch through its guard), the quota
meter that cuts a stream at its reservation, the cache tap that keeps what
the caller received; then the caller's grammar writes it, and ``receipt``
records the outcome.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence

from ingress.pipeline.exchange import Exchange, Next
from ingress.pipeline.stages.authentication import authentication
from ingress.pipeline.stages.cache import cache
from ingress.pipeline.stages.call import call
from ingress.pipeline.stages.compliance import request_hooks
from ingress.pipeline.stages.intake import intake
from ingress.pipeline.stages.passthrough import passthrough, provider_answers
from ingress.pipeline.stages.quota import quota
from ingress.pipeline.stages.receipt import receipt
from ingress.pipeline.stages.routing import routing

Stage = Callable[[Exchange, Next], Awaitable[None]]

# A model call through the gateway's API (chat, messages, responses,
# embeddings, count_tokens).
MODEL_CALL: tuple[Stage, ...] = (
    receipt,  # on record from the first byte; any error becomes the caller's answer; the outcome
    authentication,  # who calls: the virtual key
    intake,  # the body in the caller's grammar; the model, its route, whether the key may use it
    request_hooks,  # the compliance engine's connection and request stages: block or redact
    quota,  # a reservation on every budget and rate limit that applies; released unless usage settles it
    cache,  # the exact and semantic caches; identical requests in flight coalesce
    routing,  # the route's candidates: retries, failover, credential pools, the smart router
    call,  # the provider: one exchange or one stream, what comes back screened and metered
)

# A read of the caller's own view (GET /v1/models, GET /v1/usage).
READ: tuple[Stage, ...] = (receipt, authentication, call)

# A model call its caller addressed to a provider itself, with its own key
# (the compliance proxy's decrypted LLM API traffic).  No virtual key: the
# front end says who calls (proxy user, attested device, source address).
# No quota, cache or routing: the request goes where it was addressed, in
# one attempt, on the caller's own account (stages/passthrough.py says why).
# The answer stays in the provider's own format, errors included.
PASS_THROUGH: tuple[Stage, ...] = (
    receipt,  # on record from the first byte; any error becomes the caller's answer; the outcome
    provider_answers,  # a response the hooks blocked is 451, not 403
    passthrough,  # the body in the provider's grammar; aimed at the host, key and model the caller chose
    request_hooks,  # the request stage (the connection stage ran on the connection): block or redact
    call,  # the provider: one exchange or one stream, what comes back screened and metered
)


async def _done(ex: Exchange) -> None:
    return None


def chain(stages: Sequence[Stage]) -> Next:
    """The stages as one callable: each one's ``next`` is the one after it."""
    run: Next = _done
    for stage in reversed(stages):
        run = functools.partial(stage, next=run)  # type: ignore[call-arg]
    return run


run_model_call = chain(MODEL_CALL)
run_read = chain(READ)
run_pass_through = chain(PASS_THROUGH)
