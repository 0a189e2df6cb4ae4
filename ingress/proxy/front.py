"""The proxy as a second front end of the pipeline: a decrypted request to
an LLM API (recognised by its host's adapter and its path) becomes an
``Exchange`` and runs the pipeline's pass-through stage list
(``ingress.pipeline.pipeline.PASS_THROUGH``): the same request and response
hooks, stream guards, usage, cost, body capture and events as a gateway
call, marked as proxy traffic.  The request still goes to the host the
client addressed, with the client's own key and model.

Everything else in a bumped connection (other paths, other hosts) is
relayed by ``ingress.proxy.bumped`` as before.
"""

from __future__ import annotations

import asyncio
import dataclasses
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ingress.http1 import Headers, Request, Responder
from ingress.http1.message import HOP_BY_HOP
from ingress.http1.server import BodyWriter
from ingress.pipeline import errors
from ingress.pipeline.call import forwarded
from ingress.pipeline.endpoint import ENDPOINTS, Endpoint
from ingress.pipeline.exchange import ClientGone, Exchange
from ingress.pipeline.pipeline import run_pass_through
from ingress.pipeline.runtime import Runtime
from ingress.pipeline.stages.passthrough import PassThrough
from ingress.proxy import google
from ingress.translate import vertex_embed, vertex_predict
from ingress.translate.gemini_generate import query_key
from streams.events import Interception, Tenant, uuid7


@dataclass(frozen=True, slots=True)
class LlmCall:
    """A decrypted request the pipeline serves: the endpoint, and the base
    URL the provider's codec builds the call on (from the path the client
    used, so a versioned prefix survives)."""

    endpoint: Endpoint
    kind: str  # the provider kind: its codec
    base_path: str  # what precedes the endpoint's own path ("/v1" for OpenAI)
    # What else the codec needs to address the call as the caller did
    # (Vertex: project, location, API version).
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


# adapter -> (path suffix, endpoint, whether the base path is kept in the
# base URL).  OpenAI's base URL includes its version (/v1); Anthropic's
# codec adds /v1/messages itself.
_CALLS: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "openai": (
        ("/chat/completions", "chat", True),
        ("/responses", "responses", True),
        ("/embeddings", "embeddings", True),
    ),
    "anthropic": (
        ("/v1/messages", "messages", False),
        # A count sends the prompt to the provider too: the request hooks
        # screen it (a prompt they block is not counted either).
        ("/v1/messages/count_tokens", "count_tokens", False),
    ),
}

# Google's APIs name the model in the path (/v1beta/models/{model}:generateContent,
# Vertex's .../publishers/google/models/{model}:generateContent):
# recognised by ``ingress.proxy.google``; their endpoints read the model from
# every one of those addresses.
_GOOGLE_METHODS = {
    "generateContent": "generate_content",
    "streamGenerateContent": "stream_generate_content",
    "countTokens": "gemini_count_tokens",
    "embedContent": "embed_content",
    "batchEmbedContents": "batch_embed_contents",
}
_GOOGLE = {
    name: dataclasses.replace(ENDPOINTS[name], addressed=google.address) for name in _GOOGLE_METHODS.values()
}
# Vertex AI's text embeddings: served as Gemini's embeddings are, in
# Vertex's :predict shape (ingress.translate.vertex_predict).  The proxy's
# alone: no gateway URL is a Vertex one.
_GOOGLE_METHODS["predict"] = "vertex_predict"
_GOOGLE["vertex_predict"] = dataclasses.replace(
    ENDPOINTS["embed_content"], name="vertex_predict", decode=vertex_predict.decode, addressed=google.address
)
# Vertex AI's embedContent and batchEmbedContents (Gemini embedding models):
# another body than the Gemini API's, screened and forwarded as sent
# (ingress.translate.vertex_embed, call/forwarded.py).
_VERTEX_EMBED = {
    method: dataclasses.replace(
        ENDPOINTS["embed_content"],
        name=name,
        decode=decode,
        call=forwarded.embed_as_sent_call,
        addressed=google.address,
    )
    for method, name, decode in (
        ("embedContent", "vertex_embed_content", vertex_embed.decode_embed),
        ("batchEmbedContents", "vertex_batch_embed_contents", vertex_embed.decode_batch),
    )
}
_GOOGLE_KINDS = {"gemini": "gemini", **dict.fromkeys(google.VERTEX, "vertex")}


def _google(adapter: str, req: Request) -> LlmCall | None:
    kind = _GOOGLE_KINDS[adapter]
    path = req.path
    if "//" in path:
        return None
    if google.cache_call(adapter, req.method, path):
        # The cache is stored where the caller addressed it: the call
        # builds the URL from the host and the path as sent.
        return LlmCall(ENDPOINTS["cached_contents"], kind, "")
    if req.method != "POST":
        return None
    call = google.model_call(adapter, path)
    if call is None:
        return None
    if kind == "vertex" and call.method in _VERTEX_EMBED:
        # Forwarded as sent, to the path the caller used.
        return LlmCall(_VERTEX_EMBED[call.method], kind, "")
    return LlmCall(_GOOGLE[_GOOGLE_METHODS[call.method]], kind, call.base_path, call.options)


def recognise(adapter: str, req: Request) -> LlmCall | None:
    """The pipeline call a request is, or None (relayed as it is)."""
    if req.upgrade:
        return None
    if adapter in _GOOGLE_KINDS:
        return _google(adapter, req)
    calls = _CALLS.get(adapter)
    if calls is None or req.method != "POST":
        return None
    path = req.path
    for suffix, name, keep in calls:
        if path.endswith(suffix):
            base = path[: -len(suffix)]
            if "//" in path or (not keep and base):
                continue
            return LlmCall(ENDPOINTS[name], adapter, base)
    return None


