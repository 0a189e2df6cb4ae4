"""The lean client of provider calls (ingress/upstream/lean.py) against real
local servers: TLS with a test CA, gzip, a body cut off, a slow provider, a
stream relayed as it is written, a caller that leaves mid-body, connections
reused after errors and after the server dropped an idle one, the pool's
limit, the SSRF guard on host names, and header injection refused."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from ingress.upstream.lean import LeanClient
from ingress.upstream.transport import TransportError, TransportTimeout
from tests.proxy.pki import Pki

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A raw HTTP/1.1 server: each connection runs ``handler``, which reads
    requests and writes whatever bytes the test wants."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.closed = asyncio.Event()  # a connection ended on the client's side
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, ssl_ctx: ssl.SSLContext | None = None) -> Server:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ssl_ctx)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await reader.readexactly(length) if length else b""
    return head, body


def response(body: bytes, status: str = "200 OK", extra: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


@pytest.fixture
async def client_factory() -> AsyncIterator[Callable[..., LeanClient]]:
    made: list[LeanClient] = []

    def make(**kw: object) -> LeanClient:
        args: dict[str, object] = {
            "max_connections": 8,
            "connect_timeout_s": 2.0,
            "read_timeout_s": 5.0,
            "allow_private": True,
        }
        args.update(kw)
        c = LeanClient(**args)  # type: ignore[arg-type]
        made.append(c)
        return c

    yield make
    for c in made:
        await c.close()


async def _keep_answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        head, body = await read_request(reader)
        if b" /fail " in head:
            writer.write(response(b'{"error":"no"}', "500 Internal Server Error"))
        else:
            writer.write(response(b"echo:" + body))
        await writer.drain()


async def test_keep_alive_and_reuse_after_an_error_status(client_factory: Callable[..., LeanClient]) -> None:
    server = await Server(_keep_answering).start()
    c = client_factory()
    url = f"http://127.0.0.1:{server.port}"
    try:
        for path, status in (("/ok", 200), ("/fail", 500), ("/ok", 200)):
            r = await c.request("POST", url + path, {"content-type": "application/json"}, b"{}")
            body = await r.read()
            r.release()
            assert r.status == status
            assert body == (b"echo:{}" if status == 200 else b'{"error":"no"}')
    finally:
        await server.stop()
    assert server.connections == 1 and c.opened == 1


async def test_tls_verified_against_the_configured_ca(
    tmp_path: Path, client_factory: Callable[..., LeanClient]
) -> None:
    pki = Pki(tmp_path / "pki")
    server = await Server(_keep_answering).start(pki.server_context(["127.0.0.1"]))
    url = f"https://127.0.0.1:{server.port}/v1"
    try:
        trusted = ssl.create_default_context(cafile=str(pki.ca_path))
        c = client_factory(verify=trusted)
        r = await c.request("POST", url, {}, b"x")
        assert (r.status, await r.read()) == (200, b"echo:x")
        r.release()
        # The same server, verified against the system store only: refused.
        with pytest.raises(TransportError, match="failed verification"):
            await client_factory(verify=ssl.create_default_context()).request("POST", url, {}, b"x")
        # Trusted CA, but the certificate names another host.
        other = await Server(_keep_answering).start(pki.server_context(["api.example.com"]))
        try:
            with pytest.raises(TransportError, match="failed verification"):
                await c.request("POST", f"https://127.0.0.1:{other.port}/v1", {}, b"x")
        finally:
            await other.stop()
    finally:
        await server.stop()


async def test_ssl_cert_file_is_honoured_by_the_default_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client_factory: Callable[..., LeanClient]
) -> None:
    pki = Pki(tmp_path / "pki")
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_path))
    server = await Server(_keep_answering).start(pki.server_context(["127.0.0.1"]))
    try:
        r = await client_factory().request("POST", f"https://127.0.0.1:{server.port}/v1", {}, b"y")
        assert (r.status, await r.read()) == (200, b"echo:y")
        r.release()
    finally:
        await server.stop()


async def test_gzip_and_deflate_bodies_are_decompressed(client_factory: Callable[..., LeanClient]) -> None:
    payload = b'{"choices":[{"text":"' + b"abc" * 2000 + b'"}]}'
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, _ = await read_request(reader)
            seen.append(head)
            if b"/gzip" in head:
                writer.write(response(gzip.compress(payload), extra="Content-Encoding: gzip\r\n"))
            elif b"/deflate" in head:
                writer.write(response(zlib.compress(payload), extra="Content-Encoding: deflate\r\n"))
            else:
                # gzip in chunks, chunked framing: decompressed as it streams
                z = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
                data = z.compress(payload) + z.flush()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n"
                )
                for i in range(0, len(data), 100):
                    part = data[i : i + 100]
                    writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                writer.write(b"0\r\n\r\n")
            await writer.drain()

    server = await Server(handler).start()
    c = client_factory()
    try:
        for path in ("/gzip", "/deflate", "/chunked"):
            r = await c.request("GET", f"http://127.0.0.1:{server.port}{path}", {}, None)
            got = b"".join([part async for part in r.chunks()])
            r.release()
            assert got == payload, path
    finally:
        await server.stop()
    # As aiohttp did: compressed answers are asked for.
    assert all(b"\r\nAccept-Encoding: gzip, deflate\r\n" in h for h in seen)
    assert c.opened == 1


async def test_a_body_cut_off_fails_and_the_connection_is_not_reused(
    client_factory: Callable[..., LeanClient],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _ = await read_request(reader)
        if b"/cut" in head:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
            await writer.drain()
            return  # closes with 90 bytes owed
        writer.write(response(b"fine"))
        await writer.drain()
        await reader.read()

    server = await Server(handler).start()
    c = client_factory()
    try:
        r = await c.request("POST", f"http://127.0.0.1:{server.port}/cut", {}, b"{}")
        assert r.status == 200
        with pytest.raises(TransportError, match="middle of the body"):
            await r.read()
        r.release()
        assert c.idle_count() == 0 and c.in_use == 0
        r = await c.request("POST", f"http://127.0.0.1:{server.port}/ok", {}, b"{}")
        assert await r.read() == b"fine"
        r.release()
    finally:
        await server.stop()
    assert c.opened == 2


async def test_a_silent_provider_times_out_on_read(client_factory: Callable[..., LeanClient]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _ = await read_request(reader)
        if b"/late-body" in head:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234")
            await writer.drain()
        await asyncio.sleep(5)

    server = await Server(handler).start()
    c = client_factory(read_timeout_s=0.3)
    loop = asyncio.get_running_loop()
    try:
        t0 = loop.time()
        with pytest.raises(TransportTimeout):
            await c.request("POST", f"http://127.0.0.1:{server.port}/silent", {}, b"{}")
        assert 0.25 <= loop.time() - t0 < 2
        r = await c.request("POST", f"http://127.0.0.1:{server.port}/late-body", {}, b"{}")
        with pytest.raises(TimeoutError):  # what the call stage catches as a 504
            await r.read()
        r.release()
    finally:
        await server.stop()
    assert c.in_use == 0 and c.idle_count() == 0


async def test_a_slow_but_steady_stream_is_not_timed_out(client_factory: Callable[..., LeanClient]) -> None:
    """The read timeout is between bytes, not for the whole body."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(6):
            writer.write(b"2\r\nok\r\n")
            await writer.drain()
            await asyncio.sleep(0.1)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await reader.read()

    server = await Server(handler).start()
    c = client_factory(read_timeout_s=0.25)
    try:
        r = await c.request("POST", f"http://127.0.0.1:{server.port}/", {}, b"{}")
        assert await r.read() == b"ok" * 6
        r.release()
    finally:
        await server.stop()


