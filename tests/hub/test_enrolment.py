"""Agent CA and enrolment, server side, on a running Hub: one-time tokens
(shown once, stored hashed, expiring, single use even when two devices race,
revocable), the device's mTLS and Ed25519 attestation requests signed by the
agent CA (chain, key usage, 90 days, the agent id as subject), audited;
revoking the agent is seen by a proxy's attestation check through the
agents bucket within 2 s (measured and printed)."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import stat
import time
from typing import Any

import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from nats.aio.client import Client as NATS

from ingress.proxy.attestation import AttestationVerifier, HubAgentKeys, LocalNonces, sign
from streams.agents import AgentDirectory
from streams.topology import Topology
from tests.hub.conftest import Client, RunningHub
from tests.hub.device import Device

pytestmark = pytest.mark.integration

A = "/api/admin"


async def token_for(admin: Client, org: str = "demo-org", ttl_s: int = 3600) -> str:
    ans = await admin.post(f"{A}/enrolment-tokens", {"org": org, "description": "laptops", "ttl_s": ttl_s})
    assert ans.status == 201, ans
    return str(ans.json["token"])


async def bucket_bytes(nc: NATS, name: str) -> bytes:
    kv = await nc.jetstream().key_value(name)
    out = b""
    for key in await kv.keys():
        entry = await kv.get(key)
        out += key.encode() + (entry.value or b"")
    return out


async def admin_records(nc: NATS, topology: Topology) -> list[dict[str, Any]]:
    """Every admin audit record on the ADMIN stream (as stored, before the
    audit processor chains them)."""
    js = nc.jetstream()
    last = (await js.stream_info(topology.admin_stream)).state.last_seq
    out = []
    for seq in range(1, last + 1):
        msg = await js.get_msg(topology.admin_stream, seq)
        if msg.data:
            out.append(msgspec.json.decode(msg.data))
    return out


async def test_enrolment_signs_the_device_keys_once(
    hub: RunningHub, admin: Client, nc: NATS, topology: Topology
) -> None:
    anon = Client(hub.url)
    try:
        issued = await admin.post(f"{A}/enrolment-tokens", {"org": "demo-org", "ttl_s": 600})
        assert issued.status == 201, issued
        token, item = issued.json["token"], issued.json["item"]
        assert token.startswith("enroll-") and len(token) == 71 and item["status"] == "active"
        # Stored hashed: the bucket holds its SHA-256, never the token.
        stored = await bucket_bytes(nc, topology.enrolment_bucket)
        assert hashlib.sha256(token.encode()).hexdigest().encode() in stored and token.encode() not in stored
        listed = await admin.get(f"{A}/enrolment-tokens")
        assert [t["id"] for t in listed.json["items"]] == [item["id"]] and token.encode() not in listed.raw

        device = Device()
        bad = await anon.post("/api/agents/enrol", {**device.enrol_body(token), "csr": "not a csr"})
        assert bad.status == 422 and bad.json["error"]["field"] == "csr"
        # An attestation request signed by another key than the one it names: refused...
        forged = device.enrol_body(token)
        forged["attestation_csr"] = forged["attestation_csr"].replace("A", "B", 1)
        assert (await anon.post("/api/agents/enrol", forged)).status == 422
        # ...and neither burnt the token.
        ans = await anon.post("/api/agents/enrol", device.enrol_body(token))
        assert ans.status == 201, ans
        got = ans.json
        agent_id = got["agent_id"]
        ca = x509.load_pem_x509_certificate(got["ca_certificate"].encode())
        mtls = x509.load_pem_x509_certificate(got["certificate"].encode())
        attest = x509.load_pem_x509_certificate(got["attestation_certificate"].encode())
        for cert in (mtls, attest):
            cert.verify_directly_issued_by(ca)
            assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == agent_id
            days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
            assert 89 <= days <= 90
        assert mtls.public_key().public_numbers() == device.tls_key.public_key().public_numbers()  # type: ignore[union-attr]
        eku = mtls.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        with pytest.raises(x509.ExtensionNotFound):
            attest.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
        raw = device.attestation_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        assert isinstance(attest.public_key(), ed25519.Ed25519PublicKey)
        assert (
            attest.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            == raw
        )
        assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)

        # Single use; the same answer for a token that never existed.
        again = await anon.post("/api/agents/enrol", Device().enrol_body(token))
        assert again.status == 401 and again.error == "invalid_credentials"
        never = await anon.post("/api/agents/enrol", Device().enrol_body("enroll-" + "0" * 64))
        assert never.json["error"]["message"] == again.json["error"]["message"]

        # Two devices racing for one token: exactly one enrols.
        raced = await token_for(admin)
        answers = await asyncio.gather(
            *(anon.post("/api/agents/enrol", Device().enrol_body(raced, f"racer-{i}")) for i in range(5))
        )
        assert sorted(a.status for a in answers) == [201, 401, 401, 401, 401]

        # Revoked and expired tokens enrol nothing.
        revoked = await admin.post(f"{A}/enrolment-tokens", {"org": "demo-org"})
        rid = revoked.json["item"]["id"]
        ans = await admin.post(f"{A}/enrolment-tokens/{rid}/revoke")
        assert ans.status == 200 and ans.json["status"] == "revoked"
        assert (await admin.post(f"{A}/enrolment-tokens/{rid}/revoke")).status == 409
        assert (
            await anon.post("/api/agents/enrol", Device().enrol_body(revoked.json["token"]))
        ).status == 401
        short = await token_for(admin, ttl_s=1)
        await asyncio.sleep(1.2)
        assert (await anon.post("/api/agents/enrol", Device().enrol_body(short))).status == 401
        statuses = {t["id"]: t["status"] for t in (await admin.get(f"{A}/enrolment-tokens")).json["items"]}
        assert (
            statuses[item["id"]] == "used" and statuses[rid] == "revoked" and "expired" in statuses.values()
        )

        # Bad input.
        for body, field in (
            ({"org": "nope"}, "org"),
            ({"ttl_s": 0}, "ttl_s"),
            ({"ttl_s": 8 * 86400}, "ttl_s"),
        ):
            bad = await admin.post(f"{A}/enrolment-tokens", body)
            assert bad.status == 422 and bad.json["error"]["field"] == field, bad
        assert (await anon.post("/api/agents/enrol", {"token": token})).status == 422
        assert (await admin.get(f"{A}/agents/ag-{'0' * 32}")).status == 404

        # The agent as admins see it; the enrolment in the audit trail.
        # ...and a thing in the fleet registry, with its sync token (shown once).
        assert got["sync_token"].startswith("nxt_")
        thing = await admin.get(f"{A}/things/{agent_id}")
        assert thing.status == 200 and thing.json["item"]["spec"]["type"] == "agent", thing
        assert thing.json["status"] == "enrolled" and thing.json["item"]["spec"]["org"] == "demo-org"
        assert got["sync_token"].encode() not in thing.raw
        view = (await admin.get(f"{A}/agents/{agent_id}")).json
        assert view["org"] == "demo-org" and view["status"] == "enrolled" and view["has_attestation_key"]
        assert view["enrolled_with"] == item["id"] and view["mtls_serial"] == format(mtls.serial_number, "x")
        trail = [r for r in await admin_records(nc, topology) if r.get("action") == "agent:enrol"]
        assert any(
            r.get("resource", "").endswith(f"agent/{agent_id}") and r.get("status") == 201 for r in trail
        ), trail
        assert any(r.get("status") == 401 and r.get("decision") == "refused" for r in trail), trail
        key_file = hub.server.settings.data_dir / "agent-ca" / "agent-ca.key"
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    finally:
        await anon.close()


async def test_revocation_reaches_the_proxys_attestation_check_within_2_s(
    hub: RunningHub, admin: Client, nc: NATS, topology: Topology
) -> None:
    device = Device()
    anon = Client(hub.url)
    try:
        ans = await anon.post("/api/agents/enrol", device.enrol_body(await token_for(admin)))
        assert ans.status == 201, ans
    finally:
        await anon.close()
    agent_id = ans.json["agent_id"]
    # The proxy's side: its verifier asks the agents bucket (through a
    # connection of its own), cached at most 1 s.
    verifier = AttestationVerifier(HubAgentKeys(AgentDirectory(nc.jetstream(), topology)), LocalNonces())
    target = "api.openai.com:443"
    verdict = await verifier.check(sign(device.attestation_key, agent_id, target), target)
    assert verdict.valid, verdict
    other = await verifier.check(sign(Device().attestation_key, agent_id, target), target)
    assert other.reason == "bad_signature"
    assert (await verifier.check(sign(device.attestation_key, "ag-unknown", target), target)).reason == (
        "unknown_agent"
    )

    revoked = await admin.post(f"{A}/agents/{agent_id}/revoke", {"reason": "laptop stolen"})
    assert revoked.status == 200 and revoked.json["status"] == "revoked", revoked
    start = time.monotonic()
    while True:
        verdict = await verifier.check(sign(device.attestation_key, agent_id, target), target)
        if verdict.reason == "revoked":
            break
        assert verdict.valid and time.monotonic() - start < 2.0, verdict
        await asyncio.sleep(0.05)
    print(f"\nagent revocation seen by the proxy's check {time.monotonic() - start:.2f} s after the answer")
    assert (await admin.post(f"{A}/agents/{agent_id}/revoke", {})).status == 409
    # Its thing is revoked with it.
    thing = (await admin.get(f"{A}/things/{agent_id}")).json
    assert thing["status"] == "revoked", thing
    listed = (await admin.get(f"{A}/agents")).json["items"]
    assert [(a["id"], a["status"], a["revoke_reason"]) for a in listed] == [
        (agent_id, "revoked", "laptop stolen")
    ]
    record = msgspec.json.decode(
        (await (await nc.jetstream().key_value(topology.agents_bucket)).get(agent_id)).value
    )
    assert record["status"] == "revoked" and record["revoked_at_ms"] <= int(
        dt.datetime.now(dt.UTC).timestamp() * 1000
    )


async def test_revoking_its_thing_revokes_the_agent(
    hub: RunningHub, admin: Client, nc: NATS, topology: Topology
) -> None:
    device = Device()
    anon = Client(hub.url)
    try:
        ans = await anon.post("/api/agents/enrol", device.enrol_body(await token_for(admin)))
    finally:
        await anon.close()
    agent_id = ans.json["agent_id"]
    verifier = AttestationVerifier(HubAgentKeys(AgentDirectory(nc.jetstream(), topology)), LocalNonces())
    target = "api.anthropic.com:443"
    assert (await verifier.check(sign(device.attestation_key, agent_id, target), target)).valid
    revoked = await admin.post(f"{A}/things/{agent_id}/revoke", {"reason": "left the company"})
    assert revoked.status == 200, revoked
    agent = (await admin.get(f"{A}/agents/{agent_id}")).json
    assert agent["status"] == "revoked" and agent["revoke_reason"] == "left the company"
    start = time.monotonic()
    while (await verifier.check(sign(device.attestation_key, agent_id, target), target)).reason != "revoked":
        assert time.monotonic() - start < 2.0
        await asyncio.sleep(0.05)
