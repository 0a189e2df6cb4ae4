"""Real receivers for the SIEM tests: a syslog server (TCP, TLS or UDP) that
parses RFC 5424 frames strictly, and a Splunk-HEC-shaped aiohttp server.
Both can be stopped (closing every connection, as a dying process would)
and restarted on the same port, and both count raw arrivals per event id so
a test sees duplicates as well as gaps."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hmac
import ipaddress
import json
import re
import ssl
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# --- RFC 5424 ----------------------------------------------------------------

_HEADER = re.compile(
    rb"^<(?P<pri>\d{1,3})>(?P<ver>[1-9]\d{0,2}) (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+)"
    rb" (?P<proc>\S+) (?P<msgid>\S+) "
)


class FrameError(ValueError):
    pass


@dataclass
class SyslogMessage:
    pri: int
    version: int
    timestamp: str
    hostname: str
    app_name: str
    procid: str
    msgid: str
    sd: dict[str, dict[str, str]]
    msg: str

    @property
    def facility(self) -> int:
        return self.pri // 8

    @property
    def severity(self) -> int:
        return self.pri % 8


def _parse_sd(data: bytes, i: int) -> tuple[dict[str, dict[str, str]], int]:
    if data[i : i + 1] == b"-":
        return {}, i + 1
    elements: dict[str, dict[str, str]] = {}
    while data[i : i + 1] == b"[":
        j = i + 1
        while data[j : j + 1] not in (b" ", b"]"):
            j += 1
        sd_id = data[i + 1 : j].decode()
        params: dict[str, str] = {}
        i = j
        while data[i : i + 1] == b" ":
            eq = data.index(b"=", i)
            name = data[i + 1 : eq].decode()
            if data[eq + 1 : eq + 2] != b'"':
                raise FrameError("SD-PARAM value must be quoted")
            k = eq + 2
            value = bytearray()
            while True:
                c = data[k : k + 1]
                if not c:
                    raise FrameError("unterminated SD-PARAM")
                if c == b"\\" and data[k + 1 : k + 2] in (b'"', b"\\", b"]"):
                    value += data[k + 1 : k + 2]
                    k += 2
                    continue
                if c == b'"':
                    break
                value += c
                k += 1
            params[name] = value.decode()
            i = k + 1
        if data[i : i + 1] != b"]":
            raise FrameError("SD-ELEMENT not closed")
        elements[sd_id] = params
        i += 1
    if not elements:
        raise FrameError("STRUCTURED-DATA must be '-' or elements")
    return elements, i


def parse_5424(data: bytes) -> SyslogMessage:
    m = _HEADER.match(data)
    if not m:
        raise FrameError(f"not an RFC 5424 header: {data[:60]!r}")
    pri = int(m["pri"])
    if pri > 191:
        raise FrameError("PRI out of range")
    ts = m["ts"].decode()
    if ts != "-":
        dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))  # raises if not RFC 3339
    sd, i = _parse_sd(data, m.end())
    msg = b""
    if i < len(data):
        if data[i : i + 1] != b" ":
            raise FrameError("no SP before MSG")
        msg = data[i + 1 :]
    if msg.startswith(b"\xef\xbb\xbf"):
        msg = msg[3:]
    return SyslogMessage(
        pri, int(m["ver"]), ts, m["host"].decode(), m["app"].decode(), m["proc"].decode(),
        m["msgid"].decode(), sd, msg.decode(),
    )  # fmt: skip


def parse_cef(text: str) -> tuple[list[str], dict[str, str]]:
    """CEF:0 header fields (unescaped) and the extension as a dict."""
    fields: list[str] = []
    cur = ""
    i = 0
    while len(fields) < 7:
        c = text[i]
        if c == "\\" and text[i + 1] in "|\\":
            cur += text[i + 1]
            i += 2
            continue
        if c == "|":
            fields.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    ext_text = text[i:]
    ext: dict[str, str] = {}
    for km in re.finditer(r"(?:^|(?<= ))([A-Za-z0-9_]+)=((?:\\.|[^\\])*?)(?= [A-Za-z0-9_]+=|$)", ext_text):
        value = re.sub(r"\\(.)", lambda x: {"n": "\n", "r": "\r"}.get(x[1], x[1]), km[2])
        ext[km[1]] = value
    return fields, ext


# --- arrivals ------------------------------------------------------------------


@dataclass
class Arrivals:
    """Everything a receiver got, by event id."""

    count: Counter[str] = field(default_factory=Counter)
    records: dict[str, Any] = field(default_factory=dict)
    malformed: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, event_id: str, record: Any) -> None:
        self.count[event_id] += 1
        self.records.setdefault(event_id, record)
        self.changed.set()

    @property
    def ids(self) -> set[str]:
        return set(self.count)

    @property
    def duplicates(self) -> int:
        return sum(c - 1 for c in self.count.values() if c > 1)

    async def wait_for(self, ids: set[str], timeout: float) -> bool:
        async with asyncio.timeout(timeout):
            while not ids <= self.ids:
                self.changed.clear()
                await self.changed.wait()
        return True


# --- syslog server -----------------------------------------------------------------


class SyslogServer:
    def __init__(self, transport: str = "tcp", ssl_ctx: ssl.SSLContext | None = None) -> None:
        self.transport = transport
        self.ssl_ctx = ssl_ctx
        self.port = 0
        self.arrivals = Arrivals()
        self.messages: list[SyslogMessage] = []
        self._server: asyncio.Server | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    def _accept(self, raw: bytes) -> None:
        try:
            msg = parse_5424(raw)
        except (FrameError, ValueError, UnicodeDecodeError) as exc:
            self.arrivals.malformed.append(f"{exc}: {raw[:80]!r}")
            return
        self.messages.append(msg)
        event_id = msg.sd.get("nexus@32473", {}).get("id", "")
        if msg.msg.startswith("CEF:"):
            _, ext = parse_cef(msg.msg)
            event_id = ext.get("externalId", "")
            self.arrivals.add(event_id, {"cef": msg.msg, "ext": ext, "sd": msg.sd})
            return
        record = json.loads(msg.msg)
        if record.get("id") != event_id:
            self.arrivals.malformed.append(f"SD id {event_id!r} != MSG id {record.get('id')!r}")
        self.arrivals.add(event_id, record)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        try:
            while True:
                # RFC 6587 octet counting: MSG-LEN SP SYSLOG-MSG
                head = await reader.readuntil(b" ")
                length = int(head[:-1])
                if not 0 < length < 10_000_000:
                    self.arrivals.malformed.append(f"bad frame length {head!r}")
                    return
                self._accept(await reader.readexactly(length))
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, ValueError):
            pass
        except asyncio.CancelledError:
            # The server is stopping (the outage); a receiver that dies just
            # stops reading.
            pass
        finally:
            self._conns.discard(writer)
            writer.close()

    async def start(self) -> None:
        if self.transport == "udp":
            loop = asyncio.get_running_loop()
            server = self

            class _Proto(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: Any) -> None:
                    server._accept(data)

            self._udp, _ = await loop.create_datagram_endpoint(_Proto, local_addr=("127.0.0.1", self.port))
            self.port = self._udp.get_extra_info("sockname")[1]
            return
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port, ssl=self.ssl_ctx)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop like a crashed receiver: stop listening, drop every connection."""
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._server is not None:
            self._server.close()
            for w in list(self._conns):
                w.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None


