"""The provider and credential probes of the admin API, against the
simulated provider speaking each wire format, through the gateway's codecs
(``ingress.probe``): models listed where the API has a listing (OpenAI,
Anthropic), a one-token chat elsewhere (Cohere); a wrong secret refused
with our reason and a canonical code, the secret never echoed; the SSRF
guard at connect time; the timeout; bad input 4xx."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest

from nexus.sim.server import SimServer, start_sim
from nexus.sim.settings import SimSettings
from tests.hub.conftest import Client, RunningHub

pytestmark = pytest.mark.integration

A = "/api/admin"
SECRET = "sk-probe-3b4c5d6e7f8091a2b3c4d5e6f708192a"
WRONG = "sk-wrong-0000111122223333444455556666777788"
SIM_MODELS = ["sim-embed", "sim-large", "sim-small"]


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    server = await start_sim(SimSettings(api_key=SECRET), host="127.0.0.1", port=0)
    yield server
    await server.close()


def clean(raw: bytes) -> bool:
    return all(s.encode() not in raw and s[5:-5].encode() not in raw for s in (SECRET, WRONG))


async def provider(admin: Client, name: str, kind: str, base_url: str, *, private: bool = True) -> None:
    body = {"name": name, "kind": kind, "base_url": base_url, "allow_private_network": private}
    ans = await admin.post(f"{A}/providers", body)
    assert ans.status == 201, ans


async def credential(admin: Client, rid: str, prov: str, secret: str) -> None:
    ans = await admin.post(f"{A}/credentials", {"id": rid, "provider": prov, "secret": secret})
    assert ans.status == 201, ans


async def test_probes_list_models_and_check_credentials(
    hub: RunningHub, admin: Client, sim: SimServer
) -> None:
    # OpenAI format: the listing, with the credential from the vault.
    assert (await admin.patch(f"{A}/providers/sim", {"base_url": sim.url})).status == 200
    await credential(admin, "sim-good", "sim", SECRET)
    await credential(admin, "sim-bad", "sim", WRONG)
    ans = await admin.post(f"{A}/credentials/sim-good/probe", {})
    assert ans.status == 200, ans
    r = ans.json["result"]
    assert (r["ok"], r["method"], r["status"], r["models"]) == (True, "models", 200, SIM_MODELS), ans
    assert clean(ans.raw)
    # The provider checked the secret it was given.
    assert sim.state.recorder.snapshot()["requests"][-1].path == "/v1/models"

    ans = await admin.post(f"{A}/credentials/sim-bad/probe", {})
    r = ans.json["result"]
    assert ans.status == 200 and (r["ok"], r["status"], r["error"]) == (False, 401, "auth_failed"), ans
    assert r["reason"] == "the provider refused the credential (HTTP 401)" and clean(ans.raw)

    # The provider probe: no credential of its own yet (refused), then with
    # one of its vault credentials, then with its own.
    ans = await admin.post(f"{A}/providers/sim/probe", {})
    assert ans.json["result"]["status"] == 401 and ans.json["credential"] == ""
    ans = await admin.post(f"{A}/providers/sim/probe", {"credential": "sim-good"})
    assert ans.json["result"]["models"] == SIM_MODELS and ans.json["credential"] == "sim-good"
    assert (await admin.patch(f"{A}/providers/sim", {"credential": "sim-good"})).status == 200
    ans = await admin.post(f"{A}/providers/sim/probe", {})
    assert ans.json["result"]["ok"] and ans.json["credential"] == "sim-good" and clean(ans.raw)

    # Anthropic format: its own listing (x-api-key, anthropic-version from the codec).
    await provider(admin, "claude", "anthropic", f"{sim.root}/anthropic")
    await credential(admin, "claude-key", "claude", SECRET)
    ans = await admin.post(f"{A}/credentials/claude-key/probe", {})
    r = ans.json["result"]
    assert (r["ok"], r["method"], r["models"]) == (True, "models", SIM_MODELS), ans

    # Cohere: no listing; a one-token chat with the model named (or the catalogue's).
    await provider(admin, "coh", "cohere", f"{sim.root}/cohere")
    await credential(admin, "coh-key", "coh", SECRET)
    ans = await admin.post(f"{A}/credentials/coh-key/probe", {})
    assert ans.json["result"]["error"] == "invalid_request" and "name a model" in ans.json["result"]["reason"]
    ans = await admin.post(f"{A}/credentials/coh-key/probe", {"model": "command-r"})
    r = ans.json["result"]
    assert (r["ok"], r["method"], r["status"], r["models"]) == (True, "chat", 200, []), ans
    await credential(admin, "coh-bad", "coh", WRONG)
    ans = await admin.post(f"{A}/credentials/coh-bad/probe", {"model": "command-r"})
    assert ans.json["result"]["error"] == "auth_failed" and clean(ans.raw)

    # A credential sealed for another provider is not used for this one.
    ans = await admin.post(f"{A}/providers/sim/probe", {"credential": "claude-key"})
    assert ans.status == 422 and ans.json["error"]["field"] == "credential"
    # Bad input.
    assert (await admin.post(f"{A}/providers/sim/probe", {"timeout_s": 0})).status == 422
    assert (await admin.post(f"{A}/providers/sim/probe", {"timeout_s": 31})).status == 422
    assert (await admin.post(f"{A}/providers/sim/probe", {"secret": "x"})).status == 422
    assert (await admin.post(f"{A}/providers/nope/probe", {})).status == 404
    assert (await admin.post(f"{A}/credentials/nope/probe", {})).status == 404


async def test_the_ssrf_guard_and_the_timeout(hub: RunningHub, admin: Client) -> None:
    hang = await start_sim(SimSettings(api_key=SECRET, hang=True), host="127.0.0.1", port=0)
    try:
        # This machine's own name resolves to loopback: refused when the
        # provider does not allow private networks, at connect time.
        host = socket.gethostname()
        await provider(admin, "lan", "openai", f"http://{host}:{hang.port}/v1", private=False)
        await credential(admin, "lan-key", "lan", SECRET)
        ans = await admin.post(f"{A}/credentials/lan-key/probe", {})
        r = ans.json["result"]
        assert (r["ok"], r["error"]) == (False, "refused") and "non-public address" in r["reason"], ans
        assert hang.state.recorder.count == 0  # nothing reached it

        await provider(admin, "slow", "openai", hang.url)
        await credential(admin, "slow-key", "slow", SECRET)
        ans = await admin.post(f"{A}/credentials/slow-key/probe", {"timeout_s": 0.5})
        r = ans.json["result"]
        assert (r["ok"], r["error"], r["reason"]) == (False, "timeout", "no answer within 0.5 s"), ans
        assert clean(ans.raw)
    finally:
        await hang.close()
