"""A node's side of the vault: opening the sealed credentials its snapshot's
providers use, in memory, when it builds the runtime of that snapshot.

What a node needs: the snapshot's ``vault:`` section (the ciphertexts and
the key versions), the wrapped data keys from the vault bucket (read only),
and the master keys of its own environment.  Only credentials a provider
references are opened.  A credential that does not open (a retired key
version, another master key, an altered entry) is left out and logged by
its id and the reason: its provider then has no credential, and requests
to it fail as for a missing environment variable (fail closed), while the
rest of the snapshot is served.

The plaintext lives in the returned ``Secrets`` (and then in the runtime's
upstream targets) only; nothing here logs or stores it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping

from streams.config import NexusConfig
from streams.config_vault import VaultCredential
from streams.vault.envelope import Binding, open_secret
from streams.vault.keyring import Keyring, VaultError
from streams.vault.keystore import KeyStore, Stored
from streams.vault.master import MasterKeys

log = logging.getLogger("nexus.vault")


class Secrets(Mapping[str, str]):
    """Opened credentials by id.  Its repr never shows a value, so a log
    line or a traceback that prints it leaks nothing."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self._values = dict(values or {})

    def __getitem__(self, key: str) -> str:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Secrets(ids={sorted(self._values)!r})"


NO_SECRETS = Secrets()


def referenced(cfg: NexusConfig) -> set[str]:
    """The vault credentials the providers of ``cfg`` name."""
    out = {p.credential for p in cfg.providers if p.credential}
    out |= {c.credential for p in cfg.providers for c in p.credentials if c.credential}
    return out


def _open_all(
    wanted: list[VaultCredential], stored: Mapping[str, Stored], keyring: Keyring
) -> tuple[dict[str, str], list[str]]:
    opened: dict[str, str] = {}
    problems: list[str] = []
    for c in wanted:
        entry = stored.get(c.sealed.dek)
        if entry is None:
            problems.append(f"credential {c.id!r}: its data key is not in the vault bucket")
            continue
        try:
            opened[c.id] = open_secret(c.sealed, entry.key, Binding(c.id, c.provider, c.org), keyring)
        except VaultError as exc:
            problems.append(str(exc))  # names the credential and why, never the secret
    return opened, problems


class Opener:
    """Opens a snapshot's sealed credentials (one per node, kept for its life)."""

    def __init__(self, keystore: KeyStore | None, master: MasterKeys | None) -> None:
        self.keystore = keystore
        self.master = master

    async def open(self, cfg: NexusConfig) -> Secrets:
        wanted_ids = referenced(cfg)
        wanted = [c for c in cfg.vault.credentials if c.id in wanted_ids]
        if not wanted:
            return NO_SECRETS
        if self.master is None:
            log.error(
                "vault: %d credential(s) are sealed in the vault and this node has no master key "
                "(NEXUS_VAULT_MASTER_KEY, _FILE or _COMMAND): their providers have no credential",
                len(wanted),
            )
            return NO_SECRETS
        if self.keystore is None:
            log.error("vault: NATS was not reachable at start-up: sealed credentials cannot be opened")
            return NO_SECRETS
        stored = await self.keystore.get_many(c.sealed.dek for c in wanted)
        keyring = Keyring(self.master, cfg.vault.keys)
        # Key derivation and decryption off the event loop.
        opened, problems = await asyncio.to_thread(_open_all, wanted, stored, keyring)
        for problem in problems:
            log.error("vault: %s; its provider has no credential", problem)
        log.debug("vault: opened credential(s) %s for this snapshot", ", ".join(sorted(opened)) or "none")
        return Secrets(opened)