# --- HEC-shaped HTTP receiver ----------------------------------------------------------


class HecServer:
    """``POST /services/collector/event`` with ``Authorization: Splunk <token>``;
    events back to back; ``reject_ids`` are answered like HEC answers an
    invalid event (400 naming its index; earlier events are indexed)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.port = 0
        self.arrivals = Arrivals()
        self.unauthorized = 0
        self.reject_ids: set[str] = set()
        self.requests = 0
        self._runner: web.AppRunner | None = None

    async def _collect(self, request: web.Request) -> web.Response:
        self.requests += 1
        auth = request.headers.get("Authorization", "")
        if not hmac.compare_digest(auth.encode(), f"Splunk {self.token}".encode()):
            self.unauthorized += 1
            return web.json_response({"text": "Invalid token", "code": 4}, status=403)
        text = (await request.read()).decode()
        decoder = json.JSONDecoder()
        events: list[dict[str, Any]] = []
        i = 0
        while i < len(text):
            if text[i].isspace():
                i += 1
                continue
            obj, i = decoder.raw_decode(text, i)
            events.append(obj)
        for n, ev in enumerate(events):
            if "event" not in ev:
                return web.json_response({"text": "Event field is required", "code": 12}, status=400)
            if ev["event"].get("id") in self.reject_ids:
                return web.json_response(
                    {"text": "Invalid data format", "code": 6, "invalid-event-number": n}, status=400
                )
            self.arrivals.add(ev["event"]["id"], ev)
        return web.json_response({"text": "Success", "code": 0})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/services/collector/event", self._collect)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if not self.port:
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


# --- a self-signed certificate ------------------------------------------------------


def self_signed(dir_: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nexus-test-syslog")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = dir_ / "cert.pem", dir_ / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def server_ssl(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx
