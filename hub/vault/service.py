"""The vault as the Hub runs it: sealing a secret as a credential is stored,
replacing and deleting (and crypto-shredding the old data key), rotating
and retiring key versions, and opening a secret for a probe.

Order of writes, so that no reader ever meets a dangling reference and a
crash leaves at worst an unreferenced wrapped key (which the rewrap pass
sweeps once it is old):

- store / replace: the wrapped data key goes into the vault bucket, *then*
  the CONFIG event naming it is appended; if the command is refused, the
  new wrapped key is purged again.
- replace / delete: once the event is stored, the previous data key is
  purged: the ciphertext the CONFIG stream keeps forever can then never be
  opened again, by anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from hub.commands import Command, Delete, DomainError
from hub.control import ControlPlane, Outcome
from hub.state import CREDENTIAL, VAULT_KEY, HubState
from hub.vault.commands import AddVaultKey, ReplaceSecret, RetireVaultKey, StoreCredential
from hub.vault.decide import retire_refusal
from hub.vault.rewrap import Progress, Rewrapper
from streams.config_vault import CredentialSpec, KeyVersion
from streams.events import now_ms
from streams.tasks import stop_tasks
from streams.vault.envelope import Binding, last4, open_secret, seal
from streams.vault.keyring import Keyring, VaultError, new_version
from streams.vault.keystore import KeyStore
from streams.vault.master import MasterKeys

log = logging.getLogger("nexus.hub.vault")

Execute = Callable[[Command], Awaitable[Outcome]]


class VaultUnavailable(Exception):
    """No master key in this Hub: the vault cannot seal or open."""


def key_versions(state: HubState) -> list[KeyVersion]:
    return sorted((r.spec for r in state.all(VAULT_KEY)), key=lambda k: k.version)


def referenced_deks(state: HubState) -> dict[str, str]:
    """Data key id -> the credential whose current secret it opens."""
    return {r.secret.sealed.dek: r.id for r in state.all(CREDENTIAL) if r.secret is not None}


class VaultService:
    def __init__(
        self,
        control: ControlPlane,
        keystore: KeyStore,
        master: MasterKeys | None,
        *,
        rewrap_concurrency: int = 64,
    ) -> None:
        self.control = control
        self.keystore = keystore
        self.master = master
        self.rewrapper = Rewrapper(
            keystore,
            keyring=lambda: self.keyring(self.control.state),
            referenced=lambda: referenced_deks(self.control.state),
            concurrency=rewrap_concurrency,
        )
        self._background: asyncio.Task[Progress] | None = None

    def keyring(self, state: HubState) -> Keyring:
        return Keyring(self.master, key_versions(state))

    def _require_master(self) -> MasterKeys:
        if self.master is None:
            raise VaultUnavailable(
                "the Hub has no vault master key (set NEXUS_VAULT_MASTER_KEY, _FILE or _COMMAND; "
                "docs/configuration.md)"
            )
        return self.master

    async def _ensure_version(self, execute: Execute, envelope: dict[str, Any]) -> Keyring:
        """The keyring, with a first key version added if there is none
        (the first credential ever stored)."""
        master = self._require_master()
        state = self.control.state
        live = [k for k in key_versions(state) if not k.retired]
        if not live:
            key = new_version(master, key_versions(state))
            cmd = AddVaultKey(
                **{**envelope, "id": f"{envelope['id']}:key", "expected_version": None}, key=key
            )
            with contextlib.suppress(DomainError):  # another writer added it: use theirs
                await execute(cmd)
            state = await self.control.catch_up()
        return self.keyring(state)

    async def store(
        self, execute: Execute, envelope: dict[str, Any], spec: CredentialSpec, secret: str
    ) -> Outcome:
        keyring = await self._ensure_version(execute, envelope)
        sealed, wrapped = seal(secret, Binding(spec.id, spec.provider, spec.org), keyring, now_ms=now_ms())
        await self.keystore.create(sealed.dek, wrapped)
        log.debug(
            "vault: credential %s sealed under data key %s (key version %d)", spec.id, sealed.dek, wrapped.kek
        )
        cmd = StoreCredential(
            **envelope, spec=spec, sealed=sealed, fingerprint=keyring.fingerprint(secret), last4=last4(secret)
        )
        return await self._referencing(execute, cmd, sealed.dek, previous=None)

    async def replace_secret(
        self, execute: Execute, envelope: dict[str, Any], rid: str, secret: str
    ) -> Outcome:
        current = self.control.state.get(CREDENTIAL, rid)
        if current is None or current.secret is None:
            raise DomainError(404, "not_found", f"credential {rid!r} does not exist")
        spec: CredentialSpec = current.spec
        keyring = await self._ensure_version(execute, envelope)
        sealed, wrapped = seal(secret, Binding(spec.id, spec.provider, spec.org), keyring, now_ms=now_ms())
        await self.keystore.create(sealed.dek, wrapped)
        cmd = ReplaceSecret(
            **envelope, rid=rid, sealed=sealed, fingerprint=keyring.fingerprint(secret), last4=last4(secret)
        )
        return await self._referencing(execute, cmd, sealed.dek, previous=current.secret.sealed.dek)

    async def _referencing(
        self, execute: Execute, cmd: Command, dek: str, *, previous: str | None
    ) -> Outcome:
        try:
            out = await execute(cmd)
        except BaseException:
            # Refused (or the store is away): the new data key must not linger.
            with contextlib.suppress(Exception):
                await self.keystore.purge(dek)
            raise
        if out.replayed or out.seq == 0:
            # A retried command: its first run stored its own data key; this one is unused.
            with contextlib.suppress(Exception):
                await self.keystore.purge(dek)
        elif previous is not None:
            await self._shred(previous)
        return out

    async def delete(self, execute: Execute, envelope: dict[str, Any], rid: str) -> Outcome:
        current = self.control.state.get(CREDENTIAL, rid)
        dek = current.secret.sealed.dek if current is not None and current.secret is not None else None
        out = await execute(Delete(**envelope, aggregate=CREDENTIAL, rid=rid))
        if dek is not None and not out.replayed:
            await self._shred(dek)
        return out

    async def _shred(self, dek: str) -> None:
        try:
            await self.keystore.purge(dek)
        except Exception as exc:
            # The rewrap pass sweeps what no credential references.
            log.warning(
                "vault: data key %s not purged now (%s); the next rewrap pass will", dek, type(exc).__name__
            )

    # --- key versions ----------------------------------------------------------

    async def rotate(self, execute: Execute, envelope: dict[str, Any], *, master_key: str = "") -> Outcome:
        """A new key version (from the current master key, or the one named),
        then a rewrap in the background."""
        master = self._require_master()
        key = new_version(master, key_versions(self.control.state), master_key=master_key)
        out = await execute(AddVaultKey(**envelope, key=key))
        self.start_rewrap()
        return out

    async def retire(
        self, execute: Execute, envelope: dict[str, Any], version: int, *, reason: str, force: bool
    ) -> tuple[Outcome, int]:
        """Retire ``version``; refused while data keys are still wrapped by it
        unless ``force`` (they then fail closed).  Returns how many were."""
        refusal = retire_refusal(self.control.state, version)
        if refusal is not None:
            raise refusal
        remaining = await self.count_on(version)
        if remaining and not force:
            raise DomainError(
                409,
                "in_use",
                f"{remaining} data key(s) are still wrapped by key version {version}; let the rewrap "
                "finish (POST /api/admin/vault/rewrap), or retire with force: true and they fail closed",
            )
        out = await execute(RetireVaultKey(**envelope, version=version, reason=reason))
        return out, remaining

    async def count_on(self, version: int) -> int:
        referenced = referenced_deks(self.control.state)
        n = 0
        async for stored in self.keystore.scan():
            if stored.key.kek == version and stored.dek in referenced:
                n += 1
        return n

    # --- rewrap ------------------------------------------------------------------

    def start_rewrap(self) -> asyncio.Task[Progress]:
        """Run a rewrap pass in the background (one at a time); the jobs
        scheduler calls ``rewrap`` directly."""
        if self._background is None or self._background.done():
            self._background = asyncio.create_task(self.rewrap(), name="vault-rewrap")
        return self._background

    async def rewrap(self) -> Progress:
        return await self.rewrapper.run()

    async def stop(self) -> None:
        task = self._background
        if task is not None and not task.done():
            with contextlib.suppress(Exception):
                await stop_tasks(task, within_s=5)

    # --- opening (probes) ------------------------------------------------------------

    async def open(self, rid: str) -> str:
        """A credential's secret, in memory, for a probe."""
        self._require_master()
        state = self.control.state
        res = state.get(CREDENTIAL, rid)
        if res is None or res.secret is None:
            raise DomainError(404, "not_found", f"credential {rid!r} does not exist")
        spec: CredentialSpec = res.spec
        binding = Binding(spec.id, spec.provider, spec.org)
        stored = await self.keystore.get(res.secret.sealed.dek)
        if stored is None:
            raise VaultError(f"credential {rid!r}: its data key is not in the vault bucket")
        return await asyncio.to_thread(
            open_secret, res.secret.sealed, stored.key, binding, self.keyring(state)
        )
