"""The vault's commands.  As every command, each carries what is not a pure
function of the state: here the secret already sealed (at the edge, by
``hub.vault.sealing``), never the secret itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hub.commands import Command
from streams.config_vault import KeyVersion, SealedSecret


@dataclass(frozen=True, kw_only=True)
class StoreCredential(Command):
    spec: Any  # CredentialSpec
    sealed: SealedSecret
    fingerprint: str
    last4: str


@dataclass(frozen=True, kw_only=True)
class ReplaceSecret(Command):
    rid: str
    sealed: SealedSecret
    fingerprint: str
    last4: str


@dataclass(frozen=True, kw_only=True)
class AddVaultKey(Command):
    key: KeyVersion


@dataclass(frozen=True, kw_only=True)
class RetireVaultKey(Command):
    version: int
    reason: str = ""


VAULT_COMMANDS = (StoreCredential, ReplaceSecret, AddVaultKey, RetireVaultKey)
