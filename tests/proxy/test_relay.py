"""The byte relay of spliced tunnels (``ingress.proxy.relay``), on the
default event loop and on uvloop (what ``nexus proxy`` runs): bytes both
ways under flow control, half-close, bytes the stream had read before the
relay took it, the idle limit; and through the node, a spliced tunnel that
outlives its accepting task and costs a few kB while idle."""

from __future__ import annotations

import asyncio
import hashlib
import sys
import tracemalloc
from collections.abc import Awaitable, Callable

import pytest
import uvloop

from ingress.proxy.relay import Tunnel, open_tunnel, splice
from streams.events_proxy import ProxyConnection
from tests.proxy.conftest import Events, MakeProxy

LOOPS = {"asyncio": asyncio.run, "uvloop": uvloop.run}
BIG = 24 * 1024 * 1024


async def _through_relay(
    upstream: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    head: bytes,
    *,
    idle_s: float = 10.0,
    awaited: bool = False,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, asyncio.Future[Tunnel]]:
    """A client -> middle -> upstream chain: the middle reads one line (as
    the proxy reads a CONNECT head), then relays; the client has sent
    ``head`` in one write, so what follows the line waits in the middle's
    stream reader when the relay takes over."""
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[Tunnel] = loop.create_future()
    up_server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    up_port = up_server.sockets[0].getsockname()[1]

    async def middle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\n")
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", up_port)
        if awaited:
            counts = await splice(reader, writer, up_reader, up_writer, idle_s=idle_s)
            t = Tunnel(counts, idle_s, lambda _: None)
            ended.set_result(t)
        else:
            open_tunnel(reader, writer, up_reader, up_writer, idle_s=idle_s, on_done=ended.set_result)

    server = await asyncio.start_server(middle, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    writer.write(head)
    return reader, writer, ended


async def _big_download(awaited: bool) -> None:
    payload = hashlib.sha256(b"seed").digest() * (BIG // 32)
    got_request = asyncio.get_running_loop().create_future()

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Reads to the client's half-close, then answers and closes.
        got_request.set_result(await reader.read())
        writer.write(payload)
        await writer.drain()
        writer.close()

    reader, writer, ended = await _through_relay(upstream, b"CONNECT x\nhello, upstream", awaited=awaited)
    writer.write_eof()
    assert await asyncio.wait_for(got_request, 10) == b"hello, upstream"
    # A slow start: the relay's buffers fill and it must pause the upstream.
    await asyncio.sleep(0.3)
    received = bytearray()
    while chunk := await asyncio.wait_for(reader.read(1 << 20), 10):
        received += chunk
    assert len(received) == len(payload)
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    tunnel = await asyncio.wait_for(ended, 5)
    assert (tunnel.counts.up, tunnel.counts.down) == (len(b"hello, upstream"), len(payload))
    writer.close()


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("awaited", [False, True], ids=["open_tunnel", "splice"])
def test_bytes_both_ways_under_flow_control_with_half_close(loop: str, awaited: bool) -> None:
    LOOPS[loop](_big_download(awaited))


async def _idle() -> None:
    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    reader, writer, ended = await _through_relay(upstream, b"CONNECT x\n", idle_s=0.3)
    started = asyncio.get_running_loop().time()
    writer.write(b"a")  # activity moves the deadline
    await asyncio.sleep(0.2)
    writer.write(b"b")
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the relay
    assert asyncio.get_running_loop().time() - started >= 0.45
    tunnel = await ended
    assert tunnel.counts.up == 2
    writer.close()


@pytest.mark.parametrize("loop", LOOPS)
def test_the_idle_limit_counts_from_the_last_byte(loop: str) -> None:
    LOOPS[loop](_idle())


# The clients and the echo upstream of the tunnel test: another process,
# so that what the test measures is the proxy's memory alone.
_PEER = r"""
import socket, sys, threading
srv = socket.create_server(("127.0.0.1", 0))
def echo(c):
    while data := c.recv(65536):
        c.sendall(data)
    c.close()
def serve():
    while True:
        c, _ = srv.accept()
        threading.Thread(target=echo, args=(c,), daemon=True).start()
threading.Thread(target=serve, daemon=True).start()
print(srv.getsockname()[1], flush=True)
proxy = int(sys.stdin.readline())
held = []
for line in sys.stdin:
    if line.strip() == "ping":
        held[-1].sendall(b"ping")
        print(held[-1].recv(4).decode(), flush=True)
        continue
    for _ in range(int(line)):
        c = socket.create_connection(("127.0.0.1", proxy))
        c.sendall(b"CONNECT echo.example:443 HTTP/1.1\r\nHost: echo.example:443\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += c.recv(1)
        assert b" 200 " in head, head
        held.append(c)
    print("held", len(held), flush=True)
"""


async def test_a_spliced_tunnel_outlives_its_task_and_costs_little(make_proxy: MakeProxy) -> None:
    """1,000 idle tunnels in <= 100 MB (issue 16 must-show 5): an idle
    spliced tunnel holds no task and none of the http1 connection's objects
    (they cost ~17 kB a tunnel when the accepting task waited on the relay)."""
    peer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _PEER, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert peer.stdin is not None and peer.stdout is not None
    try:
        port = int(await peer.stdout.readline())
        events = Events()
        node = await make_proxy(
            events=events, resolve={"echo.example:443": f"127.0.0.1:{port}"}, limits={"max_tunnels": 1000}
        )

        async def ask(line: str) -> str:
            assert peer.stdin is not None and peer.stdout is not None
            peer.stdin.write(f"{line}\n".encode())
            await peer.stdin.drain()
            return (await asyncio.wait_for(peer.stdout.readline(), 30)).decode().strip()

        peer.stdin.write(f"{node.port}\n".encode())
        assert await ask("10") == "held 10"  # warms what the first ones create
        await asyncio.sleep(0.2)
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            assert await ask("200") == "held 210"
            await asyncio.sleep(0.2)
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        grown = sum(s.size_diff for s in after.compare_to(before, "filename")) / 200
        assert grown < 8_000, f"{grown:.0f} bytes a tunnel"  # ~5 kB now, ~17.5 kB before
        assert not node._tasks and node.tunnels == 210
        assert await ask("ping") == "ping"  # still relaying, both ways
    finally:
        peer.stdin.close()
        await asyncio.wait_for(peer.wait(), 10)
    # Each tunnel's flow is recorded when it ends.
    for _ in range(500):
        if len(events.of(ProxyConnection)) >= 210 and node.tunnels == 0:
            break
        await asyncio.sleep(0.01)
    conns = events.of(ProxyConnection)
    assert len(conns) == 210 and node.tunnels == 0
    assert all(c.bump_status == "spliced" and c.status == 200 for c in conns)
    assert max(c.bytes_up for c in conns) == 4 and max(c.bytes_down for c in conns) == 4
