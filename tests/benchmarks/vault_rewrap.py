"""Benchmark (issue 15, must-show 3): a rotation's rewrap of 10,000 credentials
on a real NATS, against the issue's budget of 30 s.

    python tests/benchmarks/vault_rewrap.py [--credentials 10000] [--nats nats://127.0.0.1:4222]

The Hub's state holds N credentials, sealed as ``VaultService.store`` seals
them (the CONFIG events are appended in bulk: N commands one by one would
measure the decide path, not the rewrap); the rotation is a real command
and the pass the Hub's own (``hub.vault.rewrap``).  Printed beside it, from
the same run on the same bucket: the time to list the bucket alone (the
floor every pass pays) and N sequential compare-and-set updates of 200
entries scaled to N (what a pass without batching or concurrency costs).
Everything is under a fresh prefix, deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import msgspec
import nats
from nats.aio.client import Client as NATS

from hub.control import ControlPlane
from hub.importer import apply_plan, plan
from hub.state import CREDENTIAL
from hub.store import ConfigStore
from hub.vault.rewrap import Progress
from hub.vault.service import VaultService
from streams.config_vault import CredentialSpec
from streams.events import now_ms, uuid7
from streams.events_config import CredentialStored, encode_event, encode_spec
from streams.topology import Topology
from streams.vault.envelope import Binding, last4, seal
from streams.vault.keystore import KeyStore, Stored
from streams.vault.master import MasterKeys, new_master_key, parse_master_keys

BUDGET_S = 30.0
ACTOR = "nrn:nexus:iam::user/bench"
SECRET = "sk-bench-0123456789abcdef0123456789abcdef"


@dataclass
class Figures:
    credentials: int
    seconds: float  # the pass after the rotation
    list_seconds: float  # listing the bucket alone
    sequential_estimate_s: float  # one-at-a-time compare-and-set, scaled to N
    progress: Progress


def _env(suffix: str = "") -> dict[str, object]:
    return {"id": uuid7() + suffix, "actor": ACTOR, "at_ms": now_ms()}


async def populate(control: ControlPlane, vault: VaultService, nc: NATS, topology: Topology, n: int) -> None:
    """N sealed credentials of provider ``sim``: the first through the
    service (it brings key version 1), the rest appended in bulk."""
    await vault.store(control.execute, _env(), CredentialSpec(id="cred-0", provider="sim"), SECRET + "0")
    keyring = vault.keyring(control.state)
    js = nc.jetstream()
    sem = asyncio.Semaphore(256)

    async def one(i: int) -> None:
        rid = f"cred-{i}"
        secret = f"{SECRET}{i}"
        sealed, wrapped = seal(secret, Binding(rid, "sim"), keyring, now_ms=now_ms())
        event = CredentialStored(
            command_id=uuid7(),
            actor=ACTOR,
            aggregate=CREDENTIAL,
            aggregate_id=rid,
            spec=encode_spec(CredentialSpec(id=rid, provider="sim")),
            sealed=sealed,
            fingerprint=keyring.fingerprint(secret),
            last4=last4(secret),
        )
        async with sem:
            await vault.keystore.create(sealed.dek, wrapped)
            await js.publish(
                topology.config_subject(CREDENTIAL, rid), encode_event(event), stream=topology.config_stream
            )

    await asyncio.gather(*(one(i) for i in range(1, n)))
    await control.catch_up()


async def sequential_cas(keystore: KeyStore, sample: int) -> float:
    """Seconds for ``sample`` read + compare-and-set updates one at a time."""
    entries: list[Stored] = []
    async for stored in keystore.scan():
        entries.append(stored)
        if len(entries) == sample:
            break
    start = time.perf_counter()
    for stored in entries:
        fresh = await keystore.get(stored.dek)
        assert fresh is not None
        await keystore.replace(fresh, fresh.key)
    return time.perf_counter() - start


async def measure(nats_url: str, topology: Topology, n: int, master: MasterKeys | None = None) -> Figures:
    """Populate, rotate, rewrap; the caller deletes the topology."""
    from tests.hub.conftest import demo_config

    nc = await nats.connect(nats_url)
    control = ControlPlane(ConfigStore(nc.jetstream(), topology))
    await control.start()
    try:
        await apply_plan(control, plan(control.state, demo_config()), actor="system:import")
        m = master or parse_master_keys(f"k1:{new_master_key()}", "bench")
        vault = VaultService(control, KeyStore(nc.jetstream(), topology), m)
        await populate(control, vault, nc, topology, n)
        assert control.state.count(CREDENTIAL) == n
        start = time.perf_counter()
        listed = sum([1 async for _ in vault.keystore.scan()])
        list_s = time.perf_counter() - start
        assert listed == n, listed
        sample = min(200, n)
        seq_s = await sequential_cas(vault.keystore, sample) * n / sample
        await vault.rotate(control.execute, _env())
        progress = await vault.start_rewrap()
        return Figures(n, progress.seconds, list_s, seq_s, progress)
    finally:
        await control.stop()
        await nc.close()


async def drop(nats_url: str, topology: Topology) -> None:
    from tests.hub.conftest import drop_topology

    nc = await nats.connect(nats_url)
    try:
        await drop_topology(nc, topology)
    finally:
        await nc.close()


def report(f: Figures) -> str:
    p = f.progress
    verdict = "within" if f.seconds <= BUDGET_S and p.failed == 0 and not p.error else "NOT within"
    return (
        f"vault rewrap: {p.rewrapped:,} of {f.credentials:,} data keys rewrapped to version "
        f"{p.target_version} in {f.seconds:.2f} s ({p.rewrapped / max(f.seconds, 1e-9):,.0f}/s), "
        f"{p.failed} failed, {verdict} the {BUDGET_S:.0f} s budget\n"
        f"  same run, same bucket: listing it alone {f.list_seconds:.2f} s; one-at-a-time "
        f"compare-and-set, scaled to {f.credentials:,}: {f.sequential_estimate_s:.1f} s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--credentials", type=int, default=10_000)
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    args = parser.parse_args()
    topology = Topology(prefix=f"BENCHVAULT{uuid.uuid4().hex[:6]}".upper())

    async def run() -> Figures:
        try:
            return await measure(args.nats, topology, args.credentials)
        finally:
            await drop(args.nats, topology)

    figures = asyncio.run(run())
    print(report(figures))
    print(msgspec.json.encode(figures.progress).decode())
    return 0 if figures.seconds <= BUDGET_S and figures.progress.failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
