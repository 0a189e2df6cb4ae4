"""Must-show 3 (issue 15), the secrecy part: a canary secret stored through
the admin API is found nowhere at rest or in transit to operators, and it
is the credential a real request uses.

Everything runs against a private ``nats-server`` with a store directory of
its own (so its files can be read and hold only this test's data), a fresh
Postgres database, a DuckDB file, the Hub and a gateway as the processes an
operator starts (``nexus hub run``, ``nexus gateway --hub``) logging at
DEBUG, the projector and a SIEM forwarder to a real local webhook receiver
(in process, their logging captured at DEBUG too).  The simulated provider
accepts the canary as its API key and nothing else, so the request that
succeeds proves the gateway opened the sealed credential; before the
provider was given the credential, the same request was refused.

Then every place is searched for the canary, and for its base64 and hex
spellings and its middle part: the JetStream store files, a ``pg_dump`` of
the database, the DuckDB file (its bytes, and every text value in it: DuckDB
compresses strings, so the bytes alone could hide one), the logs, the SIEM
receiver's bodies.  Each place is first shown to hold this test's data (the
credential's id, the request id), so an empty or wrong place fails the
test instead of passing it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import duckdb
import nats
import pytest
from aiohttp import web

from nexus.sim.recorder import credential_fingerprint
from nexus.sim.server import start_sim
from nexus.sim.settings import SimSettings
from processors.siem import SiemForwarder
from projections.projector import Projector
from projections.settings import ProjectorSettings
from streams.config_siem import SiemConfig, WebhookSink
from streams.topology import Topology
from streams.vault.master import new_master_key
from tests.hub.conftest import Client, sign_in
from tests.hub.live import GatewayNode, wait_listening
from tests.services import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

A = "/api/admin"
DEMO = Path(__file__).resolve().parents[2] / "nexus" / "demo" / "config.yaml"


def spellings(secret: str) -> dict[str, bytes]:
    """The secret as it could appear: itself, its middle, base64 at each
    alignment (padding and edges dropped), hex, UTF-16."""
    raw = secret.encode()
    out = {"plain": raw, "middle": raw[4:-4], "hex": raw.hex().encode(), "utf16": secret.encode("utf-16-le")}
    for shift in range(3):
        enc = base64.b64encode(b"\0" * shift + raw).decode()
        # the characters that depend on the bytes around it are not kept
        out[f"base64+{shift}"] = enc[(shift * 4 + 2) // 3 + 1 : -4].encode()
        urlsafe = base64.urlsafe_b64encode(b"\0" * shift + raw).decode()
        out[f"base64url+{shift}"] = urlsafe[(shift * 4 + 2) // 3 + 1 : -4].encode()
    return out


def found_in(blob: bytes, secret: str) -> list[str]:
    return [name for name, form in spellings(secret).items() if form in blob]


def files_under(root: Path) -> Iterator[Path]:
    for p in sorted(root.rglob("*")):
        if p.is_file():
            yield p


# --- a private NATS, whose store files this test may read ------------------------------


@dataclass
class PrivateNats:
    url: str
    store: Path
    proc: subprocess.Popen[bytes]


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[PrivateNats]:
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not os.path.exists(binary):
        pytest.fail("nats-server is not installed (scripts/install-test-deps installs it)")
    port = free_port()
    store = tmp_path / "jetstream"
    log = tmp_path / "nats-server.log"
    proc = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store), "-l", str(log)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"nats://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "Server is ready" not in (log.read_text() if log.exists() else ""):
        if proc.poll() is not None:
            pytest.fail(f"nats-server exited: {log.read_text() if log.exists() else ''}")
        time.sleep(0.05)
    try:
        yield PrivateNats(url, store, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- a SIEM receiver --------------------------------------------------------------------


class WebhookReceiver:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _in(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/in", self._in)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/in"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    r = WebhookReceiver()
    await r.start()
    yield r
    await r.stop()


# --- the processes ----------------------------------------------------------------------


def _env(master_file: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
    env.update(NEXUS_VAULT_MASTER_KEY_FILE=str(master_file), NEXUS_LOG_LEVEL="DEBUG")
    return env


def start_hub(
    nats_url: str, prefix: str, pg_dsn: str, data: Path, master_file: Path
) -> tuple[subprocess.Popen[bytes], str, str, Path]:
    port = free_port()
    data.mkdir(parents=True, exist_ok=True)
    log = data / "hub.log"
    args = [
        sys.executable, "-m", "nexus.cli", "hub", "run", "--nats", nats_url, "--prefix", prefix,
        "--dsn", pg_dsn, "--port", str(port), "--data-dir", str(data), "--admin-email", "ops@example.com",
        "--import", str(DEMO),
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=_env(master_file))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        text = log.read_text()
        m = re.search(r"password\s+(\S+)", text)
        if "nexus hub: admin API on" in text and m:
            return proc, f"http://127.0.0.1:{port}", m.group(1), log
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("nexus hub run did not start:\n" + log.read_text())


def start_gateway(
    nats_url: str, prefix: str, data: Path, master_file: Path, valkey: tuple[str, str]
) -> GatewayNode:
    port = free_port()
    data.mkdir(parents=True, exist_ok=True)
    log = data / "gateway.log"
    args = [
        sys.executable, "-m", "nexus.cli", "gateway", "--hub", "--host", "127.0.0.1", "--port", str(port),
        "--node-id", "gw-canary", "--data-dir", str(data), "--stream-prefix", prefix, "--workers", "1",
    ]  # fmt: skip
    env = _env(master_file)
    env.update(NEXUS_NATS_URL=nats_url, NEXUS_VALKEY_URL=valkey[0], NEXUS_VALKEY_PREFIX=valkey[1])
    proc = subprocess.Popen(args, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env)
    return GatewayNode("gw-canary", port, proc, log)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


async def chat(gw: GatewayNode, key: str) -> tuple[int, bytes, str]:
    """Status, body and the gateway's request id."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
    async with (
        aiohttp.ClientSession() as s,
        s.post(gw.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}) as r,
    ):
        return r.status, await r.read(), r.headers.get("x-nexus-request-id", "")


