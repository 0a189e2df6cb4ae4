"""Vertex AI with a service account: the gateway (the real ``nexus``
gateway process, as operators run it) mints an OAuth2 access token from the
account's https token endpoint with a signed JWT assertion, caches it, and
sends it as the bearer credential; a key the endpoint does not know is a
clear 502 ``auth_failed``.  The simulated provider serves both the token
endpoint and Vertex over TLS with a certificate this test creates (trusted
by the gateway process through SSL_CERT_FILE, as a private CA would be)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from nexus.sim import SimServer, SimSettings, start_sim
from streams.keys import hash_key, new_key
from streams.topology import Topology
from tests.gateway.conftest import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
HMAC = "vertex-oauth-hmac-secret-0123456789"
SIM_KEY = "sk-sim-vertex"


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _tls(tmp: Path) -> tuple[ssl.SSLContext, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nexus-sim-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "sim.pem", tmp / "sim.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_text(_pem(key))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_path, key_path)
    return ctx, cert_path


def _account(key: rsa.RSAPrivateKey, token_uri: str) -> str:
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "sim-project",
            "private_key_id": "k1",
            "private_key": _pem(key),
            "client_email": "nexus@sim-project.iam.gserviceaccount.com",
            "token_uri": token_uri,
        }
    )


@dataclass
class VertexStack:
    sim: SimServer
    url: str
    key: str


@pytest.fixture
async def vertex(tmp_path: Path, nats_url: str, topology: Topology) -> AsyncIterator[VertexStack]:
    ssl_ctx, ca = _tls(tmp_path)
    account_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = account_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    sim = await start_sim(
        SimSettings(api_key=SIM_KEY, google_public_key_pem=public.decode()), ssl_context=ssl_ctx
    )
    vk = new_key()
    token_uri = f"{sim.root}/vertex/token"
    vertex = {"allow_private_network": True, "kind": "vertex", "base_url": f"{sim.root}/vertex"}
    options = {"project": "sim-project", "location": "us-central1"}
    config = {
        "version": 1,
        "gateway": {"request_timeout_s": 10, "node_id": "gw-vertex"},
        "orgs": [{"id": "acme"}],
        "projects": [{"id": "web", "org": "acme"}],
        "virtual_keys": [{"id": "k", "hash": hash_key(vk, HMAC.encode()), "org": "acme", "project": "web"}],
        "providers": [
            {"name": "vertex-sa", "api_key_env": "VERTEX_SA", "options": options, **vertex},
            {"name": "vertex-stranger", "api_key_env": "VERTEX_STRANGER", "options": options, **vertex},
        ],
        "models": [
            {"name": "gemini", "provider": "vertex-sa", "provider_model": "gemini-2.5-flash"},
            {"name": "gemini-stranger", "provider": "vertex-stranger", "provider_model": "gemini-2.5-flash"},
        ],
    }
    cfg = tmp_path / "nexus.yaml"
    cfg.write_bytes(msgspec.yaml.encode(config))
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "SSL_CERT_FILE": str(ca),
        "NEXUS_KEY_HMAC_SECRET": HMAC,
        "NEXUS_NATS_URL": nats_url,
        "VERTEX_SA": _account(account_key, token_uri),
        "VERTEX_STRANGER": _account(stranger, token_uri),
    }
    # One process: the test counts the tokens one gateway process mints
    # (each worker of --workers N mints its own).
    cmd = [sys.executable, "-m", "ingress.gateway.cli", "--config", str(cfg), "--port", str(port)]
    # One process: the tests count what one gateway's token cache does (with
    # the default, one worker per core, each would mint its own token).
    cmd += ["--data-dir", str(tmp_path / "data"), "--stream-prefix", topology.prefix, "--workers", "1"]
    # Its log goes to a file: an unread pipe that fills up would stall it.
    log = (tmp_path / "gateway.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                if proc.poll() is not None:
                    raise AssertionError((tmp_path / "gateway.log").read_text())
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(url.removesuffix("/v1") + "/healthz") as r:
                        if r.status == 200:
                            break
                await asyncio.sleep(0.05)
        yield VertexStack(sim, url, vk)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        await sim.close()


async def _chat(stack: VertexStack, model: str, stream: bool = False) -> tuple[int, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": "hello vertex"}], "stream": stream}
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {stack.key}"}) as http,
        http.post(stack.url + "/chat/completions", json=body) as r,
    ):
        return r.status, (await r.json() if not stream else await r.text())


def _token_calls(stack: VertexStack) -> int:
    return sum(1 for r in stack.sim.state.recorder.snapshot()["requests"] if r.path == "/vertex/token")


async def test_service_account_token_is_minted_cached_and_used(vertex: VertexStack) -> None:
    status, body = await _chat(vertex, "gemini")
    assert status == 200, body
    assert body["choices"][0]["message"]["content"]
    status, text = await _chat(vertex, "gemini", stream=True)
    assert status == 200 and "[DONE]" in text
    assert _token_calls(vertex) == 1  # minted once, reused while valid
    assert len(vertex.sim.state.minted_tokens) == 1
    calls = [r for r in vertex.sim.state.recorder.snapshot()["requests"] if ":generateContent" in r.path]
    assert calls and calls[0].path.startswith("/vertex/v1/projects/sim-project/locations/us-central1/")


async def test_unknown_service_account_is_a_clear_502(vertex: VertexStack) -> None:
    status, body = await _chat(vertex, "gemini-stranger")
    assert status == 502, body
    assert body["error"]["code"] == "auth_failed"
    assert "token endpoint refused" in body["error"]["message"]
    assert not vertex.sim.state.minted_tokens


async def test_a_revoked_token_is_dropped_and_reminted(vertex: VertexStack) -> None:
    assert (await _chat(vertex, "gemini"))[0] == 200
    vertex.sim.state.minted_tokens.clear()  # Google revokes the token early
    status, body = await _chat(vertex, "gemini")
    assert status == 502 and body["error"]["code"] == "auth_failed"
    status, body = await _chat(vertex, "gemini")  # the gateway minted a fresh one
    assert status == 200, body
    assert _token_calls(vertex) == 2
