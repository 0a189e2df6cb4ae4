"""Signing in through an org's OpenID Connect provider (authorization code +
PKCE), and the providers' configuration (``identity-providers``).

- ``GET auth/oidc/{provider}/login[?return_to=/path]``: a new flow (state,
  nonce, PKCE verifier, and a random value in an HttpOnly cookie binding
  the flow to this browser) kept in the sign-in bucket for 10 minutes;
  302 to the provider's authorization endpoint.
- ``GET auth/oidc/{provider}/callback?code&state``: the flow is taken once
  (a replayed callback finds nothing), the cookie must match it, the code
  is exchanged with the verifier, the ID token checked (hub/signin/oidc),
  its nonce marked used (a replayed ID token is refused), the user found or
  created and mapped (hub/signin/federation), and a session opened exactly
  as a password sign-in opens one (cookies, CSRF token).  The answer is the
  login result, or a 303 to ``return_to``.

The changes a sign-in makes (a JIT user, roles, group memberships) are
commands of ``system:oidc/<provider>``; the request's audit record names the
user once signed in, and the reason when refused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from hub.api.errors import ApiError
from hub.api.http import Call, json_response
from hub.api.identity import ceiling
from hub.api.resources import Kind
from hub.api.signin import LoginResult, open_session, set_session_cookies
from hub.authz import nrn_of, principal_of, role_policy
from hub.commands import Create, Replace
from hub.iam import Policy
from hub.signin.federation import Flow, desired_user, find_user, group_changes
from hub.signin.oidc import OidcError, random_token
from hub.state import Resource
from hub.views import view
from streams.config_hub import IdentityProviderSpec
from streams.events import now_ms, uuid7

IDP = "identity-provider"
FLOW_COOKIE = "nexus_oidc"
FLOW_PATH = "/api/admin/auth/oidc"
FLOW_TTL_S = 600


async def _check_provider(call: Call, before: Any, after: Any) -> None:
    """A provider's mapping gives every user signing in through it roles at
    its org, and its groups' policies: nobody configures more than they hold."""
    if after is None:
        return
    spec: IdentityProviderSpec = after

    def roles(s: IdentityProviderSpec | None) -> set[str]:
        if s is None:
            return set()
        return set(s.default_roles) | {r for rule in s.group_rules for r in rule.roles}

    grants: list[tuple[Policy | None, str, Policy | None]] = []
    for role in sorted(roles(spec) - roles(before)):
        p = role_policy(call.state, role, spec.org)
        if p is not None:
            grants.append((p.document, p.scope, None))
    ceiling(call, grants)


IDENTITY_PROVIDERS = Kind(
    IDP,
    "identity-providers",
    IdentityProviderSpec,
    "identity provider",
    (("org", "only this org's providers"),),
    _check_provider,
)


def _provider(call: Call) -> IdentityProviderSpec:
    pid = call.request.match_info["provider"]
    res = call.state.get(IDP, pid)
    if res is None or not res.spec.enabled:
        raise ApiError("not_found", f"no identity provider {pid[:64]!r}")
    call.resource = nrn_of(call.state, IDP, res.id)
    call.tenant_org = res.spec.org
    return res.spec  # type: ignore[no-any-return]


def _redirect_uri(call: Call, provider: IdentityProviderSpec) -> str:
    base = call.hub.public_url.rstrip("/")
    if not base:
        scheme = "https" if call.secure else "http"
        base = f"{scheme}://{call.request.host}"
    return f"{base}{FLOW_PATH}/{provider.id}/callback"


def _safe_return(value: str) -> str:
    """Only a path on this Hub (no open redirect)."""
    if value.startswith("/") and not value.startswith("//") and "\\" not in value and len(value) <= 512:
        return value
    return ""


def _refused(call: Call, exc: OidcError) -> ApiError:
    call.decision_label = exc.reason
    call.deciding_note = exc.message[:500]
    if exc.reason in ("provider_unreachable", "provider_error", "url_refused"):
        return ApiError("unavailable", f"the identity provider cannot be used now: {exc.message}")
    return ApiError("invalid_credentials", f"sign-in refused: {exc.message}")


async def start(call: Call) -> web.StreamResponse:
    call.action = "auth:oidc.start"
    provider = _provider(call)
    call.self_service("public")
    if call.hub.flows is None:
        raise ApiError("unavailable", "sign-in through identity providers is not set up on this Hub")
    client = call.hub.oidc.client(provider.id, provider.issuer, provider.allow_private_network)
    try:
        disc = await client.discovery()
    except OidcError as exc:
        raise _refused(call, exc) from None
    state, nonce, verifier, browser = random_token(), random_token(), random_token(), random_token()
    redirect_uri = _redirect_uri(call, provider)
    await call.hub.flows.put(
        state,
        Flow(
            provider=provider.id,
            nonce=nonce,
            verifier=verifier,
            redirect_uri=redirect_uri,
            browser=hashlib.sha256(browser.encode()).hexdigest(),
            created_ms=now_ms(),
            return_to=_safe_return(call.query("return_to")),
        ),
    )
    location = client.authorization_url(
        disc,
        client_id=provider.client_id,
        redirect_uri=redirect_uri,
        scopes=provider.scopes,
        state=state,
        nonce=nonce,
        verifier=verifier,
    )
    resp = web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})
    resp.set_cookie(
        FLOW_COOKIE,
        browser,
        max_age=FLOW_TTL_S,
        path=FLOW_PATH,
        httponly=True,
        samesite="Lax",
        secure=call.hub.secure_cookies or call.secure,
    )
    return resp


