"""The credential vault over the admin API: provider credentials stored with
their secret (sealed at once, never shown again), a secret replaced, a
credential deleted (its data key shredded); the key versions, a rotation
(with a rewrap in the background), a rewrap pass on demand, a retirement.

A secret arrives in one request body and leaves this module only sealed:
answers, audit records and logs show the credential's metadata, its keyed
fingerprint and (for a long secret) its last four characters.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from hub.api.errors import ApiError
from hub.api.http import Call, json_response
from hub.api.resources import Kind, authorize_item, checked_id, found, shown
from hub.authz import nrn_of, resource_context
from hub.iam import resource_nrn
from hub.state import CREDENTIAL
from hub.vault.rewrap import Progress
from hub.vault.service import VaultService, VaultUnavailable, key_versions
from streams.config_vault import CredentialSpec, KeyVersion
from streams.vault.keyring import VaultError

CREDENTIALS = Kind(
    aggregate=CREDENTIAL,
    path="credentials",
    spec=CredentialSpec,
    title="credential",
    filters=(("org", "only credentials of this org"), ("provider", "only credentials of this provider")),
)

# The key versions are one installation-wide resource.
VAULT_NRN = resource_nrn("vault", "", "keys")


class NewCredential(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: str
    provider: str
    org: str = ""
    description: str = ""
    # The provider's API key (or service-account JSON): sealed as it
    # arrives, never stored or shown in the clear.
    secret: str

    def __repr__(self) -> str:  # never the secret, even in a traceback's locals
        return f"NewCredential(id={self.id!r}, provider={self.provider!r}, org={self.org!r})"


class NewSecret(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    secret: str

    def __repr__(self) -> str:
        return "NewSecret(secret=<hidden>)"


class Rotation(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # The master key the new version derives from (default: the source's
    # current one, its last entry).
    master_key: str = ""


class Retirement(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    reason: str = ""
    # Retire even though data keys are still wrapped by the version: they
    # then fail closed (a compromised key).
    force: bool = False


class VaultStatus(msgspec.Struct, kw_only=True):
    """The key versions and the last rewrap pass (no key material)."""

    available: bool  # this Hub holds a master key
    master_keys: list[str]  # the ids of the master keys it holds
    current_version: int  # 0: none yet (the first credential stored makes one)
    keys: list[KeyVersion]
    credentials: int
    rewrap: Progress


class RetireResult(msgspec.Struct, kw_only=True):
    version: int
    # Data keys still wrapped by it at retirement (forced): they now fail closed.
    stranded: int
    status: VaultStatus


def _vault(call: Call) -> VaultService:
    vault = call.hub.vault
    if vault is None:
        raise ApiError("unavailable", "this Hub runs without the credential vault")
    return vault


def _check_secret(secret: str, field: str = "secret") -> None:
    if not secret.strip():
        raise ApiError("invalid_field", f"{field}: must not be empty", field=field)
    if len(secret.encode()) > 64 * 1024:
        raise ApiError("invalid_field", f"{field}: over 64 KiB", field=field)


def _unavailable(exc: Exception) -> ApiError:
    if isinstance(exc, VaultUnavailable):
        return ApiError("unavailable", str(exc))
    return ApiError("invalid_field", str(exc))


def status_of(call: Call, vault: VaultService) -> VaultStatus:
    keys = key_versions(call.state)
    live = [k.version for k in keys if not k.retired]
    return VaultStatus(
        available=vault.master is not None,
        master_keys=list(vault.master.ids()) if vault.master is not None else [],
        current_version=max(live, default=0),
        keys=keys,
        credentials=call.state.count(CREDENTIAL),
        rewrap=vault.rewrapper.progress,
    )


# --- credentials -------------------------------------------------------------------


async def create_credential(call: Call) -> web.Response:
    body = await call.body(NewCredential)
    spec = CredentialSpec(id=body.id, provider=body.provider, org=body.org, description=body.description)
    checked_id(CREDENTIAL, spec.id)
    call.authorize(
        nrn_of(call.state, CREDENTIAL, spec.id, spec),
        resource_context(call.state, CREDENTIAL, spec),
        action="admin:credential.create",
        org=spec.org,
    )
    _check_secret(body.secret)
    vault = _vault(call)
    try:
        await vault.store(call.execute, call.envelope(), spec, body.secret)
    except (VaultUnavailable, VaultError) as exc:
        raise _unavailable(exc) from None
    res = found(call, CREDENTIALS, spec.id)
    call.after = shown(call, res)
    return json_response(call.after, status=201, etag=res.version)


async def replace_secret(call: Call) -> web.Response:
    body = await call.body(NewSecret)
    rid = call.request.match_info["id"]
    current = found(call, CREDENTIALS, rid)
    authorize_item(call, CREDENTIALS, current, "update")
    _check_secret(body.secret)
    call.before = shown(call, current)
    try:
        await _vault(call).replace_secret(
            call.execute, call.envelope(expected_version=call.if_match()), rid, body.secret
        )
    except (VaultUnavailable, VaultError) as exc:
        raise _unavailable(exc) from None
    res = found(call, CREDENTIALS, rid)
    call.after = shown(call, res)
    return json_response(call.after, etag=res.version)


async def delete_credential(call: Call) -> web.Response:
    rid = call.request.match_info["id"]
    current = found(call, CREDENTIALS, rid)
    authorize_item(call, CREDENTIALS, current, "delete")
    call.before = shown(call, current)
    await _vault(call).delete(call.execute, call.envelope(expected_version=call.if_match()), rid)
    return web.Response(status=204, headers={"Cache-Control": "no-store"})


# --- key versions ------------------------------------------------------------------


async def get_vault(call: Call) -> web.Response:
    call.authorize(VAULT_NRN, action="admin:vault.read")
    return json_response(status_of(call, _vault(call)))


async def rotate(call: Call) -> web.Response:
    body = await call.body(Rotation)
    call.authorize(VAULT_NRN, action="admin:vault.rotate")
    vault = _vault(call)
    call.before = [msgspec.to_builtins(k) for k in key_versions(call.state)]
    try:
        await vault.rotate(call.execute, call.envelope(), master_key=body.master_key)
    except VaultUnavailable as exc:
        raise ApiError("unavailable", str(exc)) from None
    except VaultError as exc:
        raise ApiError("invalid_field", f"master_key: {exc}", field="master_key") from None
    call.after = [msgspec.to_builtins(k) for k in key_versions(call.state)]
    return json_response(status_of(call, vault), status=202)


async def rewrap(call: Call) -> web.Response:
    call.authorize(VAULT_NRN, action="admin:vault.rotate")
    vault = _vault(call)
    if vault.master is None:
        raise ApiError("unavailable", "this Hub has no vault master key: nothing can be rewrapped")
    vault.start_rewrap()
    return json_response(status_of(call, vault), status=202)


async def retire(call: Call) -> web.Response:
    body = await call.body(Retirement)
    raw = call.request.match_info["version"]
    if not raw.isdigit() or len(raw) > 9:
        raise ApiError("invalid_field", "version: a key version number", field="version")
    call.authorize(VAULT_NRN, action="admin:vault.retire")
    vault = _vault(call)
    call.before = [msgspec.to_builtins(k) for k in key_versions(call.state)]
    _, stranded = await vault.retire(
        call.execute, call.envelope(), int(raw), reason=body.reason[:500], force=body.force
    )
    call.after = [msgspec.to_builtins(k) for k in key_versions(call.state)]
    return json_response(RetireResult(version=int(raw), stranded=stranded, status=status_of(call, vault)))
