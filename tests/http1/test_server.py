"""The HTTP/1.1 connection layer over real sockets: keep-alive,
pipelining, chunked bodies, 100-continue, limits, disconnects, and the
client pool against it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from ingress.http1 import ClientPool, Headers, Limits, Origin, Request, Responder, serve_connection
from ingress.http1.message import Disconnect


class Server:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.seen: list[Request] = []
        self.disconnects = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def handler(self, req: Request, resp: Responder) -> None:
        self.seen.append(req)
        if req.path == "/slow":
            try:
                await asyncio.wait_for(req.disconnected.wait(), 5)
                self.disconnects += 1
            except TimeoutError:
                await resp.send(200, body=b"late")
            return
        if req.path == "/stream":
            body = await resp.start(200, Headers([("Content-Type", "text/plain")]))
            for i in range(3):
                await body.write(f"part{i};".encode())
            await body.end()
            return
        await resp.send(200, Headers([("X-Path", req.path)]), req.method.encode() + b":" + req.body)

    async def start(self) -> None:
        async def accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await serve_connection(r, w, self.handler, self.limits)

        self.server = await asyncio.start_server(accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    s = Server(Limits(header_timeout_s=0.5, max_body_bytes=1000, max_header_bytes=2048))
    await s.start()
    yield s
    assert s.server is not None
    s.server.close()


async def _raw(port: int, data: bytes, *, read_until_close: bool = True) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(data)
    await w.drain()
    out = await asyncio.wait_for(r.read(), 5) if read_until_close else b""
    w.close()
    return out


async def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    data = b"".join(
        f"GET /r{i} HTTP/1.1\r\nHost: x\r\n{'Connection: close' if i == 2 else 'X: y'}\r\n\r\n".encode()
        for i in range(3)
    )
    out = await _raw(server.port, data)
    assert out.count(b"HTTP/1.1 200 OK") == 3
    assert out.index(b"X-Path: /r0") < out.index(b"X-Path: /r1") < out.index(b"X-Path: /r2")


async def test_a_chunked_request_body_is_reassembled(server: Server) -> None:
    out = await _raw(
        server.port,
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    assert out.endswith(b"POST:hello world")


async def test_expect_100_continue_gets_an_interim_answer_before_the_body(server: Server) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", server.port)
    w.write(
        b"PUT /e HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
    )
    await w.drain()
    interim = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    w.write(b"data")
    out = await asyncio.wait_for(r.read(), 5)
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"PUT:data")
    w.close()


async def test_a_streamed_response_is_chunked(server: Server) -> None:
    out = await _raw(server.port, b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in out
    assert out.endswith(b"6\r\npart0;\r\n6\r\npart1;\r\n6\r\npart2;\r\n0\r\n\r\n")


async def test_an_http10_client_gets_a_body_ended_by_the_close(server: Server) -> None:
    out = await _raw(server.port, b"GET /stream HTTP/1.0\r\nHost: x\r\n\r\n")
    assert b"chunked" not in out and out.endswith(b"part0;part1;part2;")


async def test_a_slow_request_head_is_cut_with_408(server: Server) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", server.port)
    w.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished (slowloris)
    await w.drain()
    out = await asyncio.wait_for(r.read(), 5)
    assert out.startswith(b"HTTP/1.1 408 ")
    w.close()


async def test_a_silent_new_connection_is_closed_after_the_header_timeout(server: Server) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", server.port)
    started = asyncio.get_running_loop().time()
    assert await asyncio.wait_for(r.read(), 5) == b""  # the idle limit is 75 s; this is the 0.5 s one
    assert asyncio.get_running_loop().time() - started < 3
    w.close()


async def test_limits_answer_413_and_431(server: Server) -> None:
    big = await _raw(server.port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
    assert big.startswith(b"HTTP/1.1 413 ")
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4000 + b"\r\n\r\n"
    assert (await _raw(server.port, head)).startswith(b"HTTP/1.1 431 ")
    assert (await _raw(server.port, b"NOT HTTP AT ALL\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
    assert server.seen == []


async def test_the_handler_sees_the_client_go_away(server: Server) -> None:
    _r, w = await asyncio.open_connection("127.0.0.1", server.port)
    w.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    await w.drain()
    await asyncio.sleep(0.1)
    w.close()
    for _ in range(100):
        if server.disconnects:
            break
        await asyncio.sleep(0.02)
    assert server.disconnects == 1


async def test_the_client_pool_reuses_a_kept_alive_connection(server: Server) -> None:
    async def connect(origin: Origin) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(origin.host, origin.port)

    pool = ClientPool(connect)
    origin = Origin("127.0.0.1", server.port, tls=False)
    try:
        for i in range(3):
            resp = await pool.request(origin, "POST", f"/p{i}", Headers(), f"body{i}".encode())
            assert (resp.status, await resp.read()) == (200, f"POST:body{i}".encode())
        streamed = await pool.request(origin, "GET", "/stream", Headers())
        assert [c async for c in streamed.chunks()] == [b"part0;", b"part1;", b"part2;"]
        assert pool.opened == 1 and pool.idle_count(origin) == 1
    finally:
        await pool.close()


async def test_disconnect_callbacks_and_wait() -> None:
    """A handler's way to hear that its client left: callbacks (the proxy
    cancels its own task with one) and an Event's wait()."""
    gone = Disconnect()
    heard: list[str] = []
    gone.add_callback(lambda: heard.append("first"))
    removed = lambda: heard.append("removed")  # noqa: E731
    gone.add_callback(removed)
    gone.remove_callback(removed)
    waiter = asyncio.ensure_future(gone.wait())
    await asyncio.sleep(0)
    assert not gone.is_set() and not waiter.done()
    gone.set()
    gone.set()  # once only
    await asyncio.wait_for(waiter, 1)
    assert gone.is_set() and heard == ["first"]
    gone.add_callback(lambda: heard.append("late"))  # already gone: at once
    await gone.wait()
    assert heard == ["first", "late"]
