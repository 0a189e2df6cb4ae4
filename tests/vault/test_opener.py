"""A node opening its snapshot's sealed credentials (streams.vault.opener),
on a real NATS: only what providers reference, in memory, logged at DEBUG
without a secret; a retired version, a missing master key or another
master key leave the provider without a credential and say why by
credential id, never by secret."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client as NATS

from hub.commands import Replace
from hub.compile import compile_config
from hub.control import ControlPlane
from hub.vault.commands import AddVaultKey
from hub.vault.service import VaultService, key_versions
from ingress.pipeline.call.targets import build_routes
from streams.config_snapshot import ConfigSnapshot
from streams.config_vault import CredentialSpec
from streams.events import now_ms, uuid7
from streams.topology import Topology
from streams.vault.keyring import new_version
from streams.vault.keystore import KeyStore
from streams.vault.master import new_master_key, parse_master_keys
from streams.vault.opener import Opener, Secrets
from tests.hub.conftest import demo_config, import_config

pytestmark = pytest.mark.integration

SECRET = "sk-node-9a8b7c6d5e4f30211203f4e5d6c7b8a9"


def env() -> dict[str, Any]:
    return {"id": uuid7(), "actor": "nrn:nexus:iam::user/admin", "at_ms": now_ms()}


def leaked(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if SECRET[4:-4] in r.getMessage()]


async def test_a_node_opens_what_its_providers_use_and_fails_closed(
    control: ControlPlane, nc: NATS, topology: Topology, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await import_config(control, demo_config())
    master = parse_master_keys(f"k1:{new_master_key()}", "test")
    vault = VaultService(control, KeyStore(nc.jetstream(), topology), master)
    await vault.store(control.execute, env(), CredentialSpec(id="used", provider="sim"), SECRET)
    await vault.store(control.execute, env(), CredentialSpec(id="unused", provider="sim"), SECRET + "x")
    sim = control.state.get("provider", "sim")
    assert sim is not None
    await control.execute(
        Replace(
            **env(),
            aggregate="provider",
            rid="sim",
            spec=msgspec.structs.replace(sim.spec, credential="used"),
        )
    )
    cfg, _ = compile_config(control.state)
    node = Opener(KeyStore(nc.jetstream(), topology), parse_master_keys(f"k1:{new_master_key()}", "x"))
    node.master = master  # the node holds the Hub's master key

    opened = await node.open(cfg)
    assert dict(opened) == {"used": SECRET}  # only what a provider references
    assert repr(opened) == "Secrets(ids=['used'])" and SECRET not in str(opened)
    # The gateway's routes carry it to the provider.
    routes = build_routes(ConfigSnapshot(cfg, b"k" * 32), {}, opened)
    assert routes["gpt-4o-mini"].target.api_key == SECRET
    assert "vault: opened credential(s) used for this snapshot" in caplog.text

    # Another master key: nothing opens, the log says why by credential.
    other = Opener(node.keystore, parse_master_keys(f"k1:{new_master_key()}", "other"))
    assert len(await other.open(cfg)) == 0
    assert "credential 'used'" in caplog.text and "check value differs" in caplog.text
    # No master key at all.
    assert len(await Opener(node.keystore, None).open(cfg)) == 0
    assert "this node has no master key" in caplog.text

    # A new version without a rewrap, the old one retired by force (as after
    # a compromise): the data key is still on it and fails closed at the node.
    await control.execute(AddVaultKey(**env(), key=new_version(master, key_versions(control.state))))
    await vault.retire(control.execute, env(), 1, reason="compromised", force=True)
    cfg, _ = compile_config(control.state)
    assert len(await node.open(cfg)) == 0
    assert "credential 'used': its data key cannot be opened: key version 1 is retired" in caplog.text
    routes = build_routes(ConfigSnapshot(cfg, b"k" * 32), {}, await node.open(cfg))
    assert routes["gpt-4o-mini"].target.api_key is None
    assert not leaked(caplog), leaked(caplog)
    assert Secrets({"a": SECRET}).__repr__() == "Secrets(ids=['a'])"
