"""Sink clients: deliver a batch of messages and say what happened.

``prepare`` turns a record into the wire messages it becomes, each within
the sink's maximum message size (``processors.siem.split``).  ``send``
delivers a batch of them and either raises ``SinkUnavailable`` (the sink is
down, overloaded or misconfigured: retry the whole batch later, never
dead-letter) or returns a ``SendResult`` naming messages the sink *rejected*
(retried a few times, then dead-lettered) and messages to simply send again.

Delivered means acknowledged by the receiver, per transport:

* HTTP (HEC, Elastic, webhook): the response, per request;
* syslog over TCP and TLS: the protocol has no acknowledgement, and the
  kernel takes the bytes whether or not the receiver lives to read them.
  ``send`` returns a ticket; ``confirmed`` says which tickets the
  receiver's TCP acknowledged at least ``confirm_after_s`` ago on a
  connection still open (a receiver that restarts closes it: every
  unconfirmed batch is then sent again);
* syslog over UDP: best effort.  Delivered when handed to the socket; a
  refusal the socket reports (ICMP port unreachable: nobody listens) is
  counted (``nexus_siem_udp_refused_total``), the datagram is not resent.
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
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import msgspec
from aiohttp.abc import ResolveResult
from aiohttp.resolver import ThreadedResolver

from processors.siem import formats
from processors.siem.split import fit
from streams.config_base import ConfigError
from streams.config_siem import ElasticSink, Sink, SplunkHecSink, SyslogSink, WebhookSink

Record = dict[str, Any]
log = logging.getLogger("nexus.siem")


class SinkUnavailable(Exception):
    """The sink cannot take records right now; the reason is ours (no body)."""


class SendResult(msgspec.Struct, frozen=True):
    rejected: dict[int, str] = {}  # index in the batch -> reason
    retry: frozenset[int] = frozenset()  # not delivered, not the message's fault
    # 0: delivered now.  Otherwise delivered once ``confirmed()`` reaches it.
    ticket: int = 0


class SinkClient(Protocol):
    def prepare(self, record: Record) -> list[bytes]:
        """The wire messages ``record`` becomes, each within the sink's limit."""

    async def send(self, messages: Sequence[bytes]) -> SendResult: ...

    async def confirmed(self) -> int:
        """The highest ticket delivered for sure; raises ``SinkUnavailable``
        when the connection carrying unconfirmed tickets died (send them
        again)."""

    async def close(self) -> None: ...


# The kinds' default maximum message sizes (SyslogSink.max_message_bytes).
DEFAULT_MAX = {"tcp": 8192, "tls": 8192, "udp": 2048, "splunk_hec": 10_000, "http": 1024 * 1024}
_ALL_CONFIRMED = 2**62