async def until(pred: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await pred():  # type: ignore[operator]
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def duckdb_text(path: Path) -> bytes:
    """Every text value in every table of the DuckDB file, one per line."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        out: list[str] = []
        tables = con.execute(
            "SELECT table_catalog, table_schema, table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE'"
        ).fetchall()
        for catalog, schema, table in tables:
            for row in con.execute(f'SELECT * FROM "{catalog}"."{schema}"."{table}"').fetchall():
                out += [str(v) for v in row if v is not None]
        return "\n".join(out).encode()
    finally:
        con.close()


async def test_a_canary_secret_is_used_and_found_nowhere(
    private_nats: PrivateNats,
    receiver: WebhookReceiver,
    pg_dsn: str,
    valkey_url: str,
    valkey_prefix: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    canary = f"sk-canary-{secrets.token_hex(20)}"
    cred_id = f"canary-{secrets.token_hex(4)}"
    prefix = f"CANARY{secrets.token_hex(3)}".upper()
    topology = Topology(prefix=prefix)
    master_file = tmp_path / "master.key"
    master_file.write_text(new_master_key() + "\n")
    master_file.chmod(0o600)
    duck = tmp_path / "analytics.duckdb"
    caplog.set_level(logging.DEBUG)  # the in-process projector and SIEM forwarder

    sim = await start_sim(host="127.0.0.1", port=0, settings=SimSettings(api_key=canary))
    hub_proc, hub_url, password, hub_log = start_hub(
        private_nats.url, prefix, pg_dsn, tmp_path / "hub", master_file
    )
    gw: GatewayNode | None = None
    projector: Projector | None = None
    forwarder: SiemForwarder | None = None
    nc = await nats.connect(private_nats.url)
    admin: Client | None = None
    try:
        admin = await sign_in(hub_url, "ops@example.com", password)
        # The SIEM sink through the API; the forwarder runs its config.
        sink = {"kind": "webhook", "name": "canary-siem", "url": receiver.url, "allow_private_network": True}
        ans = await admin.post(f"{A}/siem-sinks", sink)
        assert ans.status == 201, ans
        forwarder = SiemForwarder(
            nc,
            topology,
            SiemConfig(
                sinks=(WebhookSink(name="canary-siem", url=receiver.url, allow_private_network=True),)
            ),
        )
        await forwarder.start()
        projector = Projector(
            ProjectorSettings(
                nats_url=private_nats.url, postgres_dsn=pg_dsn, duckdb_path=str(duck), topology=topology
            )
        )
        await projector.start()

        # The simulated provider at this test's sim, no credential yet.
        ans = await admin.patch(f"{A}/providers/sim", {"base_url": sim.url})
        assert ans.status == 200, ans
        issued = await admin.post(f"{A}/virtual-keys", {"org": "demo-org", "project": "demo-project"})
        assert issued.status == 201, issued
        key = issued.json["key"]
        gw = start_gateway(
            private_nats.url, prefix, tmp_path / "gw", master_file, (valkey_url, valkey_prefix)
        )
        await wait_listening(gw)

        async def refused() -> bool:
            status, _, _ = await chat(gw, key)
            return status in (401, 502, 503)

        await until(
            refused, 30, "the gateway to serve the key (refused by the provider without a credential)"
        )

        # The canary, through the API, and the provider using it.
        ans = await admin.post(f"{A}/credentials", {"id": cred_id, "provider": "sim", "secret": canary})
        assert ans.status == 201, ans
        assert ans.json["secret"]["last4"] == canary[-4:] and canary.encode() not in ans.raw
        ans = await admin.patch(f"{A}/providers/sim", {"credential": cred_id})
        assert ans.status == 200, ans
        got: list[tuple[int, bytes, str]] = []

        async def served() -> bool:
            got.append(await chat(gw, key))
            return got[-1][0] == 200

        await until(served, 30, "a request served with the canary credential")
        # The provider checked the canary: it saw it presented (by fingerprint).
        seen = [r.credential for r in sim.state.recorder.snapshot()["requests"]]
        assert seen[-1] == credential_fingerprint(canary) and b"choices" in got[-1][1]
        request_id = got[-1][2]
        assert request_id

        # Every place has this test's data before it is searched.
        async def projected() -> bool:
            conn = await asyncpg.connect(pg_dsn)
            try:
                n = await conn.fetchval(
                    "SELECT count(*) FROM traffic_event t WHERE strpos(t::text, $1) > 0", request_id
                )
            finally:
                await conn.close()
            return bool(n)

        await until(projected, 60, "the request in the projections")

        async def forwarded() -> bool:
            return any(cred_id.encode() in b for b in receiver.bodies)

        await until(forwarded, 60, "the credential's audit record at the SIEM receiver")
    finally:
        if admin is not None:
            await admin.close()
        if gw is not None:
            gw.stop()
        stop(hub_proc)
        if forwarder is not None:
            await forwarder.stop()
        if projector is not None:
            await projector.stop()
        await nc.close()
        await sim.close()

    places: dict[str, bytes] = {}
    for f in files_under(private_nats.store):
        places[f"jetstream:{f.relative_to(private_nats.store)}"] = f.read_bytes()
    dump = subprocess.run(
        ["pg_dump", "--no-owner", pg_dsn], capture_output=True, timeout=120, check=True
    ).stdout
    places["pg_dump"] = dump
    places["duckdb:file"] = duck.read_bytes()
    places["duckdb:values"] = duckdb_text(duck)
    places["log:hub"] = hub_log.read_bytes()
    places["log:gateway"] = gw.log.read_bytes() if gw is not None else b""
    places["log:in-process"] = "\n".join(r.getMessage() for r in caplog.records).encode()
    places["siem"] = b"\n".join(receiver.bodies)

    # Not vacuous: each place holds this test's data.
    store_blob = b"".join(v for k, v in places.items() if k.startswith("jetstream:"))
    assert cred_id.encode() in store_blob
    assert cred_id.encode() in dump and request_id.encode() in dump
    assert request_id.encode() in places["duckdb:values"]
    # DEBUG was on along the secret's whole path: sealed at the Hub, opened at the node.
    assert f"DEBUG nexus.hub.vault: vault: credential {cred_id} sealed".encode() in places["log:hub"]
    assert f"DEBUG nexus.vault vault: opened credential(s) {cred_id}".encode() in places["log:gateway"]
    assert cred_id.encode() in places["siem"] and request_id.encode() in places["siem"]
    assert found_in(b"x" + canary.encode() + b"y", canary) == ["plain", "middle"]

    leaks = {name: found_in(blob, canary) for name, blob in places.items()}
    leaks = {name: forms for name, forms in leaks.items() if forms}
    assert not leaks, f"the canary secret was found: {leaks}"
    print(
        f"\ncanary: searched {len(places)} places "
        f"({sum(len(b) for b in places.values()):,} bytes, {len(spellings(canary))} spellings): not found"
    )