def _client_secret(call: Call, provider: IdentityProviderSpec) -> str:
    if not provider.client_secret_env:
        return ""
    secret = call.hub.env.get(provider.client_secret_env, "")
    if not secret:
        call.decision_label = "no_client_secret"
        raise ApiError(
            "unavailable", f"the Hub has no client secret for this provider ({provider.client_secret_env})"
        )
    return secret


async def callback(call: Call) -> web.StreamResponse:
    call.action = "auth:oidc.callback"
    provider = _provider(call)
    call.self_service("public")
    if call.hub.flows is None:
        raise ApiError("unavailable", "sign-in through identity providers is not set up on this Hub")
    if call.query("error"):
        call.decision_label = "provider_refused"
        raise ApiError("invalid_credentials", "the identity provider did not sign you in")
    code, state = call.query("code"), call.query("state")
    if not code or not state or len(code) > 4096 or len(state) > 512:
        raise ApiError("invalid_query", "code and state are required", field="state" if code else "code")
    flow = await call.hub.flows.take(state, now_ms())
    browser = call.request.cookies.get(FLOW_COOKIE, "")
    if flow is None or flow.provider != provider.id:
        call.decision_label = "unknown_flow"
        raise ApiError("invalid_credentials", "this sign-in is unknown, already used or expired: start again")
    if not hmac.compare_digest(hashlib.sha256(browser.encode()).hexdigest(), flow.browser):
        call.decision_label = "other_browser"
        raise ApiError("invalid_credentials", "this sign-in was started in another browser: start again")
    client = call.hub.oidc.client(provider.id, provider.issuer, provider.allow_private_network)
    try:
        tokens = await client.exchange(
            code=code,
            verifier=flow.verifier,
            redirect_uri=flow.redirect_uri,
            client_id=provider.client_id,
            client_secret=_client_secret(call, provider),
        )
        claims = await client.verify_id_token(
            tokens["id_token"],
            client_id=provider.client_id,
            nonce=flow.nonce,
            algorithms=provider.algorithms,
            skew_s=provider.clock_skew_seconds,
        )
        if not await call.hub.flows.use_nonce(provider.id, flow.nonce):
            raise OidcError("replayed_nonce", "this ID token was used before")
        user = await _provisioned(call, provider, claims)
    except OidcError as exc:
        raise _refused(call, exc) from None
    call.principal = principal_of(call.state, user.id)
    call.actor_name = user.spec.email
    call.resource = nrn_of(call.state, "user", user.id)
    call.decision_label = "authenticated"
    token, session = await open_session(call, user, method=f"oidc:{provider.id}")
    result = LoginResult(
        token=token,
        expires_at=dt.datetime.fromtimestamp(session.expires_at_ms / 1000, tz=dt.UTC),
        user=view(user),
        csrf_token=session.csrf,
        session_id=session.id,
    )
    if flow.return_to:
        resp: web.Response = web.Response(
            status=303, headers={"Location": flow.return_to, "Cache-Control": "no-store"}
        )
    else:
        resp = json_response(result)
    set_session_cookies(call, resp, token, session)
    resp.del_cookie(FLOW_COOKIE, path=FLOW_PATH)
    return resp


async def _provisioned(call: Call, provider: IdentityProviderSpec, claims: Mapping[str, Any]) -> Resource:
    """The user this ID token is, after the provider's mapping is applied."""
    current = find_user(call.state, provider, claims)
    if current is None and not provider.jit:
        raise OidcError("no_account", "you have no account here; ask an administrator")
    if current is not None and current.spec.disabled:
        raise OidcError("disabled", "this account is disabled")
    spec = desired_user(provider, current.spec if current is not None else None, claims)
    envelope: dict[str, Any] = {
        "actor": f"system:oidc/{provider.id}",
        "request_id": call.request_id,
        "at_ms": now_ms(),
    }
    if current is None:
        call.after = {"user": spec.id, "created": True}
        call.command_id = uuid7()
        await call.execute(Create(id=call.command_id, **envelope, aggregate="user", spec=spec))
    elif spec != current.spec:
        call.command_id = uuid7()
        await call.execute(
            Replace(
                id=call.command_id,
                **envelope,
                expected_version=current.version,
                aggregate="user",
                rid=current.id,
                spec=spec,
            )
        )
    for group in group_changes(call.state, provider, spec.id, claims):
        call.command_id = uuid7()
        await call.execute(
            Replace(id=call.command_id, **envelope, aggregate="group", rid=group.id, spec=group)
        )
    user = call.state.get("user", spec.id)
    assert user is not None
    return user