async def test_a_stream_is_relayed_as_written(client_factory: Callable[..., LeanClient]) -> None:
    go_on = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        first = b"data: one\n\n"
        writer.write(f"{len(first):x}\r\n".encode() + first + b"\r\n")
        await writer.drain()
        await go_on.wait()  # the rest only once the client has the first event
        last = b"data: [DONE]\n\n"
        writer.write(f"{len(last):x}\r\n".encode() + last + b"\r\n0\r\n\r\n")
        await writer.drain()
        await reader.read()

    server = await Server(handler).start()
    c = client_factory()
    try:
        r = await c.request("POST", f"http://127.0.0.1:{server.port}/", {}, b"{}")
        parts = r.chunks()
        assert await asyncio.wait_for(parts.__anext__(), 2) == b"data: one\n\n"
        go_on.set()
        assert b"".join([p async for p in parts]) == b"data: [DONE]\n\n"
        r.release()
    finally:
        await server.stop()
    assert c.idle_count() == 1  # read to its end: kept


async def test_a_caller_leaving_mid_body_closes_the_connection(
    client_factory: Callable[..., LeanClient],
) -> None:
    server_saw_close = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        if await reader.read() == b"":
            server_saw_close.set()

    server = await Server(handler).start()
    c = client_factory()

    async def consume() -> None:
        r = await c.request("POST", f"http://127.0.0.1:{server.port}/", {}, b"{}")
        try:
            async for _ in r.chunks():
                pass
        finally:
            r.release()

    try:
        task = asyncio.create_task(consume())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(server_saw_close.wait(), 2)
    finally:
        await server.stop()
    assert c.idle_count() == 0 and c.in_use == 0


