"""Opening connections to the targets of the proxy: the resolve override,
the private-address guard (SSRF), an optional parent proxy, and TLS
verified against the system store plus the configured extra CAs.

Every address a name resolves to is checked, not just the first, and the
connection goes to a checked address: a name that answers with a public
and a private address is refused, not raced.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import os
import socket
import ssl
from collections.abc import Mapping
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from ingress.http1.client import ConnectError, Origin
from ingress.upstream.lean import LeanClient
from ingress.upstream.transport import AiohttpTransport, Transport
from streams.config_proxy import ProxyConfig, split_address
from streams.settings import load_settings

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def verify_context(extra_ca_files: tuple[str, ...] = ()) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    for path in extra_ca_files:
        ctx.load_verify_locations(cafile=path)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _internal_name(host: str) -> bool:
    h = host.lower().rstrip(".")
    return h == "localhost" or h.endswith((".localhost", ".internal", ".local"))


class Upstreams:
    def __init__(
        self,
        cfg: ProxyConfig,
        verify: ssl.SSLContext | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.cfg = cfg
        self.verify = verify or verify_context(cfg.tls.upstream_ca_files)
        self._override: dict[str, tuple[str, int | None]] = {}
        for key, value in cfg.resolve.items():
            split = split_address(value)
            if split is not None:
                self._override[key.lower()] = split
        self._allowed = [ipaddress.ip_network(c, strict=False) for c in cfg.allow_private_cidrs]
        self._timeout = cfg.limits.connect_timeout_s
        parent = urlsplit(cfg.parent_proxy) if cfg.parent_proxy else None
        self._parent = (parent.hostname, parent.port) if parent and parent.hostname and parent.port else None
        # Basic credentials for the parent, from the variable the config
        # names (read once: a changed secret needs a restart, like the CA).
        creds = (
            (os.environ if environ is None else environ).get(cfg.parent_proxy_auth_env, "")
            if cfg.parent_proxy_auth_env
            else ""
        )
        self._parent_auth = (
            f"Proxy-Authorization: Basic {base64.b64encode(creds.encode()).decode()}\r\n" if creds else ""
        )

    @property
    def parent(self) -> tuple[str, int] | None:
        """The parent proxy (host, port) every upstream connection goes through."""
        return self._parent

    @property
    def chained(self) -> bool:
        """Whether every upstream connection goes through a parent proxy."""
        return self._parent is not None

    def _refuse_private(self, host: str, addr: str) -> None:
        if not self.cfg.block_private_targets:
            return
        ip = ipaddress.ip_address(addr)
        if ip.is_global and not ip.is_multicast:
            return
        if any(ip in net for net in self._allowed):
            return
        raise ConnectError("private_address", f"{host} resolves to a non-public address ({ip}); refused")

    async def resolve(self, host: str, port: int) -> list[tuple[str, int]]:
        """The addresses (and ports) to try, each checked.  An override names
        the address itself (the operator's word: it is not checked)."""
        override = self._override.get(f"{host.lower()}:{port}")
        if override is not None:
            return [(override[0], override[1] or port)]
        try:
            ipaddress.ip_address(host.strip("[]"))
            addrs = [host.strip("[]")]
        except ValueError:
            if _internal_name(host) and self.cfg.block_private_targets:
                raise ConnectError("private_address", f"{host} is an internal name; refused") from None
            addrs = await self._lookup(host, port)
        for addr in addrs:
            self._refuse_private(host, addr)
        return [(a, port) for a in addrs]

    async def _lookup(self, host: str, port: int) -> list[str]:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError):
            raise ConnectError("resolve", f"cannot resolve {host}") from None
        addrs = list(dict.fromkeys(str(i[4][0]) for i in infos))
        if not addrs:
            raise ConnectError("resolve", f"cannot resolve {host}")
        return addrs

    async def check_target(self, host: str, port: int) -> None:
        """The guard alone, before the proxy answers a CONNECT."""
        if self._parent is not None:
            # The parent resolves; literal and internal targets are still ours to refuse.
            try:
                self._refuse_private(host, host.strip("[]"))
            except ValueError:
                if _internal_name(host) and self.cfg.block_private_targets:
                    raise ConnectError("private_address", f"{host} is an internal name; refused") from None
            return
        await self.resolve(host, port)

    async def open_tcp(self, host: str, port: int) -> Streams:
        if self._parent is not None:
            return await self._via_parent(host, port)
        addrs = await self.resolve(host, port)
        last: Exception | None = None
        for addr, addr_port in addrs:
            try:
                async with asyncio.timeout(self._timeout):
                    reader, writer = await asyncio.open_connection(addr, addr_port, limit=256 * 1024)
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return reader, writer
            except (OSError, TimeoutError) as exc:
                last = exc
        kind = "timeout" if isinstance(last, TimeoutError) else "refused"
        raise ConnectError(kind, f"cannot connect to {host}:{port} ({type(last).__name__})")

    async def _via_parent(self, host: str, port: int) -> Streams:
        assert self._parent is not None
        phost, pport = self._parent
        try:
            async with asyncio.timeout(self._timeout):
                reader, writer = await asyncio.open_connection(phost, pport, limit=256 * 1024)
                target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                writer.write(
                    f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{self._parent_auth}\r\n".encode(
                        "latin-1"
                    )
                )
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise ConnectError(
                "parent_proxy", f"parent proxy {phost}:{pport}: {type(exc).__name__}"
            ) from None
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or parts[1] != "200":
            writer.close()
            raise ConnectError("parent_proxy", f"parent proxy refused {target}: {status_line}")
        return reader, writer

    async def open_tls(self, origin: Origin) -> Streams:
        reader, writer = await self.open_tcp(origin.host, origin.port)
        if not origin.tls:
            return reader, writer
        try:
            await writer.start_tls(
                self.verify, server_hostname=origin.host, ssl_handshake_timeout=self._timeout
            )
        except ssl.SSLCertVerificationError as exc:
            writer.close()
            raise ConnectError(
                "tls_verify",
                f"the certificate of {origin.host} failed verification: {exc.verify_message}",
            ) from None
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            writer.close()
            raise ConnectError("tls", f"TLS with {origin.host} failed: {type(exc).__name__}") from None
        return reader, writer


