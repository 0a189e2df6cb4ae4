"""The publisher against real nats-servers: batching, ordering, the outbox
while NATS is away, and exactly-once arrival after it returns."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import nats
import pytest

from streams import codec
from streams.events import Node, RequestReceived, Tenant
from streams.publisher import Publisher
from streams.topology import Topology
from tests.services import PrivateNats

pytestmark = pytest.mark.integration


def _event(i: int) -> RequestReceived:
    return RequestReceived(
        request_id=f"req-{i}",
        node=Node(kind="gateway", id="t"),
        tenant=Tenant(org_id="o", project_id="p", key_id="k"),
        requested_model="m",
        path=f"/{i}",
    )


async def _stream_request_ids(url: str, topology: Topology) -> list[str]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(topology.traffic_stream)
        ids: list[str] = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(topology.traffic_stream, seq)
            ids.append(codec.decode(msg.data or b"").request_id)
        return ids
    finally:
        await nc.close()


async def test_publishes_in_order_with_event_id_as_msg_id(
    nats_url: str, topology: Topology, tmp_path: Path
) -> None:
    pub = Publisher(nats_url, topology, tmp_path / "outbox.db")
    await pub.start()
    events = [_event(i) for i in range(1000)]
    for e in events:
        pub.emit(e)
    assert await pub.flush(10)
    # Publishing the same event again is absorbed by the duplicate window.
    pub.emit(events[0])
    assert await pub.flush(10)
    await pub.close()
    ids = await _stream_request_ids(nats_url, topology)
    assert ids == [f"req-{i}" for i in range(1000)]
    nc = await nats.connect(nats_url)
    msg = await nc.jetstream().get_msg(topology.traffic_stream, 1)
    assert msg.headers and msg.headers["Nats-Msg-Id"] == events[0].id
    await nc.close()


@pytest.mark.slow
async def test_nats_restart_mid_run_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    server = PrivateNats(tmp_path / "nats")
    server.start()
    topology = Topology(prefix="RESTART")
    pub = Publisher(server.url, topology, tmp_path / "outbox.db", ack_timeout_s=0.5, retry_backoff_s=0.1)
    try:
        await pub.start()
        for i in range(300):
            pub.emit(_event(i))
        await pub.flush(10)
        # Emit while the server goes away and comes back: emit never blocks.
        stopper = asyncio.get_running_loop().run_in_executor(None, server.stop)
        for i in range(300, 1000):
            pub.emit(_event(i))
            if i % 50 == 0:
                await asyncio.sleep(0.01)
        await stopper
        for i in range(1000, 1200):
            pub.emit(_event(i))
        await asyncio.sleep(0.5)
        assert pub.outbox_depth > 0, "events emitted while NATS was down must be in the outbox"
        server.start()
        assert await pub.flush(30), "the outbox must drain once NATS is back"
        ids = await _stream_request_ids(server.url, topology)
        assert sorted(ids, key=lambda s: int(s.split("-")[1])) == [f"req-{i}" for i in range(1200)]
        assert len(set(ids)) == 1200
        assert ids == [f"req-{i}" for i in range(1200)], "order must be preserved across the outage"
    finally:
        await pub.close()
        server.stop()


async def test_outbox_survives_a_restart_of_the_publisher(tmp_path: Path) -> None:
    server = PrivateNats(tmp_path / "nats")  # not started: NATS is away
    topology = Topology(prefix="OUTBOX")
    pub = Publisher(server.url, topology, tmp_path / "outbox.db", retry_backoff_s=0.1)
    await pub.start()
    for i in range(100):
        pub.emit(_event(i))
    await asyncio.sleep(0.3)
    await pub.close()
    server.start()
    try:
        again = Publisher(server.url, topology, tmp_path / "outbox.db", retry_backoff_s=0.1)
        assert again.outbox_depth == 100
        await again.start()
        assert await again.flush(15)
        await again.close()
        assert await _stream_request_ids(server.url, topology) == [f"req-{i}" for i in range(100)]
    finally:
        server.stop()


async def test_a_hung_server_switches_journaling_on_and_a_prompt_one_off(tmp_path: Path) -> None:
    """Healthy NATS: nothing is journaled (no cost).  Paused (SIGSTOP:
    connected, not acknowledging): within the 50 ms deadline every event is
    journaled, and a publisher that dies then leaves them to the next one.
    Resumed: everything arrives once and journaling stops."""
    import signal

    from prometheus_client import REGISTRY

    def journaling() -> float | None:
        return REGISTRY.get_sample_value("nexus_publish_journaling")

    server = PrivateNats(tmp_path / "nats")
    server.start()
    topology = Topology(prefix="HUNG")
    outbox = tmp_path / "outbox.db"
    try:
        # A deadline of 250 ms rather than 50: this machine is shared, and a
        # busy one makes a healthy NATS look slow now and then.
        pub = Publisher(server.url, topology, outbox, journal_after_s=0.25)
        await pub.start()
        i = 0
        for _ in range(20):  # journaling starts on, until a batch is acknowledged promptly
            pub.emit(_event(i))
            i += 1
            assert await pub.flush(10)
            if journaling() == 0:
                break
        assert journaling() == 0
        assert server.proc is not None
        server.proc.send_signal(signal.SIGSTOP)
        first_hung = i
        for i in range(first_hung, first_hung + 20):
            pub.emit(_event(i))
        await asyncio.sleep(0.6)
        assert journaling() == 1
        for i in range(first_hung + 20, first_hung + 30):
            pub.emit(_event(i))
        await asyncio.sleep(0)  # the end of the turn: journaled
        # The process "dies": its journal is left as it is (no close, no
        # outbox), and a new publisher opens the same files.
        pub._journal.close()
        pub._outbox.close()
        for task in (pub._task, pub._connector, pub._syncer):
            assert task is not None
            task.cancel()
        server.proc.send_signal(signal.SIGCONT)
        again = Publisher(server.url, topology, outbox, journal_after_s=0.25)
        await again.start()
        assert await again.flush(20)
        assert journaling() == 0
        await again.close()
        ids = await _stream_request_ids(server.url, topology)
        total = first_hung + 30
        assert sorted(set(ids), key=lambda r: int(r.split("-")[1])) == [f"req-{i}" for i in range(total)]
        assert len(ids) == total  # the duplicates a restart republishes are absorbed
    finally:
        if server.proc is not None:
            server.proc.send_signal(signal.SIGCONT)
        server.stop()


async def test_an_event_jetstream_refuses_for_good_is_set_aside_and_never_blocks_the_rest(
    tmp_path: Path,
) -> None:
    """An event over the server's max_payload can never be published: it
    used to stay at the head of the outbox for good, holding back every
    event behind it.  Now it is set aside (kept in the outbox's rejected
    table, counted) and the rest is published."""
    from prometheus_client import REGISTRY

    from streams.outbox import Outbox

    conf = tmp_path / "nats.conf"
    conf.write_text("max_payload: 4096\n")
    server = PrivateNats(tmp_path / "nats", extra_args=("-c", str(conf)))
    server.start()
    topology = Topology(prefix="BIG")
    before = REGISTRY.get_sample_value("nexus_events_rejected_total") or 0.0
    try:
        pub = Publisher(server.url, topology, tmp_path / "outbox.db")
        await pub.start()
        big = msgspec.structs.replace(_event(5), user_agent="x" * 10_000)
        for i in range(10):
            pub.emit(big if i == 5 else _event(i))
        assert await pub.flush(20)
        await pub.close()
        ids = await _stream_request_ids(server.url, topology)
        assert ids == [f"req-{i}" for i in range(10) if i != 5]
        assert (REGISTRY.get_sample_value("nexus_events_rejected_total") or 0.0) - before == 1
        outbox = Outbox(tmp_path / "outbox.db")
        [(subject, msg_id, data, reason)] = outbox.rejected()
        outbox.close()
        assert msg_id == big.id and data == codec.encode(big) and "max_payload" in reason
        assert subject == topology.traffic_subject("request.received")
    finally:
        server.stop()


async def test_flush_waits_for_events_emitted_before_nats_is_reached(tmp_path: Path) -> None:
    """Emitted before the first connection, the events go to the outbox in a
    worker thread; flush() returned True while they were on their way
    there (neither in the buffer nor yet counted in the outbox)."""
    server = PrivateNats(tmp_path / "nats")
    server.start()
    topology = Topology(prefix="EARLY")
    try:
        pub = Publisher(server.url, topology, tmp_path / "outbox.db")
        await pub.start()
        for i in range(10):
            pub.emit(_event(i))
        assert await pub.flush(20)
        assert pub.outbox_depth == 0
        await pub.close()
        assert await _stream_request_ids(server.url, topology) == [f"req-{i}" for i in range(10)]
    finally:
        server.stop()


async def test_a_long_hang_at_a_high_rate_does_not_fill_the_journal(tmp_path: Path) -> None:
    """NATS paused (connected, not acknowledging) for several seconds while
    events keep coming at ~1.3 MB/s: what is emitted while the publisher
    waits on the hung server (a drain attempt, a back-off) goes to the
    outbox as it comes, so a 3 MiB journal never fills (what overflows it
    lives in memory only, and a kill -9 loses it: the crash test lost
    5,000-10,600 answered requests that way).  Resumed: every event
    arrives, in order."""
    import signal

    from prometheus_client import REGISTRY

    def full() -> float:
        return REGISTRY.get_sample_value("nexus_publish_journal_full_total") or 0.0

    server = PrivateNats(tmp_path / "nats")
    server.start()
    topology = Topology(prefix="LONGHANG")
    try:
        # A long back-off makes each wait on the hung server ~3 s (1 s for
        # the connection attempt, 2 s of back-off): 4 MB of events at this
        # rate, more than the journal holds.
        pub = Publisher(
            server.url,
            topology,
            tmp_path / "outbox.db",
            journal_after_s=0.25,
            retry_backoff_s=2.0,
            journal_bytes=3 * 1024 * 1024,
        )
        await pub.start()
        i = 0
        pub.emit(_event(i))
        i += 1
        assert await pub.flush(10)
        before = full()
        assert server.proc is not None
        server.proc.send_signal(signal.SIGSTOP)
        loop = asyncio.get_running_loop()
        until = loop.time() + 6.0
        while loop.time() < until:  # ~5,000 events (267 bytes each) a second
            for _ in range(50):
                pub.emit(_event(i))
                i += 1
            await asyncio.sleep(0.01)
        assert full() == before, f"{full() - before:.0f} events overflowed the journal"
        server.proc.send_signal(signal.SIGCONT)
        assert await pub.flush(60)
        await pub.close()
        ids = await _stream_request_ids(server.url, topology)
        assert len(set(ids)) == i
        assert sorted(set(ids), key=lambda r: int(r.split("-")[1])) == [f"req-{n}" for n in range(i)]
    finally:
        if server.proc is not None:
            server.proc.send_signal(signal.SIGCONT)
        server.stop()


async def test_a_backlog_leaves_in_few_large_batches(
    nats_url: str, topology: Topology, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under overload the loop is saturated and each ack round trip spans
    several of its turns: events emitted faster than one batch per round
    trip publishes pile up in memory (a 30 s closed-loop overload held
    ~30,000, RSS 119 -> 256 MB).  A backlog goes out in batches of up to
    ``CATCH_UP_BATCH``, not the 512 a batch held before."""
    from streams import natswire

    sizes: list[int] = []
    real = natswire.AckWriter.publish

    async def spy(self: natswire.AckWriter, rows: list[natswire.Row], timeout: float) -> int:
        sizes.append(len(rows))
        return await real(self, rows, timeout)

    monkeypatch.setattr(natswire.AckWriter, "publish", spy)
    pub = Publisher(nats_url, topology, tmp_path / "outbox.db")
    await pub.start()
    async with asyncio.timeout(10):  # the in-memory path, not the outbox's
        while not pub.connected:
            await asyncio.sleep(0.01)
    for i in range(5000):
        pub.emit(_event(i))
    assert await pub.flush(20)
    await pub.close()
    assert sum(sizes) == 5000
    assert len(sizes) <= 3, sizes  # 2,048 + 2,048 + 904 (ten batches of 512 before)
    assert await _stream_request_ids(nats_url, topology) == [f"req-{i}" for i in range(5000)]
