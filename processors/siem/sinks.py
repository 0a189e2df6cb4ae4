"""Sink clients: deliver a batch of records and say what happened.

A client either raises ``SinkUnavailable`` (the sink is down, overloaded or
misconfigured: retry the whole batch later, never dead-letter) or returns a
``SendResult`` naming records the sink *rejected* (retried a few times, then
dead-lettered) and records to simply send again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import os
import socket
import ssl
from collections.abc import Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import msgspec
from aiohttp.abc import ResolveResult
from aiohttp.resolver import ThreadedResolver

from processors.siem import formats
from streams.config import ConfigError
from streams.config_siem import ElasticSink, Sink, SplunkHecSink, SyslogSink, WebhookSink

Record = dict[str, Any]
log = logging.getLogger("nexus.siem")


class SinkUnavailable(Exception):
    """The sink cannot take records right now; the reason is ours (no body)."""


class SendResult(msgspec.Struct, frozen=True):
    rejected: dict[int, str] = {}  # index in the batch -> reason
    retry: frozenset[int] = frozenset()  # not delivered, not the record's fault


class SinkClient(Protocol):
    async def send(self, records: Sequence[Record]) -> SendResult: ...

    async def close(self) -> None: ...


# --- the SSRF guard at connect time -------------------------------------------


def _refuse_private(host: str, addresses: Sequence[str]) -> None:
    """The config check saw a host name; this sees what it resolves to now,
    so a name re-pointed at an internal address (DNS rebinding) is refused
    at every connect, not only at load."""
    for addr in addresses:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
        if not ip.is_global or ip.is_multicast:
            raise SinkUnavailable(
                f"{host} resolves to a non-public address ({ip}); set allow_private_network: true "
                "if that is intended"
            )


class _GuardedResolver(ThreadedResolver):
    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await super().resolve(host, port, family)
        try:
            _refuse_private(host, [r["host"] for r in results])
        except SinkUnavailable as exc:
            log.warning("siem: %s", exc)
            raise OSError(str(exc)) from None
        return results


# --- syslog -----------------------------------------------------------------


class SyslogClient:
    """RFC 5424 over TCP / TLS (octet-counted) or UDP (one per datagram).

    Syslog over TCP has no application acknowledgement: a write succeeds
    once the kernel has the bytes.  To keep at-least-once honest, a reader
    watches the connection and a batch is never written to a connection the
    peer has closed; a closed or failing connection makes the batch retry
    on a fresh one (RELP would close the remaining window; it is not in the
    sink list)."""

    def __init__(self, sink: SyslogSink) -> None:
        self._sink = sink
        self._hostname = sink.hostname or socket.gethostname()
        self._procid = str(os.getpid())
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._watch: asyncio.Task[None] | None = None
        self._peer_closed = False
        self._udp: asyncio.DatagramTransport | None = None
        self._ssl = _client_ssl(sink) if sink.transport == "tls" else None

    def _frame(self, record: Record) -> bytes:
        msg = formats.cef(record) if self._sink.format == "cef" else formats.json_msg(record)
        return formats.syslog_message(
            record,
            facility=self._sink.facility,
            hostname=self._hostname,
            app_name=self._sink.app_name,
            msg=msg,
            procid=self._procid,
        )

    async def send(self, records: Sequence[Record]) -> SendResult:
        messages = [self._frame(r) for r in records]
        if self._sink.transport == "udp":
            return await self._send_udp(messages)
        await self._ensure_stream()
        assert self._writer is not None
        try:
            self._writer.write(b"".join(formats.octet_counted(m) for m in messages))
            async with asyncio.timeout(self._sink.timeout_s):
                await self._writer.drain()
        except (OSError, TimeoutError, ConnectionError) as exc:
            await self._drop()
            raise SinkUnavailable(f"write failed: {type(exc).__name__}") from None
        # Yield once so a reset that arrived with the write is seen now.
        await asyncio.sleep(0)
        if self._peer_closed:
            await self._drop()
            raise SinkUnavailable("peer closed the connection during the write")
        return SendResult()

    async def _ensure_stream(self) -> None:
        if self._writer is not None and not self._peer_closed and not self._writer.is_closing():
            return
        await self._drop()
        s = self._sink
        address = await self._resolve(socket.SOCK_STREAM)
        try:
            async with asyncio.timeout(s.timeout_s):
                self._reader, self._writer = await asyncio.open_connection(
                    address,
                    s.port,
                    ssl=self._ssl,
                    server_hostname=(s.tls_server_name or s.host) if self._ssl else None,
                )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise SinkUnavailable(f"cannot connect to {s.host}:{s.port}: {type(exc).__name__}") from None
        self._peer_closed = False
        self._watch = asyncio.create_task(self._watch_peer(self._reader))

    async def _resolve(self, kind: socket.SocketKind) -> str:
        """Resolve once, check, and connect to that very address (pinned)."""
        s = self._sink
        try:
            async with asyncio.timeout(s.timeout_s):
                infos = await asyncio.get_running_loop().getaddrinfo(s.host, s.port, type=kind)
        except (OSError, TimeoutError) as exc:
            raise SinkUnavailable(f"cannot resolve {s.host}: {type(exc).__name__}") from None
        addresses = [str(i[4][0]) for i in infos]
        if not addresses:
            raise SinkUnavailable(f"cannot resolve {s.host}")
        if not s.allow_private_network:
            _refuse_private(s.host, addresses)
        return addresses[0]

    async def _watch_peer(self, reader: asyncio.StreamReader) -> None:
        # A syslog receiver never talks back: any EOF or error means the
        # connection is gone.
        with contextlib.suppress(OSError, ConnectionError, ssl.SSLError):
            while await reader.read(4096):
                pass
        self._peer_closed = True

    async def _send_udp(self, messages: Sequence[bytes]) -> SendResult:
        if self._udp is None or self._udp.is_closing():
            loop = asyncio.get_running_loop()
            address = await self._resolve(socket.SOCK_DGRAM)
            try:
                self._udp, _ = await loop.create_datagram_endpoint(
                    asyncio.DatagramProtocol, remote_addr=(address, self._sink.port)
                )
            except OSError as exc:
                raise SinkUnavailable(f"udp: {type(exc).__name__}") from None
        rejected: dict[int, str] = {}
        for i, m in enumerate(messages):
            if len(m) > 65_000:
                rejected[i] = f"message of {len(m)} bytes does not fit a UDP datagram"
                continue
            try:
                self._udp.sendto(m)
            except OSError as exc:
                raise SinkUnavailable(f"udp: {type(exc).__name__}") from None
        return SendResult(rejected=rejected)

    async def _drop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), 1.0)
            self._writer = None

    async def close(self) -> None:
        await self._drop()
        if self._udp is not None:
            self._udp.close()


def _client_ssl(sink: SyslogSink) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=sink.tls_ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if sink.tls_cert_file and sink.tls_key_file:
        ctx.load_cert_chain(sink.tls_cert_file, sink.tls_key_file)
    return ctx


# --- HTTP sinks ---------------------------------------------------------------

# Statuses that say "not now" rather than "not this record".
_OUTAGE = frozenset({401, 403, 404, 408, 425, 429})


class _HttpClient:
    def __init__(self, sink: SplunkHecSink | ElasticSink | WebhookSink, url: str) -> None:
        self._sink = sink
        self._url = url
        self._session: aiohttp.ClientSession | None = None

    def _headers(self, body: bytes) -> dict[str, str]:
        raise NotImplementedError

    async def _post(self, body: bytes) -> tuple[int, bytes]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._sink.timeout_s),
                # Sinks are configured targets; never follow a redirect to
                # somewhere the SSRF guard has not seen.
                connector=aiohttp.TCPConnector(
                    limit=4, resolver=None if self._sink.allow_private_network else _GuardedResolver()
                ),
            )
        try:
            async with self._session.post(
                self._url, data=body, headers=self._headers(body), allow_redirects=False
            ) as resp:
                return resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SinkUnavailable(f"POST failed: {type(exc).__name__}") from None

    @staticmethod
    def _classify(status: int, n: int) -> SendResult:
        if 200 <= status < 300:
            return SendResult()
        if status >= 500 or status in _OUTAGE or 300 <= status < 400:
            raise SinkUnavailable(f"HTTP {status}")
        return SendResult(rejected=dict.fromkeys(range(n), f"HTTP {status}"))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class HecClient(_HttpClient):
    def __init__(self, sink: SplunkHecSink, token: str) -> None:
        parts = urlsplit(sink.url)
        if parts.path in ("", "/"):
            parts = parts._replace(path="/services/collector/event")
        super().__init__(sink, urlunsplit(parts))
        self._hec = sink
        self._auth = f"Splunk {token}"

    def _headers(self, body: bytes) -> dict[str, str]:
        return {"Authorization": self._auth, "Content-Type": "application/json"}

    async def send(self, records: Sequence[Record]) -> SendResult:
        s = self._hec
        status, payload = await self._post(
            formats.hec_batch(records, source=s.source, sourcetype=s.sourcetype, index=s.index)
        )
        if status == 400:
            # HEC indexes the events before the invalid one and names it.
            with contextlib.suppress(msgspec.DecodeError, TypeError, ValueError):
                bad = int(msgspec.json.decode(payload).get("invalid-event-number"))
                if 0 <= bad < len(records):
                    return SendResult(
                        rejected={bad: "HEC: invalid event"}, retry=frozenset(range(bad + 1, len(records)))
                    )
        return self._classify(status, len(records))


class ElasticClient(_HttpClient):
    def __init__(self, sink: ElasticSink, api_key: str | None) -> None:
        parts = urlsplit(sink.url)
        parts = parts._replace(path=parts.path.rstrip("/") + "/_bulk")
        super().__init__(sink, urlunsplit(parts))
        self._index = sink.index
        self._api_key = api_key

    def _headers(self, body: bytes) -> dict[str, str]:
        h = {"Content-Type": "application/x-ndjson"}
        if self._api_key:
            h["Authorization"] = f"ApiKey {self._api_key}"
        return h

    async def send(self, records: Sequence[Record]) -> SendResult:
        status, payload = await self._post(formats.elastic_bulk(records, index=self._index))
        result = self._classify(status, len(records))
        if result.rejected:
            return result
        try:
            items = msgspec.json.decode(payload).get("items", [])
        except (msgspec.DecodeError, AttributeError):
            return SendResult()
        rejected: dict[int, str] = {}
        retry: set[int] = set()
        for i, item in enumerate(items[: len(records)]):
            op: Any = next(iter(item.values()), {}) if isinstance(item, dict) else {}
            code = int(op.get("status", 0)) if isinstance(op, dict) else 0
            if 200 <= code < 300 or code == 409:  # 409: this id is already indexed
                continue
            if code == 429 or code >= 500:
                retry.add(i)
            else:
                err = op.get("error", {}) if isinstance(op, dict) else {}
                kind = err.get("type", "") if isinstance(err, dict) else ""
                rejected[i] = f"Elastic {code} {kind}".strip()
        return SendResult(rejected=rejected, retry=frozenset(retry))


class WebhookClient(_HttpClient):
    def __init__(self, sink: WebhookSink, token: str | None, signing_secret: str | None) -> None:
        super().__init__(sink, sink.url)
        self._static = dict(sink.headers)
        self._token = token
        self._signing = signing_secret.encode() if signing_secret else None

    def _headers(self, body: bytes) -> dict[str, str]:
        h = {**self._static, "Content-Type": "application/json"}
        if self._token:
            h["Authorization"] = f"Bearer {self._token}"
        if self._signing:
            h["X-Nexus-Signature"] = "sha256=" + hmac.new(self._signing, body, hashlib.sha256).hexdigest()
        return h

    async def send(self, records: Sequence[Record]) -> SendResult:
        status, _ = await self._post(formats.webhook_body(records))
        return self._classify(status, len(records))


# --- factory ------------------------------------------------------------------


def _env(env: Mapping[str, str], var: str | None, sink: str, field: str, required: bool) -> str | None:
    if not var:
        return None
    value = env.get(var)
    if not value and required:
        raise ConfigError(f"siem sink {sink!r}: {field}: environment variable {var} is not set")
    return value or None


def client_for(sink: Sink, env: Mapping[str, str]) -> SinkClient:
    """Build the client for one sink, reading its credentials from ``env``."""
    if isinstance(sink, SyslogSink):
        return SyslogClient(sink)
    if isinstance(sink, SplunkHecSink):
        token = _env(env, sink.token_env, sink.name, "token_env", True)
        assert token is not None
        return HecClient(sink, token)
    if isinstance(sink, ElasticSink):
        return ElasticClient(sink, _env(env, sink.api_key_env, sink.name, "api_key_env", True))
    return WebhookClient(
        sink,
        _env(env, sink.token_env, sink.name, "token_env", True),
        _env(env, sink.signing_secret_env, sink.name, "signing_secret_env", True),
    )