class TargetUnreachable(OSError):
    """A name the proxy will not connect to (private, unresolvable): an
    OSError, so the HTTP client reports it as a connection failure."""


class ProxyResolver(AbstractResolver):
    """Name resolution for the pipeline's calls to the hosts the clients
    addressed: the same override and private-address guard as every other
    connection the proxy makes."""

    def __init__(self, upstreams: Upstreams) -> None:
        self._up = upstreams

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            addrs = await self._up.resolve(host, port)
        except ConnectError as exc:
            raise TargetUnreachable(exc.reason) from None
        out: list[ResolveResult] = []
        for addr, addr_port in addrs:
            fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
            out.append(
                ResolveResult(
                    hostname=host, host=addr, port=addr_port, family=fam, proto=0, flags=socket.AI_NUMERICHOST
                )
            )
        return out

    async def close(self) -> None:
        return None


def pipeline_client(upstreams: Upstreams, *, limit: int = 1024) -> Transport:
    """The client the pipeline calls providers on for decrypted flows:
    connections opened by the rules of every other connection of the proxy
    (``Upstreams.resolve``: the resolve override, the private-address guard
    with ``allow_private_cidrs``, asked for each new connection; or the
    parent proxy's tunnel); TLS verified against the system store plus the configured
    extra CAs (an invalid certificate fails the call: never a silent
    downgrade); keep-alive connections shared by all flows to a host.  The
    lean client unless ``NEXUS_UPSTREAM_HTTP=aiohttp`` (as the gateway's)."""
    if load_settings().upstream_http == "aiohttp":
        return AiohttpTransport(pipeline_session(upstreams, limit=limit))
    cfg = upstreams.cfg

    async def resolve(host: str, port: int) -> list[tuple[str, int]]:
        try:
            return await upstreams.resolve(host, port)
        except ConnectError as exc:
            raise TargetUnreachable(exc.reason) from None

    return LeanClient(
        max_connections=limit,
        connect_timeout_s=cfg.limits.connect_timeout_s,
        read_timeout_s=cfg.limits.idle_timeout_s,
        allow_private=False,  # not consulted: ``resolve`` guards, or the parent resolves
        verify=upstreams.verify,
        # Through a parent proxy, the parent resolves the targets (the
        # CONNECT guard checked what it can), as for relayed connections.
        resolve=None if upstreams.chained else resolve,
        parent=upstreams.parent,
    )


def pipeline_session(upstreams: Upstreams, *, limit: int = 1024) -> aiohttp.ClientSession:
    """The aiohttp session of ``pipeline_client`` (``NEXUS_UPSTREAM_HTTP=aiohttp``):
    resolved through the proxy's override and guard, TLS verified against
    the system store plus the configured extra CAs (an invalid certificate
    fails the call: never a silent downgrade), keep-alive connections
    shared by all flows to a host."""
    cfg = upstreams.cfg
    chained = upstreams.chained
    connector = aiohttp.TCPConnector(
        limit=limit,
        limit_per_host=0,
        # Through a parent proxy, the parent resolves the targets (the
        # CONNECT guard checked what it can); only its own name is resolved here.
        resolver=None if chained else ProxyResolver(upstreams),
        use_dns_cache=False,  # the override and the guard decide every time
        ssl=upstreams.verify,
    )
    timeout = aiohttp.ClientTimeout(
        total=None,
        connect=cfg.limits.connect_timeout_s,
        sock_connect=cfg.limits.connect_timeout_s,
        sock_read=cfg.limits.idle_timeout_s,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        trust_env=False,
        auto_decompress=True,
        skip_auto_headers=("User-Agent",),
        cookie_jar=aiohttp.DummyCookieJar(),
        proxy=cfg.parent_proxy or None,
    )
