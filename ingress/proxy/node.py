"""The proxy node: accepts client connections on :3128 and decides, per
connection, what happens to it.

Before a tunnel: source allowlist, per-source connection rate, the tunnel
limit, the request head within the header timeout (the http1 layer), proxy
authentication, the target port, the private-address guard, agent
attestation, then the connection-stage hooks (a block answers 403).  Then
the gates, in this fixed order, for hosts the interception table lists:
kill switch -> pinning-exempt -> hook-exempt (attested) -> bump.  Hosts not
listed are spliced byte for byte.  Plain ``http://`` requests (absolute
form) are forwarded; WebSocket upgrades and non-TLS payloads in a tunnel
are relayed raw.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

from ingress.http1 import (
    ClientPool,
    ConnectError,
    Headers,
    Limits,
    Origin,
    Request,
    Responder,
    serve_connection,
)
from ingress.http1.message import status_line
from ingress.pipeline.runtime import Node as PipelineNode
from ingress.pipeline.runtime import Runtime
from ingress.pipeline.swapper import Clients, pass_through_runtime
from ingress.proxy.attestation import (
    HEADER as ATTESTATION_HEADER,
)
from ingress.proxy.attestation import (
    AgentKeyLookup,
    AttestationVerifier,
    KeyFile,
    LocalNonces,
    NoKeys,
    NonceStore,
    ValkeyNonces,
)
from ingress.proxy.auth import (
    ConfigCredentials,
    CredentialChain,
    CredentialVerifier,
    HubCredentials,
    parse_basic,
)
from ingress.proxy.blockpage import BlockNotice, BlockPageHandler, FormTokens, Justifications, is_browser
from ingress.proxy.bumped import BumpedHandler
from ingress.proxy.catalog import AiCatalogue
from ingress.proxy.certs import Authority, LeafMinter, load_authority
from ingress.proxy.credentials import ConfigCredentials as ProviderKeys
from ingress.proxy.domains import InterceptionTable
from ingress.proxy.flow import Flow
from ingress.proxy.killswitch import ProxyKillSwitch
from ingress.proxy.metrics import ProxyMetrics
from ingress.proxy.relay import Tunnel, open_tunnel, splice
from ingress.proxy.upstream import Upstreams, pipeline_client
from ingress.upstream.transport import Transport
from streams.config_snapshot import ConfigSnapshot
from streams.events import Event, Node
from streams.settings import Settings
from streams.spill import SpillStore
from streams.vault.master import MasterKeys

log = logging.getLogger("nexus.proxy")

ESTABLISHED = b"HTTP/1.1 200 Connection Established\r\n\r\n"
# A client refusing our leaf says so with one of these alerts (OpenSSL,
# BoringSSL, Java, NSS) or by hanging up in the handshake, after our
# certificate (mitmproxy's tls_passthrough reads it the same way); the host
# is then spliced for a while.
PINNING_ALERTS = (
    "CLIENT_CLOSED_IN_HANDSHAKE",
    "UNKNOWN_CA",
    "BAD_CERTIFICATE",
    "CERTIFICATE_UNKNOWN",
    "UNSUPPORTED_CERTIFICATE",
    "CERTIFICATE_EXPIRED",
    "CERTIFICATE_REVOKED",
    "DECRYPT_ERROR",
)


class Emitter(Protocol):
    def emit(self, event: Event) -> None: ...


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


def handshake_reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionError | EOFError) or (
        isinstance(exc, ssl.SSLError) and "EOF" in str(exc).upper()
    ):
        # asyncio's TLS layer loses the client's alert when the client hangs
        # up right after it, which is how most refuse a certificate.
        return "CLIENT_CLOSED_IN_HANDSHAKE"
    if isinstance(exc, TimeoutError):
        return "TIMEOUT"
    reason = getattr(exc, "reason", None) or type(exc).__name__
    return str(reason).upper().replace("TLSV1_ALERT_", "").replace("SSLV3_ALERT_", "")


class ProxyNode:
    def __init__(
        self,
        snapshot: ConfigSnapshot,
        emitter: Emitter,
        *,
        node_id: str,
        valkey: Any = None,
        valkey_prefix: str = "nexus:",
        agent_keys: AgentKeyLookup | None = None,
        users: CredentialVerifier | None = None,
        hub_users: HubCredentials | None = None,
        engine: Any = None,
        env: dict[str, str] | None = None,
        masters: MasterKeys | None = None,
        spill: SpillStore | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.cfg = cfg = snapshot.config.proxy
        self.node = Node(kind="proxy", id=node_id)
        self._emitter = emitter
        self.metrics = ProxyMetrics()
        self.engine = engine  # ingress.hooks.ComplianceEngine | None
        self.authorities: list[Authority] = [
            load_authority(src, signing=(i == 0)) for i, src in enumerate(cfg.tls.cas)
        ]
        self.minter: LeafMinter | None = None
        if self.authorities:
            self.minter = LeafMinter(
                self.authorities[0],
                days=cfg.tls.leaf_days,
                cache_size=cfg.tls.leaf_cache_size,
                on_cache=lambda hit: self.metrics.leaf_cache.labels("hit" if hit else "miss").inc(),
            )
        self.upstreams = Upstreams(cfg)
        self.pool = ClientPool(self.upstreams.open_tls, read_timeout_s=cfg.limits.idle_timeout_s)
        self.table = InterceptionTable(cfg.interception)
        self.catalogue = AiCatalogue(cfg.ai_hosts)
        self.kill = ProxyKillSwitch(snapshot.config.hooks, self.node, self)
        # Who may use the proxy: ``users`` as given, else the config's users
        # and virtual keys, then (following a Hub) the Hub's users.
        self._own_users = users is None
        self.hub_users = hub_users
        if hub_users is not None:
            hub_users.observe = lambda outcome: self.metrics.hub_signin.labels(outcome).inc()
        self.users: CredentialVerifier = users or self._verifier(snapshot)
        self._env = env
        self._masters = masters
        self.credentials = ProviderKeys(
            snapshot.hmac_secret,
            snapshot.config.providers,
            env,
            vault=snapshot.config.vault.credentials,
            masters=masters,
        )
        nonces: NonceStore = ValkeyNonces(valkey, valkey_prefix) if valkey is not None else LocalNonces()
        keys: AgentKeyLookup = agent_keys or (
            KeyFile(cfg.attestation.keys_file) if cfg.attestation.keys_file else NoKeys()
        )
        self.attestation = AttestationVerifier(keys, nonces, max_skew_s=cfg.attestation.max_skew_s)
        self.pinned: dict[str, float] = {}  # host -> monotonic time the fallback ends
        self.justified = Justifications(valkey, valkey_prefix)
        self.form_tokens = FormTokens(snapshot.hmac_secret)
        self._buckets: dict[str, _Bucket] = {}
        self._allowed_sources = [
            __import__("ipaddress").ip_network(c, strict=False) for c in cfg.allow_sources
        ]
        self._limits = Limits(
            max_header_bytes=cfg.limits.max_header_bytes,
            max_body_bytes=cfg.limits.max_body_bytes,
            header_timeout_s=cfg.limits.header_timeout_s,
            idle_timeout_s=cfg.limits.idle_timeout_s,
        )
        self.tunnels = 0
        self._relays: set[Tunnel] = set()  # spliced tunnels, relayed without a task
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.host = cfg.host
        self.port = cfg.port
        self.clock: Callable[[], float] = time.monotonic
        # Decrypted LLM API requests run the pipeline (ingress.proxy.front):
        # its runtime for this snapshot, and the client its calls take to
        # the hosts the clients addressed (made on start: it binds to the loop).
        self.pipeline = _pipeline_runtime(
            snapshot, emitter, self.node, engine, valkey, valkey_prefix, env, spill
        )
        self.llm_client: Transport | None = None

    def reconfigure(self, snapshot: ConfigSnapshot, engine: Any) -> None:
        """A new config snapshot while serving (the Hub's): what new
        connections are decided by -- the kill switch, the interception
        table, the AI catalogue, proxy users, provider keys, the block page,
        limits read per connection -- and the pipeline's runtime (hooks,
        prices) for new requests; requests in flight finish on theirs.  What
        was bound at start (listen address, CAs, upstream TLS, the resolve
        override) needs a restart."""
        cfg = snapshot.config.proxy
        self.snapshot = snapshot
        self.cfg = cfg
        self.kill.update(snapshot.config.hooks)
        self.table = InterceptionTable(cfg.interception)
        self.catalogue = AiCatalogue(cfg.ai_hosts)
        if self._own_users:
            self.users = self._verifier(snapshot)
        self.credentials = ProviderKeys(
            snapshot.hmac_secret,
            snapshot.config.providers,
            self._env,
            vault=snapshot.config.vault.credentials,
            masters=self._masters,
        )
        old_rt, old_engine = self.pipeline, self.engine
        self.engine = engine
        self.pipeline = pass_through_runtime(old_rt.host, snapshot, engine)
        if old_engine is not None and old_engine is not engine:
            old_rt.on_retire(old_engine.aclose)
        old_rt.retire()

    def _verifier(self, snapshot: ConfigSnapshot) -> CredentialVerifier:
        auth = snapshot.config.proxy.auth
        local = ConfigCredentials(snapshot)
        if self.hub_users is None or not auth.hub_users:
            return local
        self.hub_users.remember_s = auth.hub_remember_s
        return CredentialChain(local, self.hub_users)

    # --- lifecycle ----------------------------------------------------------------

    def emit(self, event: Event) -> None:
        self._emitter.emit(event)

    async def start(self, host: str | None = None, port: int | None = None) -> None:
        host = host or self.cfg.host
        port = self.cfg.port if port is None else port
        if self.llm_client is None:
            self.llm_client = pipeline_client(self.upstreams)
        self._server = await asyncio.start_server(self._accept, host, port, backlog=4096, limit=256 * 1024)
        sock = self._server.sockets[0]
        self.host, self.port = sock.getsockname()[:2]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for tunnel in list(self._relays):
            tunnel.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        # What the pipeline's requests left running (a body being spilled).
        background = list(self.pipeline.background)
        if background:
            await asyncio.wait(background, timeout=10)
        await self.pool.close()
        if self.llm_client is not None:
            await self.llm_client.close()
        self.kill.close()
        if self.minter is not None:
            self.minter.close()

    @property
    def ca_bundle(self) -> bytes:
        return b"".join(a.pem for a in self.authorities)

    # --- admission ----------------------------------------------------------------------

    def _source_allowed(self, ip: str) -> bool:
        if not self._allowed_sources:
            return True
        import ipaddress

        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self._allowed_sources)

    def _rate_ok(self, ip: str) -> bool:
        rate = self.cfg.limits.per_source_rate
        if rate <= 0:
            return True
        burst = float(self.cfg.limits.per_source_burst)
        now = self.clock()
        b = self._buckets.get(ip)
        if b is None:
            if len(self._buckets) > 100_000:
                self._buckets.clear()  # a flood of sources: start over rather than grow
            b = self._buckets[ip] = _Bucket(burst, now)
        b.tokens = min(burst, b.tokens + (now - b.stamp) * rate)
        b.stamp = now
        if b.tokens < 1:
            return False
        b.tokens -= 1
        return True

    async def _refuse_raw(self, writer: asyncio.StreamWriter, status: int, text: str) -> None:
        body = f"{text}\n".encode()
        head = (
            status_line(status)
            + (
                f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode()
        )
        with contextlib.suppress(ConnectionError, OSError):
            writer.write(head + body)
            await writer.drain()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        ip = str(peer[0]) if peer else ""
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            # A flood (a source over its rate, the node at its limit) is
            # counted, not recorded per connection: an event each would feed it.
            refusal = None
            recorded = False
            if not self._rate_ok(ip):
                refusal = (429, "source_rate", "too many new connections from this address")
            elif not self._source_allowed(ip):
                refusal = (403, "source_not_allowed", "this address may not use the proxy")
                recorded = True
            elif self.tunnels >= self.cfg.limits.max_tunnels:
                refusal = (503, "tunnel_limit", "the proxy is at its connection limit")
            if refusal is not None:
                self.metrics.refused.labels(refusal[1]).inc()
                await self._refuse_raw(writer, refusal[0], refusal[2])
                if recorded:
                    flow = Flow(ip)
                    flow.method, flow.bump_status = "", "blocked"
                    flow.reason, flow.status = refusal[1], refusal[0]
                    self._finish(flow)
                writer.close()
                return
            self.tunnels += 1
            self.metrics.active.inc()
            try:
                await serve_connection(
                    reader, writer, lambda req, resp: self._front(req, resp, ip), self._limits, peer=ip
                )
            finally:
                self.tunnels -= 1
                self.metrics.active.dec()
        except asyncio.CancelledError:
            # The node is closing.  Ending quietly: asyncio's server callback
            # logs a cancelled connection task as an error.
            writer.close()
        except Exception:
            log.exception("proxy connection from %s failed", ip)
            writer.close()
        finally:
            if task is not None:
                self._tasks.discard(task)

    def _finish(self, flow: Flow) -> None:
        if not flow.bump_status:
            flow.bump_status = "blocked"
        self.metrics.connections.labels(flow.bump_status).inc()
        self.metrics.bytes.labels("up").inc(flow.bytes_up)
        self.metrics.bytes.labels("down").inc(flow.bytes_down)
        self.emit(flow.event(self.node))

    # --- the front: CONNECT and absolute-form requests ------------------------------------

    async def _front(self, req: Request, resp: Responder, ip: str) -> None:
        flow = Flow(ip)
        flow.method = req.method
        flow.user_agent = req.headers.get("user-agent") or ""
        try:
            if req.method == "CONNECT":
                await self._connect(req, resp, flow)
            elif req.target.startswith("http://"):
                await self._forward(req, resp, flow)
            else:
                flow.reason = "not a proxy request"
                await self._answer(resp, flow, 400, "this is a forward proxy: send CONNECT or an http:// URL")
        finally:
            if not flow.relaying:
                self._finish(flow)

    async def _answer(
        self, resp: Responder, flow: Flow, status: int, text: str, headers: Headers | None = None
    ) -> None:
        flow.status = status
        if status >= 400 and not flow.bump_status:
            flow.bump_status = "blocked"
        h = headers or Headers()
        h.add("Content-Type", "text/plain; charset=utf-8")
        await resp.send(status, h, f"{text}\n".encode(), close=True)

    async def _admit(self, req: Request, resp: Responder, flow: Flow, host: str, port: int) -> bool:
        """Authentication, the port, the private-address guard and the
        connection-stage hooks; False when the request was answered."""
        flow.target_host, flow.target_port = host, port
        flow.ai_service = self.catalogue.service(host)
        creds = parse_basic(req.headers.get("proxy-authorization"))
        if creds is not None:
            ident = await self.users.verify(*creds, source_ip=flow.client_ip)
            self.metrics.auth.labels(ident.method if ident is not None else "failed").inc()
            if ident is None:
                flow.reason = "proxy authentication failed"
                await self._answer(resp, flow, 407, "proxy authentication failed", self._challenge())
                return False
            flow.auth, flow.user, flow.org = ident.method, ident.user, ident.org
            flow.project, flow.key_id = ident.project, ident.key_id
        elif self.cfg.auth.required:
            flow.reason = "proxy authentication required"
            await self._answer(resp, flow, 407, "proxy authentication required", self._challenge())
            return False
        if self.cfg.allow_ports and port not in self.cfg.allow_ports:
            flow.reason = f"port {port} is not allowed"
            await self._answer(resp, flow, 403, f"the proxy does not connect to port {port}")
            return False
        try:
            await self.upstreams.check_target(host, port)
        except ConnectError as exc:
            flow.reason = exc.reason
            status = 403 if exc.kind == "private_address" else 502
            await self._answer(resp, flow, status, exc.reason)
            return False
        # The engine of the runtime current now, held until the stage is
        # done (a snapshot applied meanwhile closes it only once idle).
        rt = self.pipeline.acquire()
        try:
            return await self._connection_stage(req, resp, flow, host, rt.compliance)
        finally:
            rt.release()

    async def _connection_stage(
        self, req: Request, resp: Responder, flow: Flow, host: str, engine: Any
    ) -> bool:
        if engine is not None and engine.hooks("connection"):
            from ingress.hooks import Connection, stage_events

            conn = Connection(
                client_ip=flow.client_ip,
                ingress="proxy",
                org_id=flow.org,
                project_id=flow.project,
                key_id=flow.key_id,
                user_id=flow.user,
                request_id=flow.id,
                target_host=host,
            )
            from ingress.hooks.emergency import NO_BYPASS, Bypass

            # A justification this user (else address) gave on a block page
            # runs the hooks it named in monitor mode for this host.
            excused = (
                await self.justified.excused(flow.user or flow.client_ip, host)
                if self.cfg.block_page.justify_hooks
                else frozenset()
            )
            bypass = Bypass(excused=excused) if excused else NO_BYPASS
            result = await engine.evaluate_connection(conn, bypass=bypass)
            for event in stage_events(
                result, request_id=flow.id, node=self.node, tenant=flow.tenant(), bypass=bypass
            ):
                self.emit(event)
            if result.blocked:
                rule = result.blocking_rule or result.blocking_hook or "policy"
                flow.reason = f"connection blocked by compliance policy (rule: {rule})"
                page = self.cfg.block_page
                if (
                    req.method == "CONNECT"
                    and page.enabled
                    and self.minter is not None
                    and is_browser(req.headers)
                    and not self.kill.state().engaged
                ):
                    # A browser shows a refused CONNECT as a bare network
                    # error: it gets the block page instead (_connect).
                    hook = result.blocking_hook
                    flow.block = BlockNotice(
                        rule, hook, bool(hook) and ("*" in page.justify_hooks or hook in page.justify_hooks)
                    )
                    return True
                await self._answer(resp, flow, 403, flow.reason)
                return False
        return True

    def _challenge(self) -> Headers:
        return Headers([("Proxy-Authenticate", f'Basic realm="{self.cfg.auth.realm}"')])

    async def _connect(self, req: Request, resp: Responder, flow: Flow) -> None:
        host, port = _split_target(req.target)
        if not host or port is None:
            flow.reason = "bad CONNECT target"
            await self._answer(resp, flow, 400, "CONNECT needs host:port")
            return
        if not await self._admit(req, resp, flow, host, port):
            return
        if flow.block is not None:
            await self._block_page(resp, flow, host, flow.block)
            return
        attested = False
        header = req.headers.get(ATTESTATION_HEADER)
        if header is not None and self.cfg.attestation.enabled:
            verdict = await self.attestation.check(header, f"{host}:{port}")
            self.metrics.attestation.labels(verdict.reason).inc()
            flow.attestation = verdict.reason
            attested = verdict.valid
            if attested:
                flow.device_id = verdict.agent_id
        domain = self.table.lookup(host)
        # The gates, in their fixed order, for a host that would be bumped.
        if domain is None:
            mode = "attested" if attested else "spliced"
        elif self.kill.state().engaged:
            mode = "kill_switch"
        elif self._pinned(host):
            mode = "pinning_fallback"
        elif attested:
            mode = "attested"
        elif self.minter is None:
            mode, flow.reason = "spliced", "no CA configured: cannot bump"
        else:
            mode = "bumped"
        if mode != "bumped":
            await self._tunnel(req, resp, flow, host, port, mode)
            return
        assert domain is not None and self.minter is not None
        origin = Origin(host, port, tls=True)
        handler = BumpedHandler(self, flow, domain, origin)
        warm = handler.warm = asyncio.create_task(self.pool.warm(origin))
        reader, writer, early = resp.detach()
        flow.status = 200
        writer.write(ESTABLISHED)
        if early or not await self._peek_tls(writer):
            # Not TLS, or bytes sent before our 200 (read already, they cannot
            # be handed to our TLS layer): relayed raw.
            warm.cancel()
            flow.bump_status = "spliced"
            flow.reason = "client sent data before the 200: relayed raw" if early else "not TLS: relayed raw"
            await self._relay_to(reader, writer, flow, host, port, early)
            return
        flow.bump_status = "bumped"
        try:
            await writer.start_tls(
                self.minter.context(host), ssl_handshake_timeout=self.cfg.tls.handshake_timeout_s
            )
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            warm.cancel()
            self._handshake_failed(flow, host, exc)
            writer.close()
            return
        ssl_obj = writer.get_extra_info("ssl_object")
        if ssl_obj is not None:
            flow.sni = getattr(ssl_obj, "server_hostname", None) or ""

        def _warmed(t: asyncio.Task[None]) -> None:
            if not t.cancelled() and isinstance(t.exception(), ConnectError):
                handler.warm_error = t.exception()  # type: ignore[assignment]

        warm.add_done_callback(_warmed)
        try:
            served = await serve_connection(reader, writer, handler, self._limits, peer=flow.client_ip)
        finally:
            if not warm.done():
                warm.cancel()
        # Under TLS 1.3 our side of the handshake completes before the client
        # has judged our certificate: its refusal arrives as an alert on the
        # first read.
        if served.requests == 0 and isinstance(served.read_error, ssl.SSLError):
            self._handshake_failed(flow, host, served.read_error)

    async def _block_page(self, resp: Responder, flow: Flow, host: str, notice: BlockNotice) -> None:
        """The connection is bumped only to answer every request with the
        block page; nothing reaches the host."""
        assert self.minter is not None
        flow.bump_status = "blocked"
        reader, writer, early = resp.detach()
        flow.status = 200
        writer.write(ESTABLISHED)
        if early or not await self._peek_tls(writer):
            writer.close()
            return
        try:
            await writer.start_tls(
                self.minter.context(host), ssl_handshake_timeout=self.cfg.tls.handshake_timeout_s
            )
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            flow.handshake_error = handshake_reason(exc)
            writer.close()
            return
        handler = BlockPageHandler(
            host=host,
            notice=notice,
            cfg=self.cfg.block_page,
            who=flow.user or flow.client_ip,
            tokens=self.form_tokens,
            justified=self.justified,
            emit=self.emit,
            node=self.node,
            tenant=flow.tenant(),
            connection_id=flow.id,
            client_ip=flow.client_ip,
        )
        served = await serve_connection(reader, writer, handler, self._limits, peer=flow.client_ip)
        flow.requests = served.requests
        flow.reason += ": block page served" + (" (justified)" if handler.justifications else "")

    def _handshake_failed(self, flow: Flow, host: str, exc: BaseException) -> None:
        reason = handshake_reason(exc)
        flow.handshake_error = reason
        self.metrics.handshake_failures.labels("client", reason.lower()).inc()
        if any(a in reason for a in PINNING_ALERTS) and self.cfg.tls.pinning_fallback_s > 0:
            if len(self.pinned) >= 10_000:
                now = self.clock()
                self.pinned = {h: t for h, t in self.pinned.items() if t > now}
            self.pinned[host.lower()] = self.clock() + self.cfg.tls.pinning_fallback_s
            self.metrics.pinned.set(len(self.pinned))
            flow.reason = f"client refused our certificate ({reason}): {host} spliced for a while"
            log.info("pinning fallback for %s: the client refused our leaf (%s)", host, reason)
        else:
            flow.reason = f"client TLS handshake failed ({reason})"

    def _pinned(self, host: str) -> bool:
        until = self.pinned.get(host.lower())
        if until is None:
            return False
        if self.clock() >= until:
            del self.pinned[host.lower()]
            self.metrics.pinned.set(len(self.pinned))
            return False
        return True

    async def _peek_tls(self, writer: asyncio.StreamWriter) -> bool:
        """Whether the client starts TLS, without taking its bytes: the
        transport stops reading, and the socket is peeked (a duplicate of
        its descriptor, so the transport's own stays untouched)."""
        transport: Any = writer.transport
        sock = writer.get_extra_info("socket")
        if sock is None:
            return True
        transport.pause_reading()
        await writer.drain()
        dup = socket.socket(fileno=os.dup(sock.fileno()))
        dup.setblocking(False)
        loop = asyncio.get_running_loop()
        ready = loop.create_future()

        def readable() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(dup.fileno(), readable)
        try:
            async with asyncio.timeout(self.cfg.limits.header_timeout_s):
                await ready
            first = dup.recv(1, socket.MSG_PEEK)
        except (TimeoutError, OSError):
            first = b""
        finally:
            loop.remove_reader(dup.fileno())
            dup.close()
            transport.resume_reading()
        return first == b"\x16" or first == b""

    async def _tunnel(
        self, req: Request, resp: Responder, flow: Flow, host: str, port: int, mode: str
    ) -> None:
        """Splice: connect first (a failure is a 502 on the CONNECT), then 200."""
        try:
            up_reader, up_writer = await self.upstreams.open_tcp(host, port)
        except ConnectError as exc:
            flow.reason = exc.reason
            await self._answer(resp, flow, 502 if exc.kind != "private_address" else 403, exc.reason)
            return
        flow.bump_status = mode
        reader, writer, early = resp.detach()
        flow.status = 200
        writer.write(ESTABLISHED)
        if early:
            up_writer.write(early)
            flow.bytes_up += len(early)
        self._hand_off(flow, reader, writer, up_reader, up_writer)

    def _hand_off(
        self,
        flow: Flow,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        """The tunnel relays on its own from here: the accepting task ends,
        and with it the http1 connection's objects and the coroutine frames
        (an idle tunnel holds a few hundred bytes, not ~17 kB).  It stays
        counted against the tunnel limit, and its flow is finished (event,
        metrics) when it ends."""
        self.tunnels += 1
        self.metrics.active.inc()
        flow.relaying = True

        def done(tunnel: Tunnel) -> None:
            self._relays.discard(tunnel)
            self.tunnels -= 1
            self.metrics.active.dec()
            flow.bytes_up += tunnel.counts.up
            flow.bytes_down += tunnel.counts.down
            self._finish(flow)

        tunnel = open_tunnel(
            reader, writer, up_reader, up_writer, idle_s=self.cfg.limits.idle_timeout_s, on_done=done
        )
        if not tunnel.finished:
            self._relays.add(tunnel)

    async def _relay_to(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        flow: Flow,
        host: str,
        port: int,
        early: bytes,
    ) -> None:
        try:
            up_reader, up_writer = await self.upstreams.open_tcp(host, port)
        except ConnectError as exc:
            flow.reason = exc.reason
            writer.close()
            return
        if early:
            up_writer.write(early)
            flow.bytes_up += len(early)
        counts = await splice(reader, writer, up_reader, up_writer, idle_s=self.cfg.limits.idle_timeout_s)
        flow.bytes_up += counts.up
        flow.bytes_down += counts.down

    async def _forward(self, req: Request, resp: Responder, flow: Flow) -> None:
        """A plain http:// request: forwarded once, then the connection
        closes (the next absolute-form request may name another host).  An
        Upgrade (WebSocket) becomes a raw relay after the head."""
        parts = urlsplit(req.target)
        host = parts.hostname or ""
        port = parts.port or 80
        if not host:
            await self._answer(resp, flow, 400, "no host in the request URL")
            return
        if not await self._admit(req, resp, flow, host, port):
            return
        flow.bump_status = "spliced"
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        headers = req.headers.without_hop_by_hop()
        headers.remove(ATTESTATION_HEADER)  # meant for us, never for the origin
        try:
            up_reader, up_writer = await self.upstreams.open_tcp(host, port)
        except ConnectError as exc:
            flow.reason = exc.reason
            await self._answer(resp, flow, 502, exc.reason)
            return
        upgrade = req.headers.get("upgrade") if req.upgrade else None
        if upgrade:
            headers.set("Connection", "Upgrade")
            headers.set("Upgrade", upgrade)
        else:
            headers.set("Connection", "close")
        if "host" not in headers:
            headers.add("Host", parts.netloc)
        if req.body or req.method in ("POST", "PUT", "PATCH"):
            headers.set("Content-Length", str(len(req.body)))
        head = f"{req.method} {target} HTTP/1.1\r\n".encode("latin-1") + headers.encode() + b"\r\n"
        up_writer.write(head + req.body)
        flow.bytes_up += len(req.body)
        flow.status = 200
        idle = self.cfg.limits.idle_timeout_s
        if upgrade:
            reader, writer, early = resp.detach()
            if early:
                up_writer.write(early)
            counts = await splice(reader, writer, up_reader, up_writer, idle_s=idle)
            flow.bytes_up += counts.up
            flow.bytes_down += counts.down
            return
        # The answer is relayed as the origin sends it; the connection then
        # ends (the origin was told to close after it).
        writer = resp.take_writer()
        try:
            while True:
                async with asyncio.timeout(idle):
                    data = await up_reader.read(256 * 1024)
                if not data:
                    break
                flow.bytes_down += len(data)
                writer.write(data)
                await writer.drain()
        except (TimeoutError, ConnectionError, OSError):
            pass
        finally:
            up_writer.close()


def _pipeline_runtime(
    snapshot: ConfigSnapshot,
    emitter: Emitter,
    node: Node,
    engine: Any,
    valkey: Any,
    prefix: str,
    env: dict[str, str] | None,
    spill: SpillStore | None,
) -> Runtime:
    clients = Clients(valkey, None, prefix, Settings())
    # Bodies over the events' inline limit go to the spill store (None: only their size is recorded).
    host = PipelineNode(snapshot, emitter, node, spill, env if env is not None else {}, clients)
    return pass_through_runtime(host, snapshot, engine)


def _split_target(target: str) -> tuple[str, int | None]:
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return "", None
    host = host.strip("[]").lower()
    p = int(port)
    return (host, p) if host and 0 < p < 65536 else ("", None)
