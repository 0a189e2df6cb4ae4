"""Agent attestation on CONNECT (real Ed25519, real Valkey for the nonce
store shared by two proxy nodes): valid -> no MITM; anything else -> bumped."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
import valkey.asyncio as avalkey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ingress.proxy.attestation import HEADER, public_key_b64, sign
from ingress.proxy.service import hub_agent_keys
from nexus.sim.server import SimServer
from streams.agents import AgentRecord, encode_record
from streams.events_proxy import ProxyConnection
from streams.topology import Topology
from tests.proxy.conftest import Events, MakeProxy, client_context, issuer_cn, tls_through
from tests.proxy.pki import Pki

pytestmark = pytest.mark.integration

AGENT = "0b6c1f5e-agent-7"


@pytest.fixture
async def shared_valkey(valkey_url: str, valkey_prefix: str) -> AsyncIterator[Any]:
    client = avalkey.from_url(valkey_url)  # type: ignore[no-untyped-call]
    yield client
    keys = [k async for k in client.scan_iter(match=f"{valkey_prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def _write_keys(path: Path, key: Ed25519PrivateKey, *, revoked: bool = False, expires: str = "") -> None:
    lines = ["agents:", f"  - id: {AGENT}", f"    public_key: {public_key_b64(key)}"]
    if revoked:
        lines.append("    revoked: true")
    if expires:
        lines.append(f"    expires_at: {expires}")
    path.write_text("\n".join(lines) + "\n")


async def _node(
    make_proxy: MakeProxy, upstream: SimServer, keys: Path, valkey: Any, prefix: str, **kw: Any
) -> Any:
    return await make_proxy(
        upstream,
        attestation={"keys_file": str(keys)},
        valkey=valkey,
        valkey_prefix=prefix,
        **kw,
    )


async def _sees(node: Any, host: str, header: str | None, pki: Pki, proxy_ca: Path) -> str:
    """Which CA the client sees for host when it sends header."""
    ctx = client_context(pki.ca_path, proxy_ca)
    _, writer = await tls_through(node, host, ctx, {HEADER: header} if header else None)
    issuer = issuer_cn(writer)
    writer.close()
    return "upstream" if "Upstream test CA" in issuer else "proxy"


async def test_attestation_decides_between_passthrough_and_bump(
    make_proxy: MakeProxy,
    upstream: SimServer,
    upstream_pki: Pki,
    proxy_ca: tuple[Path, Path],
    shared_valkey: Any,
    valkey_prefix: str,
    tmp_path: Path,
) -> None:
    key = Ed25519PrivateKey.generate()
    keys = tmp_path / "agents.yaml"
    _write_keys(keys, key)
    events = Events()
    node = await _node(make_proxy, upstream, keys, shared_valkey, valkey_prefix, events=events)
    other = await _node(make_proxy, upstream, keys, shared_valkey, valkey_prefix, node_id="px-2")
    target = "api.openai.com:443"

    valid = sign(key, AGENT, target)
    assert await _sees(node, "api.openai.com", valid, upstream_pki, proxy_ca[0]) == "upstream"
    # The same header again: on this node, and on another node (Valkey is shared).
    assert await _sees(node, "api.openai.com", valid, upstream_pki, proxy_ca[0]) == "proxy"
    assert await _sees(other, "api.openai.com", valid, upstream_pki, proxy_ca[0]) == "proxy"
    # Forged (another key), stale, and replayed to another host.
    forged = sign(Ed25519PrivateKey.generate(), AGENT, target)
    assert await _sees(node, "api.openai.com", forged, upstream_pki, proxy_ca[0]) == "proxy"
    stale = sign(key, AGENT, target, ts=int(time.time()) - 600)
    assert await _sees(node, "api.openai.com", stale, upstream_pki, proxy_ca[0]) == "proxy"
    elsewhere = sign(key, AGENT, target)
    assert await _sees(node, "api.anthropic.com", elsewhere, upstream_pki, proxy_ca[0]) == "proxy"
    # ...and that header, unused where it was meant for, still works there.
    assert await _sees(node, "api.openai.com", elsewhere, upstream_pki, proxy_ca[0]) == "upstream"

    for _ in range(100):
        if len(events.of(ProxyConnection)) >= 7:
            break
        await asyncio.sleep(0.01)
    seen = [(c.bump_status, c.attestation) for c in events.of(ProxyConnection)]
    assert seen == [
        ("attested", "valid"),
        ("bumped", "replayed"),
        ("bumped", "bad_signature"),
        ("bumped", "clock_skew"),
        ("bumped", "target_mismatch"),
        ("attested", "valid"),
    ]
    assert events.of(ProxyConnection)[0].device_id == AGENT
    assert node.metrics.value("nexus_proxy_attestation_total", {"result": "valid"}) == 2


async def test_a_revoked_or_expired_agent_is_bumped_within_two_seconds(
    make_proxy: MakeProxy,
    upstream: SimServer,
    upstream_pki: Pki,
    proxy_ca: tuple[Path, Path],
    shared_valkey: Any,
    valkey_prefix: str,
    tmp_path: Path,
) -> None:
    key = Ed25519PrivateKey.generate()
    keys = tmp_path / "agents.yaml"
    _write_keys(keys, key)
    node = await _node(make_proxy, upstream, keys, shared_valkey, valkey_prefix)
    t = "api.openai.com:443"
    assert await _sees(node, "api.openai.com", sign(key, AGENT, t), upstream_pki, proxy_ca[0]) == "upstream"
    _write_keys(keys, key, revoked=True)
    revoked_at = time.monotonic()
    while await _sees(node, "api.openai.com", sign(key, AGENT, t), upstream_pki, proxy_ca[0]) == "upstream":
        assert time.monotonic() - revoked_at < 2.0
        await asyncio.sleep(0.1)
    yesterday = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).isoformat()
    _write_keys(keys, key, expires=yesterday)
    await asyncio.sleep(1.1)
    assert await _sees(node, "api.openai.com", sign(key, AGENT, t), upstream_pki, proxy_ca[0]) == "proxy"


async def test_with_the_hub_an_enrolled_agent_passes_and_its_revocation_bumps_within_two_seconds(
    make_proxy: MakeProxy,
    upstream: SimServer,
    upstream_pki: Pki,
    proxy_ca: tuple[Path, Path],
    shared_valkey: Any,
    valkey_prefix: str,
    nats_url: str,
    topology: Topology,
) -> None:
    """A proxy in Hub mode (nexus up, nexus proxy --hub) trusts the agents
    the Hub enrolled: their records in the agents bucket, as the Hub's
    enrolment and revoke routes write them (tests/hub/test_enrolment.py
    drives those routes), not a keys file."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        kv = await js.create_key_value(bucket=topology.agents_bucket)
        key = Ed25519PrivateKey.generate()
        agent = "ag-" + "1" * 32
        record = AgentRecord(id=agent, org="acme", attestation_key=public_key_b64(key))
        await kv.put(agent, encode_record(record))
        node = await make_proxy(
            upstream,
            agent_keys=hub_agent_keys(nc, topology),
            valkey=shared_valkey,
            valkey_prefix=valkey_prefix,
        )
        t = "api.openai.com:443"
        seen = await _sees(node, "api.openai.com", sign(key, agent, t), upstream_pki, proxy_ca[0])
        assert seen == "upstream"  # attested: no MITM, the upstream's own certificate
        stranger = sign(Ed25519PrivateKey.generate(), "ag-" + "2" * 32, t)
        assert await _sees(node, "api.openai.com", stranger, upstream_pki, proxy_ca[0]) == "proxy"

        await kv.put(agent, encode_record(msgspec.structs.replace(record, status="revoked")))
        revoked_at = time.monotonic()
        while (
            await _sees(node, "api.openai.com", sign(key, agent, t), upstream_pki, proxy_ca[0]) == "upstream"
        ):
            assert time.monotonic() - revoked_at < 2.0
            await asyncio.sleep(0.05)
        print(f"\nrevoked in the agents bucket: bumped {time.monotonic() - revoked_at:.2f} s later")
    finally:
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_key_value(topology.agents_bucket)
        await nc.close()
