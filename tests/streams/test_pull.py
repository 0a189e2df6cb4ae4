"""The pull readers of the consumer helper: the wire core's parser on
fragmented input, pull-request statuses, re-drive headers, and both readers
against the real JetStream (every message once, in order, past many pull
requests)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from streams.natswire import WireUnsupported
from streams.pull import (
    PULL_CHUNK,
    ConsumerGone,
    Msg,
    NatsPyPuller,
    Puller,
    WirePuller,
    _Credit,
    _PullProtocol,
    seq_of,
    status_of,
)
from streams.topology import Topology
from tests.projections.helpers import ok_request, publish

ACK = b"$JS.ACK.S.c.1.%d.%d.1700000000000000000.%d"


def _hmsg(seq: int, pending: int, payload: bytes) -> bytes:
    headers = b"NATS/1.0\r\nNats-Msg-Id: e-%d\r\n\r\n" % seq
    reply = ACK % (seq, seq, pending)
    total = len(headers) + len(payload)
    return b"HMSG s.x 1 %s %d %d\r\n%s%s\r\n" % (reply, len(headers), total, headers, payload)


async def test_the_parser_reads_messages_split_anywhere() -> None:
    credit = _Credit("S", "c", 10_000)
    credit.owed = 100
    proto = _PullProtocol(credit)
    stream = b"INFO {}\r\n+OK\r\n" + b"".join(_hmsg(i, 50 - i, b'{"n":%d}' % i) for i in range(1, 51))
    stream += b"MSG s.y 1 " + ACK % (51, 51, 0) + b" 2\r\nhi\r\n"
    # every split point a socket read could produce, in 7-byte pieces
    for i in range(0, len(stream), 7):
        proto.data_received(stream[i : i + 7])
    assert [((m.seq, m.pending), m.data) for m in credit.buf] == [
        ((i, 50 - i), b'{"n":%d}' % i) for i in range(1, 51)
    ] + [((51, 0), b"hi")]
    assert credit.owed == 49 and credit.error is None
    assert all(m.redrive_for == "" for m in credit.buf)


async def test_a_redrive_names_its_consumer_and_an_event_names_none() -> None:
    credit = _Credit("S", "c", 10_000)
    proto = _PullProtocol(credit)
    headers = b"NATS/1.0\r\nNats-Msg-Id: redrive:X_DEADLETTER:7\r\nNexus-Redrive-For: quota\r\n\r\n"
    payload = b'{"n":1}'
    reply = ACK % (9, 9, 0)
    total = len(headers) + len(payload)
    proto.data_received(b"HMSG s.x 1 %s %d %d\r\n%s%s\r\n" % (reply, len(headers), total, headers, payload))
    proto.data_received(_hmsg(10, 0, payload))
    assert [(m.seq, m.redrive_for) for m in credit.buf] == [(9, "quota"), (10, "")]


def test_the_place_of_a_message_is_read_from_either_ack_subject_form() -> None:
    short = b"$JS.ACK.S.c.3.12345.12346.1700000000000000000.777"
    long = b"$JS.ACK.dom.acchash.S.c.3.12345.12346.1700000000000000000.777.tok"
    for reply in (short, long):
        m = Msg.of(b"s", reply, b"x")
        assert (m.seq, m.delivered, m.pending) == (12345, 3, 777)
    with pytest.raises(ValueError):
        seq_of(b"_INBOX.abc.1")


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)


async def test_statuses_end_requests_and_a_409_ends_the_read() -> None:
    credit = _Credit("S", "c", 10_000)
    credit.owed = 2 * credit.chunk
    proto = _PullProtocol(credit)
    transport = _Transport()
    proto.connection_made(transport)
    timeout = b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 7\r\nNats-Pending-Bytes: 0\r\n\r\n"
    proto.data_received(b"HMSG _INBOX.x 1 %d %d\r\n%s\r\n" % (len(timeout), len(timeout), timeout))
    assert credit.owed == 2 * credit.chunk - 7 and credit.error is None
    beat = b"NATS/1.0 100 Idle Heartbeat\r\n\r\n"
    proto.data_received(b"HMSG _INBOX.x 1 %d %d\r\n%s\r\nPING\r\n" % (len(beat), len(beat), beat))
    assert credit.owed == 2 * credit.chunk - 7
    assert transport.written == b"PONG\r\n"
    gone = b"NATS/1.0 409 Consumer Deleted\r\n\r\n"
    proto.data_received(b"HMSG _INBOX.x 1 %d %d\r\n%s\r\n" % (len(gone), len(gone), gone))
    with pytest.raises(ConsumerGone, match="409 Consumer Deleted"):
        await credit.take(0.01)
    assert status_of(b"NATS/1.0 404 No Messages\r\n\r\n") == ("404", "No Messages", None)


async def test_a_server_that_requires_tls_sends_the_reader_back_to_nats_py() -> None:
    # A listener that greets like a TLS-only NATS server.
    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b'INFO {"server_id":"x","tls_required": true,"headers":true}\r\n')
        await writer.drain()
        await reader.read(100)
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    from streams.natswire import Endpoint, open_wire

    try:
        with pytest.raises(WireUnsupported, match="TLS"):
            await open_wire(lambda: _PullProtocol(_Credit("S", "c", 10_000)), Endpoint("127.0.0.1", port))
    finally:
        server.close()


def test_requests_are_topped_up_within_the_window_and_lost_ones_forgotten() -> None:
    credit = _Credit("S", "c", 3 * PULL_CHUNK)
    assert credit.requests_due() == 3
    assert credit.requests_due() == 0
    credit.requests_end -= 100  # all expired and their 408s never came (a reconnect)
    assert credit.requests_due() == 3


@pytest.mark.integration
@pytest.mark.parametrize("kind", [WirePuller, NatsPyPuller])
async def test_a_reader_gets_every_message_once_in_order(
    kind: type[WirePuller] | type[NatsPyPuller], nc: NATS, js: JetStreamContext, topology: Topology
) -> None:
    last = await publish(js, topology, [ev for i in range(1500) for ev in ok_request(i)])
    name = f"t-{uuid.uuid4().hex[:8]}"
    await js.add_consumer(
        topology.traffic_stream,
        config=ConsumerConfig(
            name=name,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=30.0,
            mem_storage=True,
        ),
    )
    puller: Puller = kind(nc, topology.traffic_stream, name, window=500)  # 12 windows' worth
    await puller.start()
    seqs: list[int] = []
    try:
        async with asyncio.timeout(30):
            while len(seqs) < last:
                seqs += [m.seq for m in await puller.take(0.5)]
    finally:
        await puller.stop()
        await js.delete_consumer(topology.traffic_stream, name)
    assert seqs == list(range(1, last + 1))


@pytest.mark.integration
def test_the_wire_reader_runs_on_uvloop(nats_url: str, topology: Topology) -> None:
    # `nexus up` runs on uvloop, whose transports are not asyncio.Transport
    import uvloop

    from streams.jetstream import connect, delete_streams, ensure_streams

    async def main() -> list[int]:
        nc = await connect(nats_url, name="pullwire-uvloop-test")
        js = nc.jetstream()
        await ensure_streams(js, topology)
        try:
            last = await publish(js, topology, [ev for i in range(50) for ev in ok_request(i)])
            name = f"t-{uuid.uuid4().hex[:8]}"
            await js.add_consumer(
                topology.traffic_stream,
                config=ConsumerConfig(name=name, ack_policy=AckPolicy.NONE, inactive_threshold=30.0),
            )
            puller = WirePuller(nc, topology.traffic_stream, name, window=100)
            await puller.start()
            seqs: list[int] = []
            try:
                async with asyncio.timeout(20):
                    while len(seqs) < last:
                        seqs += [m.seq for m in await puller.take(0.5)]
            finally:
                await puller.stop()
            return seqs
        finally:
            await delete_streams(js, topology)
            await nc.close()

    assert uvloop.run(main()) == list(range(1, 201))
