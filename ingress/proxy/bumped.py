"""Requests inside a bumped connection: the per-path action; an LLM API
call the host's adapter recognises runs the pipeline
(``ingress.proxy.front``: hooks, usage, cost, capture, the gateway's
events); anything else is read by the adapter as far as it can, relayed to
the real upstream over a verified TLS connection from the pool, and
recorded as a ``proxy.request`` event with metadata only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

import msgspec

from ingress.http1 import ClientPool, ConnectError, Headers, Origin, Request, Responder
from ingress.http1.client import ResponseError
from ingress.pipeline.stages.passthrough import PassThrough
from ingress.proxy import google
from ingress.proxy.blockpage import BlockNotice, block_html
from ingress.proxy.domains import InterceptionTable
from ingress.proxy.flow import Flow
from ingress.proxy.front import LlmCall, call_headers, recognise, serve
from ingress.proxy.relay import splice
from streams.config_proxy import InterceptDomain
from streams.events import Interception
from streams.events_proxy import ProxyRequest

if TYPE_CHECKING:
    from ingress.proxy.node import ProxyNode


class _Body(msgspec.Struct):
    model: str = ""
    stream: bool = False


_body = msgspec.json.Decoder(_Body)
_encoder = msgspec.json.Encoder()


class AdapterError(ValueError):
    pass


def read_flow(adapter: str, req: Request) -> tuple[str, bool]:
    """The model and stream flag the adapter reads from a request."""
    if adapter in ("gemini", *google.VERTEX):
        # /v1beta/models/<model>:generateContent | :streamGenerateContent
        # (Vertex: .../publishers/<p>/models/<model>:...)
        tail = req.path.rsplit("/models/", 1)
        if len(tail) == 2 and ":" in tail[1]:
            model, _, verb = tail[1].partition(":")
            return model, verb.startswith("stream")
    if not req.body or req.method in ("GET", "HEAD", "DELETE"):
        return "", False
    try:
        parsed = _body.decode(req.body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise AdapterError(f"the {adapter} adapter could not read the request body") from exc
    return parsed.model, parsed.stream


def _error_body(message: str, kind: str) -> bytes:
    return _encoder.encode({"error": {"message": message, "type": kind, "code": kind}})


class BumpedHandler:
    """The http1 handler of one bumped connection."""

    def __init__(self, node: ProxyNode, flow: Flow, domain: InterceptDomain, origin: Origin) -> None:
        self.node = node
        self.flow = flow
        self.domain = domain
        self.origin = origin
        self.pool: ClientPool = node.pool
        self.warm: asyncio.Task[None] | None = None  # the upstream connection opened ahead
        self.warm_error: ConnectError | None = None

    async def __call__(self, req: Request, resp: Responder) -> None:
        node, flow = self.node, self.flow
        flow.requests += 1
        started = time.monotonic()
        decision = InterceptionTable.path_action(self.domain, req.path)
        fp, cls = node.credentials.inspect(req.headers, self._key_query(req))
        if decision.action == "process" and self.domain.adapter:
            call = recognise(self.domain.adapter, req)
            if call is not None and await self._upstream_verified():
                await self._pipeline(req, resp, call, fp, cls)
                return
        event = ProxyRequest(
            request_id=f"{flow.id}.{flow.requests}",
            node=node.node,
            tenant=flow.tenant(),
            connection_id=flow.id,
            method=req.method,
            host=self.origin.host,
            path=req.path,
            action=decision.action,
            adapter=self.domain.adapter,
            client_ip=flow.client_ip,
            user_agent=req.headers.get("user-agent") or "",
            ai_service=flow.ai_service,
            credential_fingerprint=fp,
            credential_class=cls,
            bytes_up=len(req.body),
        )
        flow.bytes_up += len(req.body)
        try:
            if decision.action == "block":
                event.status = 403
                rule = decision.prefix or self.domain.host
                if "text/html" in (req.headers.get("accept") or ""):
                    # A browser's page load: a page naming the rule.
                    notice = BlockNotice(f"path {rule}", "", justifiable=False)
                    page = block_html(self.origin.host, notice, node.cfg.block_page)
                    await resp.send(403, Headers([("Content-Type", "text/html; charset=utf-8")]), page)
                    return
                await resp.send(
                    403,
                    Headers([("Content-Type", "application/json")]),
                    _error_body(f"Blocked by Nexus policy (path rule: {rule}).", "blocked_by_policy"),
                )
                return
            if decision.action == "process" and self.domain.adapter:
                try:
                    event.model, event.stream = read_flow(self.domain.adapter, req)
                except AdapterError as exc:
                    event.adapter_error = str(exc)
                    if self.domain.on_adapter_error == "block":
                        event.status = 400
                        await resp.send(
                            400,
                            Headers([("Content-Type", "application/json")]),
                            _error_body(f"{exc}; refused by policy.", "unreadable_request"),
                        )
                        return
            await self._relay(req, resp, event)
        finally:
            event.latency_ms = round((time.monotonic() - started) * 1000, 3)
            node.metrics.requests.labels(event.action).inc()
            node.emit(event)

    def _key_query(self, req: Request) -> str:
        """The query string when its ``?key=`` is a credential: Google's
        APIs (the gemini adapter's hosts, any *.googleapis.com) take the key
        in the URL; elsewhere a ``key`` parameter is no credential."""
        host = self.origin.host
        google_adapter = self.domain.adapter == "gemini" or self.domain.adapter in google.VERTEX
        if google_adapter or host == "googleapis.com" or host.endswith(".googleapis.com"):
            return req.target.partition("?")[2]
        return ""

    async def _upstream_verified(self) -> bool:
        """Whether the upstream connection opened ahead came up: a certificate
        that fails verification is answered by the relay's 502 naming the
        reason (and marks the connection ``upstream_cert_error``)."""
        warm = self.warm
        if warm is not None:
            if not warm.done():
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(warm), self.node.cfg.limits.connect_timeout_s)
            if warm.done() and not warm.cancelled() and isinstance(warm.exception(), ConnectError):
                self.warm_error = warm.exception()  # type: ignore[assignment]
        return self.warm_error is None

    async def _pipeline(self, req: Request, resp: Responder, call: LlmCall, fp: str, cls: str) -> None:
        """An LLM API call through the pipeline's pass-through stage list,
        to the host the client addressed, with its own key and model."""
        node, flow, origin = self.node, self.flow, self.origin
        port = "" if origin.port == 443 else f":{origin.port}"
        assert node.llm_client is not None  # made on start
        target = PassThrough(
            call.kind,
            f"https://{origin.host}{port}{call.base_path}",
            call_headers(call, req, dict(self.domain.add_headers)),
            node.llm_client,
            call.options,
        )
        interception = Interception(
            bump_status=flow.bump_status or "bumped",
            connection_id=flow.id,
            target_host=origin.host,
            ai_service=flow.ai_service,
            device_id=flow.device_id,
            credential_fingerprint=fp,
            credential_class=cls,
        )
        flow.bytes_up += len(req.body)
        try:
            out = await serve(
                node.pipeline,
                call,
                req,
                resp,
                client_ip=flow.client_ip,
                pass_through=target,
                interception=interception,
                tenant=flow.tenant(),
            )
        finally:
            node.metrics.requests.labels("process").inc()
        flow.bytes_down += out.bytes_sent

    async def _relay(self, req: Request, resp: Responder, event: ProxyRequest) -> None:
        node, flow = self.node, self.flow
        headers = req.headers.without_hop_by_hop()
        for name, value in self.domain.add_headers.items():
            headers.set(name, value)
        upgrade = (req.headers.get("upgrade") or "") if req.upgrade else ""
        try:
            if self.warm_error is not None:
                raise self.warm_error
            up = await self.pool.request(
                self.origin, req.method, req.target, headers, req.body, upgrade=upgrade
            )
        except ConnectError as exc:
            if exc.kind == "tls_verify":
                flow.bump_status = "upstream_cert_error"
                flow.reason = exc.reason
                node.metrics.handshake_failures.labels("upstream", "certificate").inc()
            event.status = 502
            await resp.send(
                502,
                Headers([("Content-Type", "application/json")]),
                _error_body(f"Nexus proxy: {exc.reason}", "upstream_" + exc.kind),
                close=exc.kind == "tls_verify",
            )
            return
        except ResponseError as exc:
            event.status = 502
            await resp.send(
                502,
                Headers([("Content-Type", "application/json")]),
                _error_body(f"Nexus proxy: {exc}", "upstream_error"),
            )
            return
        event.status = up.status
        out = up.headers.without_hop_by_hop()
        if up.status == 101 and upgrade:
            await self._upgrade(resp, up, out)
            return
        length = up.headers.get("content-length")
        n = int(length) if length is not None and length.isdigit() else None
        body = await resp.start(up.status, out, content_length=n, reason=up.reason)
        try:
            async for chunk in up.chunks():
                if req.disconnected.is_set():
                    up.close()
                    return
                event.bytes_down += len(chunk)
                flow.bytes_down += len(chunk)
                await body.write(chunk)
            await body.end()
        except (ResponseError, ConnectionError, OSError):
            up.close()
            raise ConnectionResetError("relay cut") from None

    async def _upgrade(self, resp: Responder, up: object, out: Headers) -> None:
        from ingress.http1.client import ClientResponse
        from ingress.http1.message import status_line

        assert isinstance(up, ClientResponse)
        reader, writer, early = resp.detach()
        up_reader, up_writer = up.take()
        out.set("Connection", "Upgrade")
        out.set("Upgrade", up.headers.get("upgrade") or "websocket")
        writer.write(status_line(101, up.reason) + out.encode() + b"\r\n" + (up.upgraded or b""))
        if early:
            up_writer.write(early)
        with contextlib.suppress(ConnectionError, OSError):
            await writer.drain()
        counts = await splice(
            reader, writer, up_reader, up_writer, idle_s=self.node.cfg.limits.idle_timeout_s
        )
        self.flow.bytes_up += counts.up
        self.flow.bytes_down += counts.down