# Never forwarded from the client: framing (the pipeline frames its own
# request), what the upstream session sets itself, and hop-by-hop headers.
_NOT_FORWARDED = HOP_BY_HOP | {
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "accept-encoding",
}


def forwarded_headers(headers: Headers, added: dict[str, str]) -> dict[str, str]:
    """The client's end-to-end headers as the provider must see them (its
    credential among them, unchanged), plus the domain's own headers."""
    named = {t.strip().lower() for v in headers.get_all("connection") for t in v.split(",")}
    out: dict[str, str] = {}
    for k, v in headers.items:
        lk = k.lower()
        if lk in _NOT_FORWARDED or lk in named:
            continue
        out[lk] = f"{out[lk]}, {v}" if lk in out else v
    for k, v in added.items():
        out[k.lower()] = v
    return out


def call_headers(call: LlmCall, req: Request, added: dict[str, str]) -> dict[str, str]:
    """What the provider must see of a recognised call: the forwarded
    headers, and a Gemini key the caller put in the URL (``?key=``) as
    ``x-goog-api-key`` (the codec builds the URL afresh, without the query)."""
    out = forwarded_headers(req.headers, added)
    if call.kind in ("gemini", "vertex") and "x-goog-api-key" not in out:
        key = query_key(req.target.partition("?")[2])
        if key:
            out["x-goog-api-key"] = key
    return out


class _HeaderView:
    """An ``ingress.http1.Headers`` as the pipeline reads headers."""

    __slots__ = ("_h",)

    def __init__(self, headers: Headers) -> None:
        self._h = headers

    def get(self, name: str, /) -> str | None:
        return self._h.get(name)

    def __contains__(self, name: object, /) -> bool:
        return name in self._h

    def items(self) -> Iterator[tuple[str, str]]:
        return iter(self._h.items)


class Inbound:
    """A decrypted request, read whole already by the http1 layer."""

    __slots__ = ("client_ip", "headers", "method", "path", "query", "request")

    def __init__(self, request: Request, client_ip: str) -> None:
        self.request = request
        self.method = request.method
        self.path = request.path
        self.query = request.target.partition("?")[2]
        self.headers = _HeaderView(request.headers)
        self.client_ip = client_ip

    async def body(self, limit: int) -> bytes:
        raw = self.request.body
        if len(raw) > limit:
            raise errors.too_large(limit)
        encoding = (self.request.headers.get("content-encoding") or "").strip().lower()
        if encoding in ("", "identity"):
            return raw
        if encoding not in ("gzip", "deflate"):
            raise errors.unsupported_encoding()
        # A body the hooks must read: decoded, under the same limit.
        d = zlib.decompressobj(wbits=47 if encoding == "gzip" else 15)
        try:
            out = d.decompress(raw, limit + 1)
        except zlib.error:
            raise errors.bad_body_encoding("does not decode with its Content-Encoding") from None
        if len(out) > limit:
            raise errors.too_large(limit)
        return out


class Outbound:
    """The answer on the client's bumped connection; counts what it sends."""

    __slots__ = ("bytes_sent", "resp", "status")

    def __init__(self, resp: Responder) -> None:
        self.resp = resp
        self.status = 0
        self.bytes_sent = 0

    @property
    def started(self) -> bool:
        return self.status != 0

    async def send(self, status: int, headers: dict[str, str], body: bytes, *, close: bool = False) -> None:
        self.status = status
        self.bytes_sent += len(body)
        try:
            await self.resp.send(status, Headers(headers.items()), body, close=close)
        except (ConnectionError, OSError):
            raise ClientGone from None

    async def start(self, status: int, headers: dict[str, str]) -> _Writer:
        self.status = status
        try:
            body = await self.resp.start(status, Headers(headers.items()))
        except (ConnectionError, OSError):
            raise ClientGone from None
        return _Writer(self, body)


class _Writer:
    __slots__ = ("body", "out")

    def __init__(self, out: Outbound, body: BodyWriter) -> None:
        self.out = out
        self.body = body

    async def write(self, data: bytes) -> None:
        self.out.bytes_sent += len(data)
        try:
            await self.body.write(data)
        except (ConnectionError, OSError):
            raise ClientGone from None

    async def end(self) -> None:
        try:
            await self.body.end()
        except (ConnectionError, OSError):
            raise ClientGone from None


async def serve(
    rt: Runtime,
    call: LlmCall,
    req: Request,
    resp: Responder,
    *,
    client_ip: str,
    pass_through: PassThrough,
    interception: Interception,
    tenant: Tenant,
) -> Outbound:
    """One decrypted LLM API request through the pipeline; the answer is
    written on ``resp``.  Returns the outbound (status, bytes sent)."""
    outbound = Outbound(resp)
    spec = call.endpoint
    ex = Exchange(uuid7(), rt.acquire(), Inbound(req, client_ip), outbound, spec.grammar, ingress="proxy")
    try:
        ex.spec = spec
        ex.endpoint = spec.name
        ex.tenant = tenant
        ex.interception = interception
        ex.passthrough = pass_through
        # A client that hangs up while its call is served cancels the call
        # (receipt records a 499, billing what the provider already worked
        # on), as the gateway's front end does: the call runs in this task,
        # which the http1 layer's disconnect cancels.
        task = asyncio.current_task()
        assert task is not None
        left = False

        def gone() -> None:
            nonlocal left
            left = True
            task.cancel()

        req.disconnected.add_callback(gone)
        try:
            await run_pass_through(ex)
        except asyncio.CancelledError:
            if not left:
                raise  # not the client's doing: the node is closing
            task.uncancel()
        except ClientGone:
            pass
        finally:
            req.disconnected.remove_callback(gone)
    finally:
        rt.release()
    return outbound