async def test_an_idle_connection_the_server_dropped_is_replaced(
    client_factory: Callable[..., LeanClient],
) -> None:
    """A keep-alive connection the provider closed while it sat idle (its
    idle timeout shorter than ours): the next call still succeeds."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(response(b"once"))
        await writer.drain()
        # Closes after one answer, without saying so (no Connection: close).

    server = await Server(handler).start()
    c = client_factory()
    try:
        for _ in range(3):
            r = await c.request("POST", f"http://127.0.0.1:{server.port}/", {}, b"{}")
            assert await r.read() == b"once"
            r.release()
            await asyncio.sleep(0.05)
    finally:
        await server.stop()
    assert server.connections == 3


async def test_a_stale_connection_is_retried_once_on_a_new_one(
    client_factory: Callable[..., LeanClient],
) -> None:
    """The server drops the kept connection when the request arrives (the
    race of an idle timeout): nothing was answered, so it goes again."""
    answered = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answered
        await read_request(reader)
        answered += 1
        writer.write(response(b"first"))
        await writer.drain()
        await read_request(reader)  # the second request on this connection: dropped unanswered

    server = await Server(handler).start()
    c = client_factory()
    try:
        for _ in range(2):
            r = await c.request("POST", f"http://127.0.0.1:{server.port}/", {}, b"{}")
            assert await r.read() == b"first"
            r.release()
    finally:
        await server.stop()
    assert answered == 2 and c.opened == 2


async def test_the_pool_limit_holds_and_waiting_is_bounded(
    client_factory: Callable[..., LeanClient],
) -> None:
    active = 0
    most = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal active, most
        while True:
            await read_request(reader)
            active += 1
            most = max(most, active)
            await asyncio.sleep(0.1)
            active -= 1
            writer.write(response(b"ok"))
            await writer.drain()

    server = await Server(handler).start()
    c = client_factory(max_connections=2)

    async def call() -> bytes:
        r = await c.request("POST", f"http://127.0.0.1:{server.port}/", {}, b"{}")
        try:
            return await r.read()
        finally:
            r.release()

    try:
        assert await asyncio.gather(*(call() for _ in range(6))) == [b"ok"] * 6
        assert most == 2 and c.opened == 2
        # Waiting for a free connection counts against the connect timeout.
        short = client_factory(max_connections=1, connect_timeout_s=0.15)
        r = await short.request("POST", f"http://127.0.0.1:{server.port}/", {}, b"{}")
        with pytest.raises(TransportTimeout, match="pool"):
            await short.request("POST", f"http://127.0.0.1:{server.port}/", {}, b"{}")
        r.release()
        assert short.in_use == 0
    finally:
        await server.stop()


async def test_a_host_name_with_a_private_address_is_refused(
    client_factory: Callable[..., LeanClient],
) -> None:
    server = await Server(_keep_answering).start()
    try:
        with pytest.raises(TransportError, match="non-public"):
            await client_factory(allow_private=False).request(
                "POST", f"http://localhost:{server.port}/", {}, b"{}"
            )
        r = await client_factory(allow_private=True).request(
            "POST", f"http://localhost:{server.port}/", {}, b"{}"
        )
        assert await r.read() == b"echo:{}"
        r.release()
    finally:
        await server.stop()
    assert server.connections == 1


async def test_nothing_listening_is_a_transport_error(client_factory: Callable[..., LeanClient]) -> None:
    server = await Server(_keep_answering).start()
    port = server.port
    await server.stop()
    await asyncio.sleep(0.05)
    with pytest.raises(TransportError, match="cannot connect"):
        await client_factory().request("POST", f"http://127.0.0.1:{port}/", {}, b"{}")


async def test_a_header_carrying_a_line_break_is_refused(client_factory: Callable[..., LeanClient]) -> None:
    server = await Server(_keep_answering).start()
    c = client_factory()
    try:
        for headers in ({"x-a": "1\r\nx-injected: 1"}, {"x-a\nb": "1"}):
            with pytest.raises(TransportError, match="line break"):
                await c.request("POST", f"http://127.0.0.1:{server.port}/", headers, b"{}")
    finally:
        await server.stop()
    assert server.connections == 0


async def test_the_request_on_the_wire(client_factory: Callable[..., LeanClient]) -> None:
    """What a provider receives: the path as the codec encoded it (a SigV4
    signature covers it), Host with a non-default port, the caller's
    headers, the framing the client owns."""
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, body = await read_request(reader)
        heads.append(head + body)
        writer.write(response(b"ok"))
        await writer.drain()

    server = await Server(handler).start()
    c = client_factory()
    try:
        r = await c.request(
            "POST",
            f"http://127.0.0.1:{server.port}/model/us.anthropic.claude%3A0/invoke?x=1",
            {"content-type": "application/json", "x-api-key": "k", "content-length": "999", "host": "evil"},
            b'{"a":1}',
        )
        await r.read()
        r.release()
    finally:
        await server.stop()
    (wire,) = heads
    assert wire.startswith(b"POST /model/us.anthropic.claude%3A0/invoke?x=1 HTTP/1.1\r\n")
    assert f"\r\nHost: 127.0.0.1:{server.port}\r\n".encode() in wire
    assert b"\r\nx-api-key: k\r\n" in wire and b"\r\ncontent-type: application/json\r\n" in wire
    assert b"evil" not in wire and b"999" not in wire
    assert wire.endswith(b'\r\nContent-Length: 7\r\n\r\n{"a":1}')


def test_tls_gzip_and_a_cut_body_on_uvloop(tmp_path: Path) -> None:
    """The gateway runs on uvloop, whose transports are not asyncio's
    classes (its TLS transport is no ``asyncio.Transport``)."""
    import uvloop

    pki = Pki(tmp_path / "pki")
    payload = b"z" * 300_000  # past the high-water mark: reading pauses and resumes

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, _ = await read_request(reader)
            if b"/cut" in head:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01")
                await writer.drain()
                return
            writer.write(response(gzip.compress(payload), extra="Content-Encoding: gzip\r\n"))
            await writer.drain()

    async def main() -> None:
        server = await Server(handler).start(pki.server_context(["127.0.0.1"]))
        c = LeanClient(
            max_connections=2,
            connect_timeout_s=2,
            read_timeout_s=5,
            allow_private=True,
            verify=ssl.create_default_context(cafile=str(pki.ca_path)),
        )
        url = f"https://127.0.0.1:{server.port}"
        try:
            for _ in range(2):
                r = await c.request("POST", url + "/", {}, b"{}")
                got = bytearray()
                async for part in r.chunks():
                    got += part
                    await asyncio.sleep(0)
                r.release()
                assert bytes(got) == payload
            assert c.opened == 1
            r = await c.request("POST", url + "/cut", {}, b"{}")
            with pytest.raises(TransportError):
                await r.read()
            r.release()
            with pytest.raises(TransportError, match="failed verification"):
                other = LeanClient(
                    max_connections=1, connect_timeout_s=2, read_timeout_s=5, allow_private=True
                )
                try:
                    await other.request("POST", url + "/", {}, b"{}")
                finally:
                    await other.close()
        finally:
            await c.close()
            await server.stop()

    uvloop.run(main())


async def test_a_resolve_hook_decides_where_connections_go(
    tmp_path: Path, client_factory: Callable[..., LeanClient]
) -> None:
    """A caller's own override and guard (the compliance proxy's): the
    host name's connections go where the hook says, TLS still verified
    against the name; a host it refuses is never connected to."""
    pki = Pki(tmp_path / "pki")
    server = await Server(_keep_answering).start(pki.server_context(["provider.test"]))
    asked: list[tuple[str, int]] = []

    async def resolve(host: str, port: int) -> list[tuple[str, int]]:
        asked.append((host, port))
        if host == "provider.test":
            return [("127.0.0.1", server.port)]
        raise OSError(f"{host} is not one of ours; refused")

    c = client_factory(
        resolve=resolve, allow_private=False, verify=ssl.create_default_context(cafile=str(pki.ca_path))
    )
    try:
        r = await c.request("POST", "https://provider.test/v1", {}, b"over")
        assert (r.status, await r.read()) == (200, b"echo:over")
        r.release()
        with pytest.raises(TransportError, match="not one of ours"):
            await c.request("POST", "https://10.1.2.3/v1", {}, b"x")
    finally:
        await server.stop()
    assert asked == [("provider.test", 443), ("10.1.2.3", 443)]
    assert server.connections == 1


@pytest.mark.parametrize("tls", [True, False])
async def test_connections_through_a_parent_proxy(
    tls: bool, tmp_path: Path, client_factory: Callable[..., LeanClient]
) -> None:
    """``parent``: every connection is a CONNECT tunnel through it (the
    parent resolves), TLS to the target inside it, verified by name; a
    target the parent refuses is a TransportError."""
    await _through_parent(tls, tmp_path, client_factory)


def test_a_tls_tunnel_through_a_parent_proxy_on_uvloop(tmp_path: Path) -> None:
    import uvloop

    async def main() -> None:
        made: list[LeanClient] = []

        def make(**kw: object) -> LeanClient:
            c = LeanClient(max_connections=4, connect_timeout_s=2, read_timeout_s=5, **kw)  # type: ignore[arg-type]
            made.append(c)
            return c

        try:
            await _through_parent(True, tmp_path, make)
        finally:
            for c in made:
                await c.close()

    uvloop.run(main())


async def _through_parent(tls: bool, tmp_path: Path, client_factory: Callable[..., LeanClient]) -> None:
    pki = Pki(tmp_path / "pki")
    target = await Server(_keep_answering).start(pki.server_context(["provider.test"]) if tls else None)
    asked: list[bytes] = []

    async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        finally:
            w.close()

    async def parent_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        asked.append(head.split(b"\r\n", 1)[0])
        if b"refused.test" in head:
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return
        r2, w2 = await asyncio.open_connection("127.0.0.1", target.port)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(pipe(reader, w2), pipe(r2, writer))

    parent = await Server(parent_handler).start()
    c = client_factory(
        parent=("127.0.0.1", parent.port),
        allow_private=False,  # the parent resolves: nothing is resolved here
        verify=ssl.create_default_context(cafile=str(pki.ca_path)),
    )
    scheme = "https" if tls else "http"
    try:
        for n in range(2):
            r = await c.request("POST", f"{scheme}://provider.test:8443/v1", {}, b"%d" % n)
            assert (r.status, await r.read()) == (200, b"echo:%d" % n)
            r.release()
        with pytest.raises(TransportError, match="403"):
            await c.request("POST", f"{scheme}://refused.test/v1", {}, b"x")
    finally:
        await parent.stop()
        await target.stop()
    assert asked[0] == b"CONNECT provider.test:8443 HTTP/1.1"
    assert len(asked) == 2 and c.opened == 1  # the tunnel kept alive for the second call
