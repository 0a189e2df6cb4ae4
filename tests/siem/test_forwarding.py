"""SIEM forwarding end to end: real events published to JetStream, the real
forwarder, and real receivers started here (syslog over TCP and TLS parsing
RFC 5424 frames, and a Splunk-HEC-shaped HTTP server).

Each receiver must get every event its sink selects exactly once per event
id (no id missing, nothing it filters out), also across an outage of the
receiver; raw duplicates are counted and reported."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import socket
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS
from prometheus_client import CollectorRegistry

from processors.siem import SiemForwarder, start_siem
from processors.siem import cli as siem_cli
from streams import codec, deadletter
from streams.config_siem import SiemConfig, SinkFilter, SplunkHecSink, SyslogSink
from streams.events import Body, Node, RequestCompleted, RequestFailed, RequestReceived, Tenant
from streams.events_compliance import HookVerdict
from streams.topology import Topology
from tests.siem.receivers import HecServer, SyslogServer, self_signed, server_ssl

pytestmark = pytest.mark.integration

HEC_TOKEN = "hec-test-token-0123456789"
SECRET_KEY = "nvk_" + "ab" * 32
PROMPT = "my card is 4111 1111 1111 1111"


class Fact(msgspec.Struct):
    """What the test knows about an event it published, to compute by
    itself which sink must receive it."""

    id: str
    type: str
    org: str
    status: int | None
    verdict: str | None


def _batch(tag: str, n: int) -> tuple[list[msgspec.Struct], list[Fact]]:
    events: list[msgspec.Struct] = []
    facts: list[Fact] = []
    for i in range(n):
        org = ("acme", "globex")[i % 2]
        tenant = Tenant(org_id=org, project_id=f"{org}-p", key_id=f"{org}-k1")
        node = Node(kind="gateway", id="gw-1")
        rid = f"{tag}-{i}"
        kind = i % 5
        ev: Any
        if kind == 0:
            ev = RequestReceived(
                request_id=rid,
                tenant=tenant,
                node=node,
                path="/v1/chat/completions",
                user_agent=f"curl ({SECRET_KEY})",
                body=Body(inline=json.dumps({"prompt": PROMPT}).encode(), size=40),
            )
            facts.append(Fact(ev.id, "request.received", org, None, None))
        elif kind == 1:
            ev = RequestCompleted(request_id=rid, tenant=tenant, node=node, latency_ms=12.0)
            facts.append(Fact(ev.id, "request.completed", org, 200, None))
        elif kind == 2:
            status = (502, 429)[(i // 5) % 2]
            ev = RequestFailed(
                request_id=rid, tenant=tenant, node=node, status=status, reason="upstream said no"
            )
            facts.append(Fact(ev.id, "request.failed", org, status, None))
        elif kind == 3:
            verdict = ("block", "approve")[(i // 5) % 2]
            ev = HookVerdict(request_id=rid, tenant=tenant, node=node, hook="pii", verdict=verdict)
            facts.append(Fact(ev.id, "hook.verdict", org, None, verdict))
        else:
            ev = RequestCompleted(request_id=rid, tenant=tenant, node=node, status=201)
            facts.append(Fact(ev.id, "request.completed", org, 201, None))
        events.append(ev)
    return events, facts


# Which events each sink must get, written out independently of the
# forwarder's filter code.
def _want_tcp(f: Fact) -> bool:  # every type, org acme only
    return f.org == "acme"


def _want_tls(f: Fact) -> bool:  # failures and hook verdicts that blocked
    return f.type == "request.failed" or (f.type == "hook.verdict" and f.verdict == "block")


def _want_hec(f: Fact) -> bool:  # 5xx and 429 responses
    return f.status is not None and (500 <= f.status < 600 or f.status == 429)


async def _publish(js: nats.js.JetStreamContext, topology: Topology, events: list[msgspec.Struct]) -> None:
    for e in events:
        await js.publish(topology.subject_for(e), codec.encode(e), headers={"Nats-Msg-Id": e.id})  # type: ignore[attr-defined]


class Rig:
    def __init__(self, tmp: Path) -> None:
        cert, key = self_signed(tmp)
        self.cert = cert
        self.tcp = SyslogServer("tcp")
        self.tls = SyslogServer("tls", server_ssl(cert, key))
        self.hec = HecServer(HEC_TOKEN)

    async def start(self) -> None:
        await asyncio.gather(self.tcp.start(), self.tls.start(), self.hec.start())

    async def stop(self) -> None:
        await asyncio.gather(self.tcp.stop(), self.tls.stop(), self.hec.stop())

    def config(self, *, backoff_max_s: float) -> SiemConfig:
        common: dict[str, Any] = {
            "allow_private_network": True,
            "deliver": "all",
            "backoff_initial_s": 0.1,
            "backoff_max_s": backoff_max_s,
            "batch_size": 50,
        }
        return SiemConfig(
            sinks=(
                SyslogSink(
                    name="tcp",
                    host="127.0.0.1",
                    port=self.tcp.port,
                    transport="tcp",
                    include_bodies=True,
                    filter=SinkFilter(orgs=("acme",)),
                    **common,
                ),
                SyslogSink(
                    name="tls",
                    host="127.0.0.1",
                    port=self.tls.port,
                    transport="tls",
                    format="cef",
                    tls_ca_file=str(self.cert),
                    filter=SinkFilter(event_types=("request.failed", "hook.*"), verdicts=()),
                    **common,
                ),
                SyslogSink(  # the verdict filter: only hook events that blocked or any failure
                    name="unused",
                    enabled=False,
                    host="127.0.0.1",
                    port=1,
                    **common,
                ),
                SplunkHecSink(
                    name="hec",
                    url=f"http://127.0.0.1:{self.hec.port}",
                    token_env="TEST_HEC_TOKEN",
                    filter=SinkFilter(statuses=("5xx", "429")),
                    **common,
                ),
            )
        )


def _check(name: str, arrivals: Any, expected: set[str], report: dict[str, Any]) -> None:
    missing = expected - arrivals.ids
    unexpected = arrivals.ids - expected
    report[name] = {
        "expected": len(expected),
        "unique": len(arrivals.ids),
        "raw_duplicates": arrivals.duplicates,
        "malformed": len(arrivals.malformed),
    }
    assert not arrivals.malformed, arrivals.malformed[:3]
    assert not missing, f"{name}: {len(missing)} selected events never arrived"
    assert not unexpected, f"{name}: {len(unexpected)} filtered-out events arrived"


async def _outage_run(
    nc: NATS, js: nats.js.JetStreamContext, topology: Topology, tmp_path: Path, outage_s: float
) -> dict[str, Any]:
    rig = Rig(tmp_path)
    await rig.start()
    registry = CollectorRegistry()
    # The TLS sink filters on type; a verdict filter is exercised too: it
    # must let blocks through and drop approvals.
    cfg = rig.config(backoff_max_s=2.0)
    tls = cfg.sinks[1]
    assert isinstance(tls, SyslogSink)
    cfg = SiemConfig(
        sinks=(
            cfg.sinks[0],
            msgspec.structs.replace(
                tls,
                filter=SinkFilter(event_types=("request.failed",)),
            ),
            msgspec.structs.replace(
                tls, name="tls_verdicts", filter=SinkFilter(event_types=("hook.*",), verdicts=("block",))
            ),
            cfg.sinks[2],
            cfg.sinks[3],
        )
    )
    forwarder = SiemForwarder(nc, topology, cfg, env={"TEST_HEC_TOKEN": HEC_TOKEN}, registry=registry)
    await forwarder.start()
    facts: list[Fact] = []
    try:
        events, f1 = _batch("a", 60)
        facts += f1
        await _publish(js, topology, events)
        await rig.tcp.arrivals.wait_for({f.id for f in facts if _want_tcp(f)}, 20)
        await rig.tls.arrivals.wait_for({f.id for f in facts if _want_tls(f)}, 20)
        await rig.hec.arrivals.wait_for({f.id for f in facts if _want_hec(f)}, 20)

        # The outage: every receiver goes away; events keep coming.
        await rig.stop()
        events, f2 = _batch("b", 60)
        facts += f2
        await _publish(js, topology, events)
        await asyncio.sleep(outage_s)
        lag = registry.get_sample_value("nexus_siem_lag", {"sink": "hec", "stream": topology.traffic_stream})
        outages = registry.get_sample_value("nexus_siem_failures_total", {"sink": "hec", "kind": "outage"})
        assert outages and outages > 0
        assert lag and lag > 0, "the backlog waits in the stream during the outage"
        await rig.start()  # same ports
        restarted = asyncio.get_running_loop().time()
        backlog = {f.id for f in f2 if _want_hec(f)}
        await rig.hec.arrivals.wait_for(backlog, 20)
        drained_s = asyncio.get_running_loop().time() - restarted
        events, f3 = _batch("c", 30)
        facts += f3
        await _publish(js, topology, events)

        deadline = 20 + 2 * 2.0
        await rig.tcp.arrivals.wait_for({f.id for f in facts if _want_tcp(f)}, deadline)
        await rig.tls.arrivals.wait_for({f.id for f in facts if _want_tls(f)}, deadline)
        await rig.hec.arrivals.wait_for({f.id for f in facts if _want_hec(f)}, deadline)
        await asyncio.sleep(1.5)  # time for stragglers: a filtered-out or duplicate arrival would show
        report: dict[str, Any] = {}
        _check("syslog-tcp", rig.tcp.arrivals, {f.id for f in facts if _want_tcp(f)}, report)
        tls_ids = {f.id for f in facts if f.type == "request.failed"}
        verdict_ids = {f.id for f in facts if f.type == "hook.verdict" and f.verdict == "block"}
        # Both TLS sinks deliver to the same receiver.
        _check("syslog-tls", rig.tls.arrivals, tls_ids | verdict_ids, report)
        _check("hec", rig.hec.arrivals, {f.id for f in facts if _want_hec(f)}, report)
        assert rig.hec.unauthorized == 0
        # HTTP acknowledges per request: nothing is sent twice.
        assert rig.hec.arrivals.duplicates == 0
        forwarded = registry.get_sample_value("nexus_siem_forwarded_total", {"sink": "hec"})
        assert forwarded is not None and forwarded >= len({f.id for f in facts if _want_hec(f)})
        filtered = registry.get_sample_value("nexus_siem_filtered_total", {"sink": "tcp"})
        assert filtered == sum(1 for f in facts if not _want_tcp(f))
        await asyncio.sleep(1.2)
        assert (
            registry.get_sample_value("nexus_siem_lag", {"sink": "hec", "stream": topology.traffic_stream})
            == 0
        )
        report["hec_backlog_drained_s"] = round(drained_s, 2)
        report["events_published"] = len(facts)
        report["outage_s"] = outage_s
        return report | {"_rig": rig}
    finally:
        await forwarder.stop()
        await rig.stop()


async def test_every_selected_event_once_across_an_outage(
    nc: NATS, js: nats.js.JetStreamContext, topology: Topology, tmp_path: Path
) -> None:
    report = await _outage_run(nc, js, topology, tmp_path, outage_s=3.0)
    rig = report.pop("_rig")
    print("\nSIEM delivery across a 3 s outage:", report)
    # What the receivers got is well-formed and free of secrets.
    tcp_records = list(rig.tcp.arrivals.records.values())
    received = [r for r in tcp_records if r["type"] == "request.received"]
    assert received and all(SECRET_KEY not in json.dumps(r) for r in tcp_records)
    # The tcp sink's policy includes bodies; the others never see them.
    body = received[0]["body"]
    assert PROMPT in base64.b64decode(body["inline"]).decode() and len(body["sha256"]) == 64
    for ev in rig.hec.arrivals.records.values():
        assert "inline" not in json.dumps(ev) and SECRET_KEY not in json.dumps(ev)
        assert ev["fields"]["event_id"] == ev["event"]["id"]
    cef = next(iter(rig.tls.arrivals.records.values()))
    assert cef["cef"].startswith("CEF:0|Nexus|Nexus Gateway|")
    assert cef["ext"]["externalId"] == cef["sd"]["nexus@32473"]["id"]
    assert PROMPT not in cef["cef"]
    sev = {m.sd["nexus@32473"]["id"]: m.severity for m in rig.tls.messages}
    statuses = {m.sd["nexus@32473"]["id"]: m.sd["nexus@32473"].get("status") for m in rig.tls.messages}
    assert all(sev[i] == (3 if statuses[i] == "502" else 4) for i in sev if statuses[i])
    assert all(m.facility == 13 and m.app_name == "nexus" for m in rig.tls.messages)


@pytest.mark.slow
async def test_every_selected_event_once_across_a_30s_outage(
    nc: NATS, js: nats.js.JetStreamContext, topology: Topology, tmp_path: Path
) -> None:
    report = await _outage_run(nc, js, topology, tmp_path, outage_s=30.0)
    report.pop("_rig")
    print("\nSIEM delivery across a 30 s outage:", report)


async def test_rejected_record_is_dead_lettered_after_max_attempts(
    nc: NATS,
    js: nats.js.JetStreamContext,
    topology: Topology,
    nats_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hec = HecServer(HEC_TOKEN)
    await hec.start()
    events, facts = _batch("d", 20)
    failing = [f.id for f in facts if f.status == 502]
    poison = failing[1]
    hec.reject_ids = {poison}
    registry = CollectorRegistry()
    cfg = SiemConfig(
        sinks=(
            SplunkHecSink(
                name="hec",
                url=f"http://127.0.0.1:{hec.port}/",
                token_env="TEST_HEC_TOKEN",
                allow_private_network=True,
                deliver="all",
                max_attempts=3,
                backoff_initial_s=0.05,
                backoff_max_s=0.2,
                filter=SinkFilter(statuses=("5xx",)),
            ),
        )
    )
    forwarder = SiemForwarder(nc, topology, cfg, env={"TEST_HEC_TOKEN": HEC_TOKEN}, registry=registry)
    await forwarder.start()
    try:
        await _publish(js, topology, events)
        await hec.arrivals.wait_for(set(failing) - {poison}, 15)
        async with asyncio.timeout(10):
            while not registry.get_sample_value("nexus_siem_dead_lettered_total", {"sink": "hec"}):
                await asyncio.sleep(0.05)
        [dl] = await deadletter.entries(js, topology, consumer="siem_hec")
        assert codec.decode(dl.data).id == poison and dl.event_id == poison
        assert (
            dl.code == "rejected" and "HEC: invalid event" in dl.reason and "after 3 attempt(s)" in dl.reason
        )
        assert dl.stream == topology.traffic_stream
        assert poison not in hec.arrivals.ids
        assert hec.arrivals.ids == set(failing) - {poison}
        assert hec.arrivals.duplicates == 0
        rejected = registry.get_sample_value("nexus_siem_failures_total", {"sink": "hec", "kind": "rejected"})
        assert rejected == 3
        # The operator lists the dead letters, fixes the cause, re-drives:
        # the record goes back on its stream for this sink, which sends it.
        hec.reject_ids = set()
        args = ["dlq", "--nats", nats_url, "--prefix", topology.prefix, "--sink", "hec"]
        assert await asyncio.to_thread(siem_cli.main, args) == 0
        assert await asyncio.to_thread(siem_cli.main, [*args, "--replay"]) == 0
        await hec.arrivals.wait_for({poison}, 10)
        assert await deadletter.entries(js, topology) == []
    finally:
        await forwarder.stop()
        await hec.stop()


async def test_udp_syslog_and_missing_token_is_a_clear_error(
    nc: NATS, js: nats.js.JetStreamContext, topology: Topology
) -> None:
    udp = SyslogServer("udp")
    await udp.start()
    cfg = SiemConfig(
        sinks=(
            SyslogSink(
                name="udp",
                host="127.0.0.1",
                port=udp.port,
                transport="udp",
                allow_private_network=True,
                deliver="all",
                filter=SinkFilter(event_types=("request.failed",)),
            ),
        )
    )
    forwarder = SiemForwarder(nc, topology, cfg, registry=CollectorRegistry())
    await forwarder.start()
    try:
        events, facts = _batch("u", 20)
        await _publish(js, topology, events)
        # UDP is fire-and-forget; on loopback nothing is lost.
        await udp.arrivals.wait_for({f.id for f in facts if f.type == "request.failed"}, 10)
        await asyncio.sleep(0.3)
        assert udp.arrivals.ids == {f.id for f in facts if f.type == "request.failed"}
        assert not udp.arrivals.malformed
    finally:
        await forwarder.stop()
        await udp.stop()
    from streams.config_base import ConfigError

    bad = SiemConfig(
        sinks=(SplunkHecSink(name="h", url="https://splunk.example.com", token_env="NOPE_NOT_SET"),)
    )
    with pytest.raises(ConfigError, match="environment variable NOPE_NOT_SET is not set"):
        await SiemForwarder(nc, topology, bad, env={}).start()


async def test_forwarder_restart_resumes_from_its_durable_consumer(
    nc: NATS, js: nats.js.JetStreamContext, topology: Topology, nats_url: str
) -> None:
    hec = HecServer(HEC_TOKEN)
    await hec.start()
    cfg = SiemConfig(
        sinks=(
            SplunkHecSink(
                name="hec",
                url=f"http://127.0.0.1:{hec.port}",
                token_env="TEST_HEC_TOKEN",
                allow_private_network=True,
                filter=SinkFilter(event_types=("request.failed",)),
            ),
        )
    )
    env = {"TEST_HEC_TOKEN": HEC_TOKEN}
    try:
        first = SiemForwarder(nc, topology, cfg, env=env, registry=CollectorRegistry())
        await first.start()
        events, facts = _batch("e", 20)
        await _publish(js, topology, events)
        want = {f.id for f in facts if f.type == "request.failed"}
        await hec.arrivals.wait_for(want, 10)
        await first.stop()
        # Published while no forwarder runs: the durable consumer (deliver
        # "new" by default) keeps its place, so the next run sends these.
        events, facts = _batch("f", 20)
        await _publish(js, topology, events)
        want |= {f.id for f in facts if f.type == "request.failed"}
        # The second run is started the way `nexus up` embeds it.
        second, stop_second = await start_siem(nats_url, topology, cfg, env=env, registry=CollectorRegistry())
        assert second is not None
        try:
            await hec.arrivals.wait_for(want, 10)
            await asyncio.sleep(0.3)
        finally:
            await stop_second()
        assert (await start_siem(nats_url, topology, SiemConfig()))[0] is None
        assert hec.arrivals.ids == want and hec.arrivals.duplicates == 0
    finally:
        await hec.stop()


async def test_a_name_that_resolves_to_a_private_address_is_refused_at_connect(
    nc: NATS, js: nats.js.JetStreamContext, topology: Topology
) -> None:
    # The config check cannot see what a name will resolve to; the sinks
    # check it at every connect.  This machine's own name resolves to
    # loopback here, like a DNS name re-pointed at an internal address.
    name = socket.gethostname()
    if all(ipaddress.ip_address(a[4][0]).is_global for a in socket.getaddrinfo(name, None)):
        pytest.skip("this machine's name resolves to a public address")
    tcp, hec = SyslogServer("tcp"), HecServer(HEC_TOKEN)
    await tcp.start()
    await hec.start()
    registry = CollectorRegistry()
    cfg = SiemConfig(
        sinks=(
            SyslogSink(name="tcp", host=name, port=tcp.port, deliver="all", backoff_initial_s=0.1),
            SplunkHecSink(
                name="hec",
                url=f"http://{name}:{hec.port}",
                token_env="TEST_HEC_TOKEN",
                deliver="all",
                backoff_initial_s=0.1,
            ),
        )
    )
    forwarder = SiemForwarder(nc, topology, cfg, env={"TEST_HEC_TOKEN": HEC_TOKEN}, registry=registry)
    await forwarder.start()
    try:
        events, _ = _batch("g", 5)
        await _publish(js, topology, events)
        # Generous: a name lookup may wait on this machine's DNS server.
        async with asyncio.timeout(30):
            for sink in ("tcp", "hec"):
                while not registry.get_sample_value(
                    "nexus_siem_failures_total", {"sink": sink, "kind": "outage"}
                ):
                    await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        assert not tcp.arrivals.ids and not hec.arrivals.ids and hec.requests == 0
    finally:
        await forwarder.stop()
        await tcp.stop()
        await hec.stop()