def _unacked_bytes(sock: socket.socket | None) -> int:
    """Bytes in the socket's send queue the peer has not acknowledged yet
    (SIOCOUTQ); -1 when unknown."""
    if sock is None:
        return -1
    import array
    import fcntl
    import termios

    buf = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, buf, True)
    except OSError:
        return -1
    return buf[0]


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
    """RFC 5424 over TCP / TLS (octet-counted) or UDP (one per datagram)."""

    def __init__(self, sink: SyslogSink, udp_refused: Any = None) -> None:
        self._sink = sink
        self._hostname = sink.hostname or socket.gethostname()
        self._procid = str(os.getpid())
        self._limit = sink.max_message_bytes or DEFAULT_MAX[sink.transport]
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._watch: asyncio.Task[None] | None = None
        self._peer_closed = False
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_refused = udp_refused  # a Prometheus counter child, or None
        self._ssl = _client_ssl(sink) if sink.transport == "tls" else None
        # Confirmation (TCP, TLS): tickets issued, bytes written on this
        # connection, the tickets not yet confirmed (ticket, bytes written
        # through it, when), and samples (time, bytes written) of the
        # moments the receiver's TCP had acknowledged everything written.
        self._ticket = 0
        self._confirmed = 0
        self._written = 0
        self._unconfirmed: deque[tuple[int, int, float]] = deque()
        self._all_acked: deque[tuple[float, int]] = deque()

    def _render(self, record: Record) -> bytes:
        msg = formats.cef(record) if self._sink.format == "cef" else formats.json_msg(record)
        return formats.syslog_message(
            record,
            facility=self._sink.facility,
            hostname=self._hostname,
            app_name=self._sink.app_name,
            msg=msg,
            procid=self._procid,
        )

    def prepare(self, record: Record) -> list[bytes]:
        return fit(record, self._render, self._limit)

    async def send(self, messages: Sequence[bytes]) -> SendResult:
        if self._sink.transport == "udp":
            return await self._send_udp(messages)
        await self._ensure_stream()
        assert self._writer is not None
        self._sample()  # before this write: did the receiver's TCP take everything so far?
        data = b"".join(formats.octet_counted(m) for m in messages)
        try:
            self._writer.write(data)
            async with asyncio.timeout(self._sink.timeout_s):
                await self._writer.drain()
        except (OSError, TimeoutError, ConnectionError) as exc:
            await self._drop()
            raise SinkUnavailable(f"write failed: {type(exc).__name__}") from None
        if self._peer_closed:
            await self._drop()
            raise SinkUnavailable("peer closed the connection during the write")
        self._written += len(data)
        self._ticket += 1
        self._unconfirmed.append((self._ticket, self._written, asyncio.get_running_loop().time()))
        return SendResult(ticket=self._ticket)

    async def confirmed(self) -> int:
        if not self._unconfirmed:
            return self._ticket
        if self._peer_closed or self._writer is None or self._writer.is_closing():
            lost = len(self._unconfirmed)
            await self._drop()
            raise SinkUnavailable(f"the connection closed with {lost} batch(es) unconfirmed")
        now = self._sample()
        hold = self._sink.confirm_after_s
        covered = self._all_acked[-1][1] if self._all_acked else 0
        waiting = next((t for _, end, t in self._unconfirmed if end > covered), None)
        if waiting is not None and now - waiting >= hold / 2:
            # Writing without pause (a busy sink, delayed TCP acks) leaves no
            # moment when everything is acknowledged: make one, waiting for
            # the send queue to drain (at most 100 ms) before writing more.
            for _ in range(50):
                await asyncio.sleep(0.002)
                if self._writer is None or self._peer_closed:
                    break
                now = self._sample()
                if self._all_acked and self._all_acked[-1][1] == self._written:
                    break
        # The newest moment everything written had been acknowledged at
        # least confirm_after_s ago: what was
        # written by then is confirmed if the connection is still open now.
        through = -1
        while self._all_acked and self._all_acked[0][0] <= now - hold:
            through = self._all_acked.popleft()[1]
        if through >= 0:
            self._all_acked.appendleft((now - hold, through))  # still true later on
            while self._unconfirmed and self._unconfirmed[0][1] <= through:
                self._confirmed = self._unconfirmed.popleft()[0]
        return self._confirmed

    def _sample(self) -> float:
        """If everything written so far has left this process and was
        acknowledged by the receiver's TCP, note the moment; returns now."""
        now = asyncio.get_running_loop().time()
        writer = self._writer
        if (
            writer is not None
            and self._written
            and (not self._all_acked or self._all_acked[-1][1] != self._written)
        ):
            transport = writer.transport
            if (
                transport.get_write_buffer_size() == 0
                and _unacked_bytes(transport.get_extra_info("socket")) == 0
            ):
                self._all_acked.append((now, self._written))
        return now

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
        self._written = 0
        self._all_acked.clear()
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
            refused = self._udp_refused
            try:
                self._udp, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpProtocol(refused), remote_addr=(address, self._sink.port)
                )
            except OSError as exc:
                raise SinkUnavailable(f"udp: {type(exc).__name__}") from None
        for m in messages:
            try:
                self._udp.sendto(m)
            except OSError as exc:
                raise SinkUnavailable(f"udp: {type(exc).__name__}") from None
        return SendResult()

    async def _drop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), 1.0)
            self._writer = None
        self._unconfirmed.clear()

    async def close(self) -> None:
        await self._drop()
        if self._udp is not None:
            self._udp.close()


