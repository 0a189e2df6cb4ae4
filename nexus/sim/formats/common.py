"""What every wire format's handlers share: reading and recording the
request, the credential check, per-request behaviour (delays, hangs,
injected failures) and paced streaming with mid-stream errors and drops.
Each format supplies its own error rendering."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from nexus.sim.behaviour import BadSimHeader, Behaviour, resolve
from nexus.sim.core import directed
from nexus.sim.state import SIM_STATE

_any: msgspec.json.Decoder[Any] = msgspec.json.Decoder()

# (status, message) -> the provider's error response
ErrorResponse = Callable[[int, str], web.Response]


class Rejected(Exception):
    """A request the provider would refuse: ``status`` and its message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def invalid(exc: msgspec.ValidationError | msgspec.DecodeError) -> Rejected:
    return Rejected(400, f"Invalid request: {exc}")


async def sleep_ms(ms: float) -> None:
    if ms > 0:
        await asyncio.sleep(ms / 1000)


async def admit(
    request: web.Request,
    error: ErrorResponse,
    credential: Callable[[dict[str, str]], str | None],
    *,
    compare: bool = True,
) -> tuple[bytes, Behaviour] | web.Response:
    """Record the request, check its credential (``credential`` returns the
    presented secret or None; ``compare=False`` when the format verifies it
    itself, as SigV4) and resolve its behaviour."""
    state = request.app[SIM_STATE]
    raw = await request.read()
    try:
        parsed: Any = _any.decode(raw) if raw else None
    except msgspec.DecodeError:
        parsed = raw.decode("utf-8", "replace")
    path = request.path_qs
    state.recorder.record(request.method, path, parsed, dict(request.headers.items()))
    headers = {k.lower(): v for k, v in request.headers.items()}
    presented = credential(headers)
    expected = state.settings.api_key
    # A sim without an api_key is open (the demo's: its provider has no
    # credential to send), on every format alike.
    if presented is None and expected is not None:
        return error(401, "No credential was presented.")
    known = presented == expected or presented in state.minted_tokens
    if compare and expected is not None and not known:
        return error(401, "The credential is not valid.")
    try:
        behaviour = resolve(state.settings, headers, state.next_request_number())
    except BadSimHeader as exc:
        return error(400, str(exc))
    return raw, behaviour


async def act(
    b: Behaviour, texts: list[str], error: ErrorResponse, *, settle: bool = True
) -> tuple[Behaviour, web.Response | None]:
    """Apply prompt directives, latency and hangs (unless ``settle`` is
    False: already done) and injected failures."""
    b = directed(b, texts)
    if settle:
        await sleep_ms(b.delay_ms)
        if b.hang:
            await asyncio.sleep(3600)
    if b.fail_status:
        resp = error(b.fail_status, f"Simulated failure ({b.fail_status}).")
        if b.fail_status in (429, 503, 529):
            resp.headers["Retry-After"] = b.retry_after
        return b, resp
    return b, None


def bearer(headers: dict[str, str]) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def header(name: str) -> Callable[[dict[str, str]], str | None]:
    def get(headers: dict[str, str]) -> str | None:
        return headers.get(name) or None

    return get


async def start_stream(request: web.Request, content_type: str = "text/event-stream") -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": content_type, "Cache-Control": "no-cache"})
    await resp.prepare(request)
    return resp


async def pieces(
    request: web.Request,
    resp: web.StreamResponse,
    b: Behaviour,
    items: list[str],
    render: Callable[[int, str], bytes],
    fail: Callable[[], Awaitable[None]],
    sent: list[int],
) -> bool:
    """Stream ``items`` (``render(i, piece)`` each), honouring the token
    rate, ``error_after`` (``fail`` writes the provider's error and the
    stream ends) and ``drop_after`` (the connection is aborted).  ``sent``
    counts content pieces across calls.  False: the stream is over."""
    gap = 1 / b.tokens_per_s if b.tokens_per_s > 0 else 0.0
    for i, item in enumerate(items):
        if sent[0] == b.error_after:
            await fail()
            await resp.write_eof()
            return False
        if sent[0] == b.drop_after:
            assert request.transport is not None
            request.transport.abort()
            return False
        if gap and sent[0]:
            await asyncio.sleep(gap)
        await resp.write(render(i, item))
        sent[0] += 1
    return True
