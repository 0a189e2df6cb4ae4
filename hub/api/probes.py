"""Probing providers from the admin API: does this provider answer with
this credential, and which models does it offer.

The request goes out through the probe the composition root gave the Hub
(``streams.probe``: the gateway's own codecs, SSRF guard and a timeout).
The credential is opened in memory for that one request; the answer (and
the audit record) says what happened, never the secret.

- ``POST providers/{id}/probe``: with the provider's own credential (the
  vault credential it names, or its environment variable as the Hub sees
  it), or a vault credential sealed for it (``credential``: that needs
  ``admin:credential.probe`` on the credential too).
- ``POST credentials/{id}/probe``: the credential against its provider.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from hub.api.errors import ApiError
from hub.api.http import Call, json_response
from hub.api.resources import Kind, authorize_item, found
from hub.api.vault import CREDENTIALS
from hub.state import CREDENTIAL
from hub.vault.service import VaultUnavailable
from streams.config import Provider
from streams.probe import Prober, ProbeResult
from streams.vault.keyring import VaultError

PROVIDERS = Kind("provider", "providers", Provider, "provider")
MAX_TIMEOUT_S = 30.0


class Probe(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # A vault credential sealed for this provider (default: its own).
    credential: str = ""
    # The model a provider without a models listing is probed with
    # (default: the first of its models in the catalogue).
    model: str = ""
    timeout_s: float = 10.0


class CredentialProbe(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    model: str = ""
    timeout_s: float = 10.0


class ProbeAnswer(msgspec.Struct, kw_only=True):
    provider: str
    credential: str  # the vault credential used ("" : the provider's environment variable, or none)
    result: ProbeResult


def _prober(call: Call) -> Prober:
    if call.hub.prober is None:
        raise ApiError(
            "unavailable", "this Hub runs without the provider probe (start it with nexus hub run)"
        )
    return call.hub.prober


def _timeout(value: float) -> float:
    if not 0 < value <= MAX_TIMEOUT_S:
        raise ApiError("invalid_field", f"timeout_s: from 0 to {MAX_TIMEOUT_S:g}", field="timeout_s")
    return value


def _default_model(call: Call, provider: str) -> str:
    for res in sorted(call.state.all("model"), key=lambda r: r.id):
        if res.spec.provider == provider:
            return str(res.spec.provider_model or res.spec.name)
    return ""


async def _open(call: Call, rid: str) -> str:
    vault = call.hub.vault
    if vault is None:
        raise ApiError("unavailable", "this Hub runs without the credential vault")
    try:
        return await vault.open(rid)
    except VaultUnavailable as exc:
        raise ApiError("unavailable", str(exc)) from None
    except VaultError as exc:
        # Retired, another master key, altered: the probe cannot run.
        raise ApiError("invalid_transition", str(exc)) from None


async def _run(
    call: Call, provider: Provider, secret: str | None, model: str, timeout_s: float
) -> ProbeResult:
    result = await _prober(call)(provider, secret, model=model, timeout_s=timeout_s)
    # The audit record's digest covers what was answered (no secret is in it).
    call.after = msgspec.to_builtins(result)
    return result


async def probe_provider(call: Call) -> web.Response:
    body = await call.body(Probe)
    timeout_s = _timeout(body.timeout_s)
    rid = call.request.match_info["id"]
    res = found(call, PROVIDERS, rid)
    authorize_item(call, PROVIDERS, res, "probe")
    provider: Provider = res.spec
    credential = body.credential or provider.credential
    secret: str | None = None
    if body.credential:
        cred = found(call, CREDENTIALS, body.credential)
        if cred.spec.provider != provider.name:
            raise ApiError(
                "invalid_field",
                f"credential: {body.credential!r} is sealed for provider {cred.spec.provider!r}",
                field="credential",
            )
        authorize_item(call, CREDENTIALS, cred, "probe")
        # The audit record names the provider probed.
        authorize_item(call, PROVIDERS, res, "probe")
    if credential:
        secret = await _open(call, credential)
    elif provider.api_key_env:
        secret = call.hub.provider_env.get(provider.api_key_env) or None
    result = await _run(call, provider, secret, body.model or _default_model(call, rid), timeout_s)
    return json_response(ProbeAnswer(provider=rid, credential=credential, result=result))


async def probe_credential(call: Call) -> web.Response:
    body = await call.body(CredentialProbe)
    timeout_s = _timeout(body.timeout_s)
    rid = call.request.match_info["id"]
    cred = found(call, CREDENTIALS, rid)
    authorize_item(call, CREDENTIALS, cred, "probe")
    prov = call.state.get("provider", cred.spec.provider)
    if prov is None or call.state.get(CREDENTIAL, rid) is None:
        raise ApiError("not_found", f"provider {cred.spec.provider!r} does not exist")
    secret = await _open(call, rid)
    result = await _run(call, prov.spec, secret, body.model or _default_model(call, prov.id), timeout_s)
    return json_response(ProbeAnswer(provider=prov.id, credential=rid, result=result))
