"""The lean server layer (``ingress.http1.protocol``) over real sockets, one
test per edge case a client can bring: chunked bodies and responses,
Expect: 100-continue, pipelining, slow and vanishing clients, oversized
heads, header and body limits, and connection reuse after errors."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator

import pytest

from ingress.http1.protocol import BodyError, Call, Limits, ServerConnection
from tests.rawhttp import RawConnection, request


class Server:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.cancelled = 0
        self.handled: list[str] = []
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.started = asyncio.Event()

    async def handler(self, call: Call) -> None:
        self.handled.append(call.path)
        if call.path == "/slow":
            self.started.set()
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            await call.send(200, {}, b"late")
            return
        if call.path == "/refuse":  # answers without reading the body
            await call.send(401, {"Content-Type": "text/plain"}, b"no")
            return
        if call.path == "/stream":
            await call.start(200, {"Content-Type": "text/plain"})
            for i in range(3):
                await call.write(f"part{i};".encode())
            await call.end()
            return
        if call.path == "/error":  # reads the body, then answers an error
            await call.read(100)
            await call.send(400, {"Content-Type": "text/plain"}, b"bad")
            return
        try:
            body = await call.read(1000)
        except BodyError as exc:
            await call.send(413 if exc.kind == "too_large" else 400, {}, exc.kind.encode())
            return
        await call.send(200, {"X-Path": call.path}, call.method.encode() + b":" + body)

    @staticmethod
    def refuse(status: int, head: bytes) -> tuple[str, bytes]:
        return "application/json", b'{"refused": %d}' % status

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: ServerConnection(self.handler, self.refuse, self.limits), "127.0.0.1", 0
        )
        self.port = self.server.sockets[0].getsockname()[1]

    async def conn(self) -> RawConnection:
        return await RawConnection.open("127.0.0.1", self.port)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    s = Server(Limits(header_timeout_s=0.5, idle_timeout_s=1.0, max_line_bytes=1024, max_headers=20))
    await s.start()
    yield s
    assert s.server is not None
    s.server.close()


async def test_a_chunked_request_body_is_reassembled(server: Server) -> None:
    c = await server.conn()
    await c.send(
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    r = await c.response()
    assert r.status == 200 and r.body == b"POST:hello world"
    await c.close()


async def test_a_chunked_body_over_the_limit_is_refused_while_reading(server: Server) -> None:
    c = await server.conn()
    await c.send(b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(3):
        await c.send(b"200\r\n" + b"x" * 512 + b"\r\n")
    r = await c.response()
    assert (r.status, r.body) == (413, b"too_large")
    assert r.closes and await c.closed_by_server()  # the rest of the body is never read
    await c.close()


async def test_a_content_length_over_the_limit_is_refused_before_the_body_comes(server: Server) -> None:
    c = await server.conn()
    await c.send(b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
    r = await c.response()  # no 100 Continue first: the client need not send the body
    assert (r.status, r.body) == (413, b"too_large") and r.closes
    await c.close()


async def test_a_chunked_response_is_framed(server: Server) -> None:
    c = await server.conn()
    await c.send(request("GET", "/stream"))
    r = await c.response()
    assert r.headers["transfer-encoding"] == "chunked" and r.body == b"part0;part1;part2;"
    await c.send(request("GET", "/stream"))  # and the connection is reusable after it
    assert (await c.response()).body == b"part0;part1;part2;"
    await c.close()


async def test_http_1_0_gets_a_body_delimited_by_the_close(server: Server) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", server.port)
    w.write(b"GET /stream HTTP/1.0\r\n\r\n")
    out = await asyncio.wait_for(r.read(), 5)
    w.close()
    assert b"chunked" not in out.lower() and out.endswith(b"\r\n\r\npart0;part1;part2;")


async def test_expect_100_continue_is_answered_when_the_body_is_read(server: Server) -> None:
    c = await server.conn()
    await c.send(b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    interim = await asyncio.wait_for(c.reader.readuntil(b"\r\n\r\n"), 5)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    await c.send(b"hello")
    r = await c.response()
    assert r.status == 200 and r.body == b"POST:hello"
    await c.close()


async def test_expect_100_continue_is_not_sent_to_a_request_refused_before_its_body(server: Server) -> None:
    c = await server.conn()
    await c.send(b"POST /refuse HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    r = await c.response()
    assert r.status == 401 and r.closes  # the unsent body would be read as the next request
    await c.close()


async def test_an_unknown_expectation_is_a_417(server: Server) -> None:
    c = await server.conn()
    await c.send(b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nExpect: magic\r\n\r\n")
    r = await c.response()
    assert r.status == 417 and r.json() == {"refused": 417} and r.closes
    await c.close()


async def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    c = await server.conn()
    await c.send(b"".join(request("POST", f"/r{i}", f"b{i}".encode()) for i in range(5)))
    bodies = [(await c.response()).body for _ in range(5)]
    assert bodies == [f"POST:b{i}".encode() for i in range(5)]
    await c.close()


async def test_pipelined_requests_behind_a_slow_one_wait_their_turn(server: Server) -> None:
    c = await server.conn()
    await c.send(request("GET", "/stream") + request("POST", "/after", b"x"))
    first, second = await c.response(), await c.response()
    assert first.body == b"part0;part1;part2;" and second.body == b"POST:x"
    await c.close()


async def test_a_slow_head_gets_a_408_and_is_closed(server: Server) -> None:
    c = await server.conn()
    await c.send(b"POST /c HTTP/1.1\r\nHost: x\r\n")
    for i in range(2):  # within the timeout, but never the end of the head
        await asyncio.sleep(0.15)
        await c.send(b"X-Dribble-%d: 1\r\n" % i)
    r = await c.response()
    assert r.status == 408 and r.json() == {"refused": 408} and r.closes
    assert await c.closed_by_server()
    await c.close()


async def test_a_silent_new_connection_is_closed_after_the_header_timeout(server: Server) -> None:
    c = await server.conn()
    r = await c.response(timeout=5)
    assert r.status == 408
    assert await c.closed_by_server()
    await c.close()


async def test_an_idle_kept_alive_connection_is_not_cut_by_the_header_timeout(server: Server) -> None:
    c = await server.conn()
    await c.send(request("POST", "/a", b"1"))
    assert (await c.response()).status == 200
    await asyncio.sleep(0.7)  # past the header timeout, within the idle timeout
    await c.send(request("POST", "/b", b"2"))
    assert (await c.response()).body == b"POST:2"
    assert await c.closed_by_server(timeout=3)  # then the idle timeout closes it
    await c.close()


async def test_a_vanishing_client_cancels_its_request(server: Server) -> None:
    c = await server.conn()
    await c.send(request("GET", "/slow"))
    await asyncio.wait_for(server.started.wait(), 5)
    c.writer.transport.abort()
    for _ in range(100):
        if server.cancelled:
            break
        await asyncio.sleep(0.02)
    assert server.cancelled == 1


async def test_a_header_line_over_the_limit_is_a_431(server: Server) -> None:
    c = await server.conn()
    await c.send(b"GET /c HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 2000 + b"\r\n\r\n")
    r = await c.response()
    assert r.status == 431 and r.closes
    await c.close()


async def test_a_head_line_that_never_ends_is_cut(server: Server) -> None:
    c = await server.conn()
    await c.send(b"GET /c HTTP/1.1\r\nX-Pad: ")
    try:
        for _ in range(100):
            await c.send(b"p" * 1024)
    except (ConnectionError, OSError):
        pass
    r = await c.response()
    assert r.status == 431
    await c.close()


async def test_too_many_headers_is_a_431(server: Server) -> None:
    c = await server.conn()
    await c.send(b"GET /c HTTP/1.1\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(30)) + b"\r\n")
    assert (await c.response()).status == 431
    await c.close()


async def test_malformed_http_is_a_400_after_the_responses_before_it(server: Server) -> None:
    c = await server.conn()
    await c.send(request("POST", "/ok", b"1") + b"GARBAGE\r\n\r\n")
    first, second = await c.response(), await c.response()
    assert first.status == 200 and second.status == 400 and second.closes
    assert await c.closed_by_server()
    await c.close()


async def test_broken_chunked_framing_in_the_same_bytes_as_the_head_is_a_400(server: Server) -> None:
    c = await server.conn()
    await c.send(
        b"POST /refuse HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nx\r\n0\r\n\r\n"
    )
    r = await c.response()
    assert r.status == 400 and r.json() == {"refused": 400}  # not the handler's 401
    assert server.handled == []
    await c.close()


async def test_the_connection_is_reused_after_an_error_response_whose_body_was_read(server: Server) -> None:
    c = await server.conn()
    await c.send(request("POST", "/error", b"x"))
    r = await c.response()
    assert r.status == 400 and not r.closes
    await c.send(request("POST", "/after", b"y"))
    assert (await c.response()).body == b"POST:y"
    await c.close()


async def test_a_gzip_body_is_decoded_and_a_false_one_refused(server: Server) -> None:
    c = await server.conn()
    await c.send(request("POST", "/z", gzip.compress(b"zipped"), {"Content-Encoding": "gzip"}))
    assert (await c.response()).body == b"POST:zipped"
    await c.send(request("POST", "/z", b"not gzip", {"Content-Encoding": "gzip"}))
    r = await c.response()
    assert (r.status, r.body) == (400, b"encoding") and r.closes
    await c.close()


async def test_a_gzip_bomb_stops_at_the_limit(server: Server) -> None:
    c = await server.conn()
    bomb = gzip.compress(b"0" * 10_000_000)
    await c.send(request("POST", "/z", bomb, {"Content-Encoding": "gzip"}))
    r = await c.response()
    assert (r.status, r.body) == (413, b"too_large")
    await c.close()


async def test_a_head_request_gets_no_body(server: Server) -> None:
    c = await server.conn()
    await c.send(request("HEAD", "/h"))
    r, w = c.reader, c.writer
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
    assert b"Content-Length: 5" in head  # what a GET would carry ("HEAD:")
    await c.send(request("POST", "/next", b"n"))  # no body bytes in between
    assert (await c.response()).body == b"POST:n"
    w.close()


async def test_a_header_value_with_a_line_break_is_never_written() -> None:
    sent: list[bytes] = []

    class Transport:
        def write(self, data: bytes) -> None:
            sent.append(data)

        def get_extra_info(self, name: str) -> object:
            return ("127.0.0.1", 1) if name == "peername" else None

    async def handler(call: Call) -> None:
        return None

    conn = ServerConnection(handler, Server.refuse)
    conn.transport = Transport()  # type: ignore[assignment]
    conn.data_received(request("GET", "/x"))
    call = conn.current
    assert call is not None
    with pytest.raises(ValueError, match="line break"):
        await call.send(200, {"X-Evil": "a\r\nSet-Cookie: b"}, b"")
    assert sent == []
    assert conn.task is not None
    conn.task.cancel()


async def test_many_connections_and_requests_interleave(server: Server) -> None:
    async def client(i: int) -> list[bytes]:
        c = await server.conn()
        out = []
        for j in range(10):
            await c.send(request("POST", f"/c{i}", f"{i}-{j}".encode()))
            out.append((await c.response()).body)
        await c.close()
        return out

    results = await asyncio.gather(*(client(i) for i in range(20)))
    assert all(r == [f"POST:{i}-{j}".encode() for j in range(10)] for i, r in enumerate(results))


async def test_an_absolute_form_target_is_served_by_its_path(server: Server) -> None:
    c = await server.conn()
    await c.send(request("POST", "http://gateway/abs?x=1", b"a"))
    r = await c.response()
    assert r.headers["x-path"] == "/abs" and r.body == b"POST:a"
    await c.close()
