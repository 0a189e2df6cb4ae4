"""The vault in the Hub's control state, on a real NATS: credentials stored
sealed, referenced by providers, replaced and deleted (their old data keys
purged), key versions rotated and retired; what the state, the snapshot
and the stream hold; and replay after a rotation and a retirement."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from nats.aio.client import Client as NATS

from hub.commands import DomainError, Replace, Upsert
from hub.compile import compile_config
from hub.control import ControlPlane
from hub.state import CREDENTIAL, HubState, fold
from hub.store import ConfigStore
from hub.vault.commands import AddVaultKey
from hub.vault.service import VaultService, VaultUnavailable, key_versions
from streams.config import Provider
from streams.config_validation import validate_config
from streams.config_vault import CredentialSpec
from streams.events import now_ms, uuid7
from streams.topology import Topology
from streams.vault.envelope import Binding, open_secret
from streams.vault.keyring import Keyring, VaultError, new_version
from streams.vault.keystore import KeyStore
from streams.vault.master import MasterKeys, new_master_key, parse_master_keys
from tests.hub.conftest import demo_config, import_config

pytestmark = pytest.mark.integration

SECRET = "sk-live-4d1f0b9a8c7e6d5f4a3b2c1d0e9f8a7b"
ACTOR = "nrn:nexus:iam::user/admin"


def env() -> dict[str, Any]:
    return {"id": uuid7(), "actor": ACTOR, "at_ms": now_ms()}


def master() -> MasterKeys:
    return parse_master_keys(f"k1:{new_master_key()}", "test")


async def stream_bytes(nc: NATS, topology: Topology) -> bytes:
    store = ConfigStore(nc.jetstream(), topology)
    last = await store.last_seq()
    return b"\n".join([data async for _, data in store.read(1, until=last)])


async def vault_of(control: ControlPlane, nc: NATS, topology: Topology, m: MasterKeys) -> VaultService:
    return VaultService(control, KeyStore(nc.jetstream(), topology), m)


def openai_spec(rid: str = "openai-prod", provider: str = "sim") -> CredentialSpec:
    return CredentialSpec(id=rid, provider=provider, org="", description="production key")


async def test_a_stored_credential_is_ciphertext_everywhere_and_opens_with_the_master_key(
    control: ControlPlane, nc: NATS, topology: Topology
) -> None:
    await import_config(control, demo_config())
    m = master()
    vault = await vault_of(control, nc, topology, m)
    await vault.store(control.execute, env(), openai_spec(), SECRET)
    res = control.state.get(CREDENTIAL, "openai-prod")
    assert res is not None and res.secret is not None
    assert res.secret.last4 == SECRET[-4:] and len(res.secret.fingerprint) == 16
    # The first credential brought the first key version.
    assert [r.spec.version for r in control.state.all("vault-key")] == [1]
    # The snapshot carries the sealed secret and the key version, not the secret.
    cfg, _ = compile_config(control.state)
    validate_config(cfg)
    assert [c.id for c in cfg.vault.credentials] == ["openai-prod"]
    assert [k.version for k in cfg.vault.keys] == [1]
    blob = msgspec.json.encode(cfg) + await stream_bytes(nc, topology)
    assert SECRET.encode() not in blob and SECRET[3:19].encode() not in blob
    # ...and it opens with the wrapped key from the bucket and the master key.
    assert await vault.open("openai-prod") == SECRET
    stored = await vault.keystore.get(res.secret.sealed.dek)
    assert stored is not None and stored.key.kek == 1 and SECRET.encode() not in msgspec.json.encode(stored)
    # Without the master key (another one), nothing opens.
    with pytest.raises(VaultError, match="check value differs"):
        open_secret(
            res.secret.sealed, stored.key, Binding("openai-prod", "sim"), Keyring(master(), cfg.vault.keys)
        )


async def test_providers_reference_credentials_of_their_own_only(
    control: ControlPlane, nc: NATS, topology: Topology
) -> None:
    await import_config(control, demo_config())
    vault = await vault_of(control, nc, topology, master())
    await vault.store(control.execute, env(), openai_spec(), SECRET)
    sim = control.state.get("provider", "sim")
    assert sim is not None
    await control.execute(
        Replace(
            **env(),
            aggregate="provider",
            rid="sim",
            spec=msgspec.structs.replace(sim.spec, credential="openai-prod"),
        )
    )
    # A credential sealed for another provider cannot be used by this one.
    other = Provider(name="other", base_url="https://api.example.com/v1", credential="openai-prod")
    with pytest.raises(DomainError) as exc:
        await control.execute(Upsert(**env(), aggregate="provider", rid="other", spec=other))
    assert exc.value.status == 422 and "sealed for provider 'sim'" in exc.value.message
    # A credential for a provider that does not exist is refused, naming the field.
    with pytest.raises(DomainError) as exc:
        await vault.store(control.execute, env(), openai_spec("x", provider="nope"), SECRET)
    assert exc.value.status == 422 and exc.value.field == "provider"
    # ...and its data key did not linger in the bucket.
    deks = [s.dek async for s in vault.keystore.scan()]
    assert len(deks) == 1
    # Deleting the credential the provider uses is refused.
    with pytest.raises(DomainError) as exc:
        await vault.delete(control.execute, env(), "openai-prod")
    assert exc.value.status == 409 and exc.value.code == "in_use"
    # Provider and org are sealed in: an edit may not move them.
    with pytest.raises(DomainError) as exc:
        await control.execute(
            Replace(
                **env(),
                aggregate=CREDENTIAL,
                rid="openai-prod",
                spec=CredentialSpec(id="openai-prod", provider="other"),
            )
        )
    assert exc.value.field == "provider"
    await control.execute(
        Replace(
            **env(),
            aggregate=CREDENTIAL,
            rid="openai-prod",
            spec=msgspec.structs.replace(openai_spec(), description="rotated quarterly"),
        )
    )
    res = control.state.get(CREDENTIAL, "openai-prod")
    assert res is not None and res.spec.description == "rotated quarterly" and res.secret is not None


async def test_replacing_or_deleting_shreds_the_old_data_key(
    control: ControlPlane, nc: NATS, topology: Topology
) -> None:
    await import_config(control, demo_config())
    vault = await vault_of(control, nc, topology, master())
    await vault.store(control.execute, env(), openai_spec(), SECRET)
    first = control.state.get(CREDENTIAL, "openai-prod")
    assert first is not None and first.secret is not None
    old_dek = first.secret.sealed.dek
    await vault.replace_secret(control.execute, env(), "openai-prod", "sk-new-0123456789abcdef0123456789")
    now = control.state.get(CREDENTIAL, "openai-prod")
    assert now is not None and now.secret is not None and now.secret.sealed.dek != old_dek
    assert await vault.open("openai-prod") == "sk-new-0123456789abcdef0123456789"
    # The old ciphertext is still in the CONFIG stream (kept forever), and
    # nothing can open it any more: its data key is gone.
    assert first.secret.sealed.ciphertext.encode() in await stream_bytes(nc, topology)
    assert await vault.keystore.get(old_dek) is None
    await vault.delete(control.execute, env(), "openai-prod")
    assert control.state.get(CREDENTIAL, "openai-prod") is None
    assert await vault.keystore.get(now.secret.sealed.dek) is None


async def test_rotation_rewraps_and_retirement_fails_closed_and_replay_matches(
    control: ControlPlane, nc: NATS, topology: Topology
) -> None:
    await import_config(control, demo_config())
    m = master()
    vault = await vault_of(control, nc, topology, m)
    for i in range(20):
        await vault.store(control.execute, env(), openai_spec(f"c{i}"), f"{SECRET}{i:02d}")
    before = await vault.keystore.get(control.state.get(CREDENTIAL, "c0").secret.sealed.dek)  # type: ignore[union-attr]
    assert before is not None and before.key.kek == 1
    await vault.rotate(control.execute, env())
    progress = await vault.start_rewrap()
    assert (progress.target_version, progress.rewrapped, progress.failed, progress.error) == (2, 20, 0, "")
    assert await vault.count_on(1) == 0
    # Retiring the version in service is refused; the old one is not.
    with pytest.raises(DomainError, match="the one in service"):
        await vault.retire(control.execute, env(), 2, reason="", force=False)
    await vault.retire(control.execute, env(), 1, reason="quarterly", force=False)
    # Every credential still opens; an envelope saved before the rotation
    # (a backup, a node's old cache) fails closed, naming the credential.
    for i in range(20):
        assert await vault.open(f"c{i}") == f"{SECRET}{i:02d}"
    c0 = control.state.get(CREDENTIAL, "c0")
    assert c0 is not None and c0.secret is not None
    with pytest.raises(VaultError) as exc:
        open_secret(c0.secret.sealed, before.key, Binding("c0", "sim"), vault.keyring(control.state))
    assert str(exc.value) == "credential 'c0': its data key cannot be opened: key version 1 is retired"
    # Replay: the fold of the whole stream is the live state, after the
    # rotation and the retirement.
    store = ConfigStore(nc.jetstream(), topology)
    events = [item async for item in store.read(1, until=await store.last_seq())]
    replayed = fold(HubState(), events)
    assert replayed.seq == control.state.seq and replayed.skipped == 0
    assert replayed.items == control.state.items
    assert compile_config(replayed)[0] == compile_config(control.state)[0]


async def test_retiring_with_keys_left_needs_force_and_those_fail_closed(
    control: ControlPlane, nc: NATS, topology: Topology
) -> None:
    await import_config(control, demo_config())
    vault = await vault_of(control, nc, topology, master())
    await vault.store(control.execute, env(), openai_spec(), SECRET)
    assert vault.master is not None
    await control.execute(AddVaultKey(**env(), key=new_version(vault.master, key_versions(control.state))))
    # A new version, no rewrap yet: version 1 still wraps one data key.
    with pytest.raises(DomainError) as exc:
        await vault.retire(control.execute, env(), 1, reason="", force=False)
    assert exc.value.code == "in_use" and "1 data key(s)" in exc.value.message
    _, remaining = await vault.retire(control.execute, env(), 1, reason="compromised", force=True)
    assert remaining == 1
    with pytest.raises(
        VaultError, match="credential 'openai-prod': its data key cannot be opened: key version 1 is retired"
    ):
        await vault.open("openai-prod")
    # The rewrap pass cannot move it either: it reports it, by credential.
    progress = await vault.rewrap()
    assert progress.failed == 1 and progress.failures[0].credential == "openai-prod"
    assert "retired" in progress.failures[0].error


async def test_a_hub_without_a_master_key_says_so(
    control: ControlPlane, nc: NATS, topology: Topology
) -> None:
    await import_config(control, demo_config())
    vault = VaultService(control, KeyStore(nc.jetstream(), topology), None)

    with pytest.raises(VaultUnavailable, match="NEXUS_VAULT_MASTER_KEY"):
        await vault.store(control.execute, env(), openai_spec(), SECRET)