class _UdpProtocol(asyncio.DatagramProtocol):
    """UDP is best effort: what the socket reports refused (an ICMP port
    unreachable for an earlier datagram: nobody listens) is counted."""

    def __init__(self, refused: Any) -> None:
        self._refused = refused

    def error_received(self, exc: Exception) -> None:
        if self._refused is not None:
            self._refused.inc()
        log.debug("siem udp: %s", type(exc).__name__)


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
    def __init__(self, sink: SplunkHecSink | ElasticSink | WebhookSink, url: str, limit: int) -> None:
        self._sink = sink
        self._url = url
        self._limit = sink.max_message_bytes or limit
        self._session: aiohttp.ClientSession | None = None

    def _headers(self, body: bytes) -> dict[str, str]:
        raise NotImplementedError

    def _render(self, record: Record) -> bytes:
        raise NotImplementedError

    def prepare(self, record: Record) -> list[bytes]:
        return fit(record, self._render, self._limit)

    async def confirmed(self) -> int:
        return _ALL_CONFIRMED  # a 2xx is the receiver's acknowledgement

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
        super().__init__(sink, urlunsplit(parts), DEFAULT_MAX["splunk_hec"])
        self._hec = sink
        self._auth = f"Splunk {token}"

    def _headers(self, body: bytes) -> dict[str, str]:
        return {"Authorization": self._auth, "Content-Type": "application/json"}

    def _render(self, record: Record) -> bytes:
        s = self._hec
        return formats.hec_event(record, source=s.source, sourcetype=s.sourcetype, index=s.index)

    async def send(self, messages: Sequence[bytes]) -> SendResult:
        status, payload = await self._post(b"".join(messages))
        if status == 400:
            # HEC indexes the events before the invalid one and names it.
            with contextlib.suppress(msgspec.DecodeError, TypeError, ValueError):
                bad = int(msgspec.json.decode(payload).get("invalid-event-number"))
                if 0 <= bad < len(messages):
                    return SendResult(
                        rejected={bad: "HEC: invalid event"}, retry=frozenset(range(bad + 1, len(messages)))
                    )
        return self._classify(status, len(messages))


class ElasticClient(_HttpClient):
    def __init__(self, sink: ElasticSink, api_key: str | None) -> None:
        parts = urlsplit(sink.url)
        parts = parts._replace(path=parts.path.rstrip("/") + "/_bulk")
        super().__init__(sink, urlunsplit(parts), DEFAULT_MAX["http"])
        self._index = sink.index
        self._api_key = api_key

    def _headers(self, body: bytes) -> dict[str, str]:
        h = {"Content-Type": "application/x-ndjson"}
        if self._api_key:
            h["Authorization"] = f"ApiKey {self._api_key}"
        return h

    def _render(self, record: Record) -> bytes:
        return formats.elastic_action(record, index=self._index)

    async def send(self, messages: Sequence[bytes]) -> SendResult:
        status, payload = await self._post(b"".join(messages))
        result = self._classify(status, len(messages))
        if result.rejected:
            return result
        try:
            items = msgspec.json.decode(payload).get("items", [])
        except (msgspec.DecodeError, AttributeError):
            return SendResult()
        rejected: dict[int, str] = {}
        retry: set[int] = set()
        for i, item in enumerate(items[: len(messages)]):
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
        super().__init__(sink, sink.url, DEFAULT_MAX["http"])
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

    def _render(self, record: Record) -> bytes:
        return formats.webhook_event(record)

    async def send(self, messages: Sequence[bytes]) -> SendResult:
        status, _ = await self._post(formats.webhook_body(messages))
        return self._classify(status, len(messages))


# --- factory ------------------------------------------------------------------


def _env(env: Mapping[str, str], var: str | None, sink: str, field: str, required: bool) -> str | None:
    if not var:
        return None
    value = env.get(var)
    if not value and required:
        raise ConfigError(f"siem sink {sink!r}: {field}: environment variable {var} is not set")
    return value or None


def client_for(sink: Sink, env: Mapping[str, str], *, udp_refused: Any = None) -> SinkClient:
    """Build the client for one sink, reading its credentials from ``env``."""
    if isinstance(sink, SyslogSink):
        return SyslogClient(sink, udp_refused)
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
