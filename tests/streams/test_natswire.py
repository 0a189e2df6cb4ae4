"""The lean JetStream publishing connection against real nats-servers:
acks counted in order, duplicates are successes, refusals and lost
connections end the stored prefix, auth from the URL, TLS falls back."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import nats
import pytest

from streams.jetstream import ensure_streams
from streams.natswire import AckWriter, WireClosed, WireUnsupported
from streams.topology import Topology
from tests.services import PrivateNats

pytestmark = pytest.mark.integration


def _rows(topology: Topology, n: int, start: int = 0) -> list[tuple[str, str, bytes]]:
    subject = topology.traffic_subject("request.received")
    return [(subject, f"id-{i}", b'{"i":%d}' % i) for i in range(start, start + n)]


async def _stored(url: str, topology: Topology) -> list[bytes]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(topology.traffic_stream)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            out.append((await js.get_msg(topology.traffic_stream, seq)).data)
        return out
    finally:
        await nc.close()


async def _with_streams(url: str, topology: Topology) -> None:
    nc = await nats.connect(url)
    try:
        await ensure_streams(nc.jetstream(), topology)
    finally:
        await nc.close()


async def test_a_batch_is_stored_in_order_and_a_resend_is_deduplicated(
    nats_url: str, topology: Topology
) -> None:
    await _with_streams(nats_url, topology)
    wire = await AckWriter.open(nats_url, name="wire-test")
    try:
        rows = _rows(topology, 1000)
        assert await wire.publish(rows, 5.0) == 1000
        # The same ids again (a retry after a timeout): acknowledged as
        # duplicates, which is success, and stored once.
        assert await wire.publish(rows[500:], 5.0) == 500
        assert await wire.publish(_rows(topology, 10, 1000), 5.0) == 10
    finally:
        wire.close()
    stored = await _stored(nats_url, topology)
    assert stored == [b'{"i":%d}' % i for i in range(1010)]


async def test_a_subject_no_stream_listens_on_is_refused(nats_url: str) -> None:
    lonely = Topology(prefix=f"NOSTREAM{uuid.uuid4().hex[:8]}".upper())
    wire = await AckWriter.open(nats_url, name="wire-test")
    try:
        assert await wire.publish(_rows(lonely, 3), 2.0) == 0
        assert not wire.closed  # a refusal is not a broken connection
    finally:
        wire.close()


async def test_oversized_event_ends_the_batch_before_it(nats_url: str, topology: Topology) -> None:
    await _with_streams(nats_url, topology)
    wire = await AckWriter.open(nats_url, name="wire-test")
    try:
        rows = _rows(topology, 3)
        rows.insert(2, (rows[0][0], "too-big", b"x" * (wire.max_payload + 1)))
        assert await wire.publish(rows, 5.0) == 2
        assert not wire.closed
    finally:
        wire.close()
    assert len(await _stored(nats_url, topology)) == 2


async def test_a_lost_server_returns_the_acknowledged_prefix_then_refuses(tmp_path: Path) -> None:
    server = PrivateNats(tmp_path / "js")
    server.start()
    topology = Topology(prefix="WIRELOST")
    try:
        await _with_streams(server.url, topology)
        wire = await AckWriter.open(server.url, name="wire-test")
        assert await wire.publish(_rows(topology, 100), 5.0) == 100
        server.stop()
        for _ in range(50):  # the close reaches the protocol on the next loop turns
            if wire.closed:
                break
            await asyncio.sleep(0.05)
        assert wire.closed
        with pytest.raises(WireClosed):
            await wire.publish(_rows(topology, 5, 100), 1.0)
    finally:
        server.stop()


async def test_user_and_password_come_from_the_url(tmp_path: Path) -> None:
    server = PrivateNats(tmp_path / "js", extra_args=("--user", "pub", "--pass", "s3cret"))
    server.start()
    topology = Topology(prefix="WIREAUTH")
    good = f"nats://pub:s3cret@127.0.0.1:{server.port}"
    try:
        await _with_streams(good, topology)
        wire = await AckWriter.open(good, name="wire-test")
        assert await wire.publish(_rows(topology, 5), 5.0) == 5
        wire.close()
        with pytest.raises((ConnectionError, OSError, TimeoutError)):
            await AckWriter.open(f"nats://pub:wrong@127.0.0.1:{server.port}", name="wire-test")
    finally:
        server.stop()


async def test_a_tls_server_is_left_to_nats_py() -> None:
    # A listener that announces tls_required in its INFO, as a TLS-only
    # nats-server does before the handshake.
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b'INFO {"server_id":"x","tls_required":true,"max_payload":1048576}\r\n')
        await writer.drain()
        await reader.read(100)
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        with pytest.raises(WireUnsupported):
            await AckWriter.open(f"nats://127.0.0.1:{port}", name="wire-test")
        with pytest.raises(WireUnsupported):
            await AckWriter.open(f"tls://127.0.0.1:{port}", name="wire-test")
    finally:
        srv.close()
        await srv.wait_closed()
