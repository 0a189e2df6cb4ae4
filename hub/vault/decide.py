"""Deciding the vault's commands (called from ``hub.decide``, which then
validates the whole state the event produces, as for every command).

- A credential is stored with its secret sealed (``StoreCredential``), never
  created as a plain resource; its provider and org are bound into the
  ciphertext, so an edit may change its description only.
- Key versions come one at a time, each the next number; retiring one is
  refused while it is the version in service (rotate first), so there is
  always one to seal with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hub.commands import Command, Create, Delete, DomainError, Replace, Upsert, conflict, invalid, not_found
from hub.state import CREDENTIAL, VAULT_KEY, HubState
from hub.validate import Problem, check_id
from hub.vault.commands import AddVaultKey, ReplaceSecret, RetireVaultKey, StoreCredential
from streams.config_vault import CredentialSpec, KeyVersion
from streams.events_config import (
    ConfigEvent,
    CredentialSecretReplaced,
    CredentialStored,
    ResourceUpdated,
    VaultKeyAdded,
    VaultKeyRetired,
    encode_spec,
)

Base = Callable[[Command, str, str], dict[str, Any]]

_FIXED = ("provider", "org")


def handles(cmd: Command) -> bool:
    if isinstance(cmd, StoreCredential | ReplaceSecret | AddVaultKey | RetireVaultKey):
        return True
    if isinstance(cmd, Delete):
        return cmd.aggregate == VAULT_KEY  # a credential is deleted like any item
    return isinstance(cmd, Create | Upsert | Replace) and cmd.aggregate in (CREDENTIAL, VAULT_KEY)


def _check_version(state: HubState, cmd: Command, aggregate: str, rid: str) -> None:
    if cmd.expected_version is not None:
        current = state.version_of(aggregate, rid)
        if current != cmd.expected_version:
            raise conflict(aggregate, rid, current)


def vault_event(state: HubState, cmd: Command, base: Base) -> ConfigEvent | None:
    if isinstance(cmd, StoreCredential):
        return _store(state, cmd, base)
    if isinstance(cmd, ReplaceSecret):
        current = state.get(CREDENTIAL, cmd.rid)
        if current is None:
            raise not_found(CREDENTIAL, cmd.rid)
        _check_version(state, cmd, CREDENTIAL, cmd.rid)
        return CredentialSecretReplaced(
            **base(cmd, CREDENTIAL, cmd.rid), sealed=cmd.sealed, fingerprint=cmd.fingerprint, last4=cmd.last4
        )
    if isinstance(cmd, AddVaultKey):
        return _add_key(state, cmd, base)
    if isinstance(cmd, RetireVaultKey):
        return _retire(state, cmd, base)
    if isinstance(cmd, Replace) and cmd.aggregate == CREDENTIAL:
        return _edit(state, cmd, base)
    if isinstance(cmd, Create | Upsert | Replace | Delete) and cmd.aggregate == VAULT_KEY:
        raise invalid("", "key versions are added by a rotation and retired, never edited or deleted")
    raise invalid("", "a credential is stored with its secret (POST /api/admin/credentials)")


def _store(state: HubState, cmd: StoreCredential, base: Base) -> ConfigEvent:
    spec = cmd.spec
    if not isinstance(spec, CredentialSpec):
        raise invalid("", "expected a credential spec")
    try:
        check_id(CREDENTIAL, spec.id)
    except Problem as p:
        raise invalid(p.field, p.message) from None
    current = state.get(CREDENTIAL, spec.id)
    if current is not None:
        raise DomainError(
            409, "already_exists", f"credential {spec.id!r} already exists", current_version=current.version
        )
    _check_version(state, cmd, CREDENTIAL, spec.id)
    return CredentialStored(
        **base(cmd, CREDENTIAL, spec.id),
        spec=encode_spec(spec),
        sealed=cmd.sealed,
        fingerprint=cmd.fingerprint,
        last4=cmd.last4,
    )


def _edit(state: HubState, cmd: Replace, base: Base) -> ConfigEvent | None:
    current = state.get(CREDENTIAL, cmd.rid)
    if current is None:
        raise not_found(CREDENTIAL, cmd.rid)
    _check_version(state, cmd, CREDENTIAL, cmd.rid)
    if not isinstance(cmd.spec, CredentialSpec):
        raise invalid("", "expected a credential spec")
    if cmd.spec.id != cmd.rid:
        raise invalid("id", f"the spec names {cmd.spec.id!r}, the request {cmd.rid!r}")
    for name in _FIXED:
        if getattr(cmd.spec, name) != getattr(current.spec, name):
            raise invalid(name, "is sealed into the secret; store a new credential to change it")
    if cmd.spec == current.spec:
        return None
    return ResourceUpdated(**base(cmd, CREDENTIAL, cmd.rid), spec=encode_spec(cmd.spec))


def _versions(state: HubState) -> list[KeyVersion]:
    return [r.spec for r in state.all(VAULT_KEY)]


def _add_key(state: HubState, cmd: AddVaultKey, base: Base) -> ConfigEvent:
    key = cmd.key
    expected = max((k.version for k in _versions(state)), default=0) + 1
    if key.version != expected:
        raise DomainError(
            409, "version_conflict", f"the next key version is {expected}, not {key.version} (rotate again)"
        )
    if key.retired:
        raise invalid("retired", "a new key version is in service")
    rid = str(key.version)
    _check_version(state, cmd, VAULT_KEY, rid)
    return VaultKeyAdded(**base(cmd, VAULT_KEY, rid), key=key)


def retire_refusal(state: HubState, version: int) -> DomainError | None:
    """Why ``version`` may not be retired now (None: it may)."""
    current = state.get(VAULT_KEY, str(version))
    if current is None:
        return DomainError(404, "not_found", f"key version {version} does not exist")
    if current.spec.retired:
        return DomainError(409, "invalid_transition", f"key version {version} is retired already")
    live = [k.version for k in _versions(state) if not k.retired]
    if version == max(live):
        return DomainError(
            409,
            "invalid_transition",
            f"key version {version} is the one in service; rotate first, then retire it",
        )
    return None


def _retire(state: HubState, cmd: RetireVaultKey, base: Base) -> ConfigEvent:
    rid = str(cmd.version)
    refusal = retire_refusal(state, cmd.version)
    if refusal is not None:
        raise refusal
    _check_version(state, cmd, VAULT_KEY, rid)
    return VaultKeyRetired(**base(cmd, VAULT_KEY, rid), version=cmd.version, reason=cmd.reason)
