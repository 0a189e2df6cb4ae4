"""Must-show 1: OpenID Connect against a real provider (npm oidc-provider,
pinned, run by the machine's Node), no mocked tokens.

- The whole sign-in through the Hub: authorization code + PKCE (S256), the
  browser driven over HTTP; a JIT-created user whose IdP groups map to
  Nexus roles and groups; a session like a password sign-in's; the
  callback replayed, or finished in another browser, is refused; the
  flow's nonce is spent.
- The ID token checks on tokens the provider really issued, then on
  crafted ones (re-signed with the provider's own key with one claim
  changed, or with another key): bad signature, wrong audience, wrong
  issuer, expired (clock injection: the provider's clock skew tolerance
  holds, beyond it fails), wrong nonce, a replayed nonce, ``alg: none``,
  HS256 keyed with the provider's public key, an algorithm outside the
  provider's allow-list; key rotation (an unknown kid refetches the JWKS,
  at most once per interval).
- The SSRF rule on the issuer; the provider configuration's IAM and its
  grant ceiling.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from nats.aio.client import Client as NATS

from hub.signin.federation import FlowStore, desired_user, group_changes
from hub.signin.kv import Bucket
from hub.signin.oidc import OidcError, Outbound, ProviderClient, pkce_challenge, random_token
from hub.state import HubState
from streams.config_hub import GroupRule, IdentityProviderSpec
from streams.events_admin import AdminAction
from streams.topology import Topology
from tests.hub.conftest import Client, RunningHub
from tests.hub.oidc_provider import OidcProvider, SigningKey, browser, drive, make_key, node_ready

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(node_ready() is not None, reason=str(node_ready())),
]

A = "/api/admin"
SECRET_ENV = "NEXUS_TEST_OIDC_CLIENT_SECRET"
CLIENT_SECRET = "a-test-client-secret-of-the-provider"
RP_CALLBACK = "http://127.0.0.1:9/rp-callback"  # the test's own client: never fetched
ACCOUNTS = {
    "alice": {
        "email": "alice@acme.example",
        "email_verified": True,
        "name": "Alice Liddell",
        "groups": ["engineering", "everyone"],
    },
    "mallory": {"email": "mallory@acme.example", "email_verified": False, "name": "M", "groups": []},
}


def _clients(hub_url: str) -> list[dict[str, Any]]:
    return [
        {
            "client_id": "nexus-hub",
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [f"{hub_url}{A}/auth/oidc/acme-idp/callback"],
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_basic",
        },
        {
            # The test as a relying party of its own (a public client).
            "client_id": "test-rp",
            "redirect_uris": [RP_CALLBACK],
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        },
    ]


@pytest.fixture
async def idp(hub: RunningHub, tmp_path: Path) -> AsyncIterator[OidcProvider]:
    provider = OidcProvider(
        tmp_path / "idp", clients=_clients(hub.url), accounts=ACCOUNTS, keys=[make_key("k1")]
    )
    await provider.start()
    try:
        yield provider
    finally:
        provider.stop()


def _spec(issuer: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": "acme-idp",
        "org": "acme",
        "name": "Acme SSO",
        "issuer": issuer,
        "client_id": "nexus-hub",
        "client_secret_env": SECRET_ENV,
        "scopes": ["openid", "email", "profile", "groups"],
        "groups_claim": "groups",
        "group_rules": [
            {"claim": "engineering", "groups": ["eng"], "roles": ["NexusViewer"]},
            {"claim": "finance", "roles": ["NexusAuditor"]},
        ],
        "allow_private_network": True,
        **extra,
    }


async def _org_with_provider(admin: Client, issuer: str) -> None:
    assert (await admin.post(f"{A}/orgs", {"id": "acme"})).status == 201
    assert (await admin.post(f"{A}/projects", {"id": "acme-web", "org": "acme"})).status == 201
    eng = {"id": "eng", "org": "acme", "roles": ["NexusDeveloper"]}
    assert (await admin.post(f"{A}/groups", eng)).status == 201
    ans = await admin.post(f"{A}/identity-providers", _spec(issuer))
    assert ans.status == 201, ans


def _give_client_secret(hub: RunningHub) -> None:
    """The secret in the Hub's environment (the env mapping it was started
    with), as an operator would export it."""
    env = hub.server.settings.env
    assert isinstance(env, dict)
    env[SECRET_ENV] = CLIENT_SECRET


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def test_sign_in_with_code_and_pkce_creates_the_user_and_maps_groups_to_roles(
    hub: RunningHub, admin: Client, idp: OidcProvider
) -> None:
    _give_client_secret(hub)
    await _org_with_provider(admin, idp.issuer)
    callback = f"{hub.url}{A}/auth/oidc/acme-idp/callback"
    async with browser() as b:
        async with b.get(f"{hub.url}{A}/auth/oidc/acme-idp/login", allow_redirects=False) as r:
            assert r.status == 302, await r.text()
            location = r.headers["Location"]
            flow_cookie = r.cookies["nexus_oidc"]
            assert flow_cookie["httponly"] and flow_cookie["samesite"] == "Lax"
        auth = _query(location)
        assert location.startswith(f"{idp.issuer}/auth?")
        assert (auth["response_type"], auth["code_challenge_method"]) == ("code", "S256")
        assert auth["client_id"] == "nexus-hub" and auth["redirect_uri"] == callback
        assert len(auth["state"]) >= 32 and len(auth["nonce"]) >= 32 and len(auth["code_challenge"]) == 43
        back, _ = await drive(b, location, account="alice", stop_at=callback)
        # The provider sends the browser back with a code for this state.
        assert _query(back)["state"] == auth["state"] and _query(back)["code"]
        async with b.get(back, allow_redirects=False) as r:
            assert r.status == 200, await r.text()
            signed_in = await r.json()
            cookie = r.cookies["nexus_session"]
            assert cookie["httponly"] and cookie["samesite"] == "Lax"
        # The same callback again (a replayed code and state): refused.
        async with b.get(back, allow_redirects=False) as r:
            replay = await r.json()
            assert (r.status, replay["error"]["code"]) == (401, "invalid_credentials")
            assert "already used" in replay["error"]["message"]
    # The flow's nonce is spent: an ID token carrying it is refused from now on.
    assert hub.server.hub is not None and hub.server.hub.flows is not None
    assert await hub.server.hub.flows.use_nonce("acme-idp", auth["nonce"]) is False
    # A JIT user of the provider's org, its groups mapped.
    user = signed_in["user"]
    assert user["spec"]["email"] == "alice@acme.example" and user["spec"]["org"] == "acme"
    assert user["spec"]["name"] == "Alice Liddell"
    assert user["spec"]["memberships"] == [{"org": "acme", "roles": ["NexusViewer"]}]
    assert user["created_by"] == "system:oidc/acme-idp"
    assert (await admin.get(f"{A}/groups/eng")).json["spec"]["members"] == [user["id"]]
    alice = Client(hub.url, signed_in["token"])
    try:
        me = (await alice.get(f"{A}/auth/me")).json
        assert sorted(me["policies"]) == ["NexusDeveloper@acme", "NexusViewer@acme"]
        sessions = (await alice.get(f"{A}/auth/sessions")).json["items"]
        assert [s["method"] for s in sessions] == ["oidc:acme-idp"]
        # The roles work: a viewer reads acme, changes nothing.
        assert (await alice.get(f"{A}/projects/acme-web")).status == 200
        assert (await alice.post(f"{A}/projects", {"id": "p2", "org": "acme"})).status == 403
    finally:
        await alice.close()
    # Signing in again links the same user (by subject), no second account.
    async with browser() as b:
        async with b.get(f"{hub.url}{A}/auth/oidc/acme-idp/login", allow_redirects=False) as r:
            location = r.headers["Location"]
        back, _ = await drive(b, location, account="alice", stop_at=callback)
        async with b.get(back) as r:
            assert (await r.json())["user"]["id"] == user["id"]
    users = (await admin.get(f"{A}/users?org=acme")).json["items"]
    assert [u["id"] for u in users] == [user["id"]]
    print(
        f"\nmust-show 1: code + PKCE sign-in through oidc-provider {idp.issuer}: JIT user {user['id']} "
        f"with roles {me['policies']}, session {sessions[0]['method']}; replay refused, nonce spent"
    )


async def test_a_callback_from_another_browser_or_a_refused_login_signs_nobody_in(
    hub: RunningHub,
    admin: Client,
    idp: OidcProvider,
    nc: NATS,
    topology: Topology,
) -> None:
    _give_client_secret(hub)
    await _org_with_provider(admin, idp.issuer)
    callback = f"{hub.url}{A}/auth/oidc/acme-idp/callback"
    async with browser() as victim, browser() as attacker:
        # Login CSRF: the attacker's code and state, opened in the victim's browser.
        async with attacker.get(f"{hub.url}{A}/auth/oidc/acme-idp/login", allow_redirects=False) as r:
            location = r.headers["Location"]
        back, _ = await drive(attacker, location, account="alice", stop_at=callback)
        async with victim.get(back) as r:
            assert r.status == 401 and "another browser" in (await r.json())["error"]["message"]
        # The identity provider's refusal, a made-up state.
        async with victim.get(f"{callback}?error=access_denied&state=x") as r:
            assert r.status == 401
        async with victim.get(f"{callback}?code=abc&state=made-up") as r:
            assert r.status == 401
        async with victim.get(callback) as r:
            assert r.status == 400
    # Mallory's e-mail is not verified and JIT is off: no account.
    current = (await admin.get(f"{A}/identity-providers/acme-idp")).json["spec"]
    assert (await admin.put(f"{A}/identity-providers/acme-idp", {**current, "jit": False})).status == 200
    async with browser() as b:
        async with b.get(f"{hub.url}{A}/auth/oidc/acme-idp/login", allow_redirects=False) as r:
            location = r.headers["Location"]
        back, _ = await drive(b, location, account="mallory", stop_at=callback)
        async with b.get(back) as r:
            assert r.status == 401 and "no account" in (await r.json())["error"]["message"]
    # The audit trail names each refusal.
    js = nc.jetstream()
    info = await js.stream_info(topology.admin_stream)
    raw = [
        (await js.get_msg(topology.admin_stream, seq)).data
        for seq in range(info.state.first_seq, info.state.last_seq + 1)
    ]
    records = [msgspec.json.decode(b, type=AdminAction) for b in raw if b'"type":"admin.action"' in b]
    decisions = {r.decision for r in records if r.action == "auth:oidc.callback"}
    # The client secret was used (client_secret_basic) and is nowhere in the streams.
    config = await js.stream_info(topology.config_stream)
    stored = [
        (await js.get_msg(topology.config_stream, seq)).data
        for seq in range(config.state.first_seq, config.state.last_seq + 1)
    ]
    everything = b"".join(stored) + b"".join(msgspec.json.encode(r) for r in records)
    assert CLIENT_SECRET.encode() not in everything
    assert {"other_browser", "provider_refused", "unknown_flow", "no_account"} <= decisions


# --- the ID token's checks, on real and crafted tokens ----------------------------------


def _sign(claims: dict[str, Any], key: SigningKey, **header: Any) -> str:
    pem = key.private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return jwt.encode(claims, pem, algorithm=key.alg, headers={"kid": key.kid, **header})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def _real_token(idp: OidcProvider, client: ProviderClient) -> tuple[str, str]:
    """(an ID token the provider issued to the test's own client, its nonce)."""
    disc = await client.discovery()
    state, nonce, verifier = random_token(), random_token(), random_token()
    url = client.authorization_url(
        disc,
        client_id="test-rp",
        redirect_uri=RP_CALLBACK,
        scopes=("openid", "email", "groups"),
        state=state,
        nonce=nonce,
        verifier=verifier,
    )
    async with browser() as b:
        back, _ = await drive(b, url, account="alice", stop_at=RP_CALLBACK)
    assert _query(back)["state"] == state
    tokens = await client.exchange(
        code=_query(back)["code"],
        verifier=verifier,
        redirect_uri=RP_CALLBACK,
        client_id="test-rp",
        client_secret="",
    )
    return str(tokens["id_token"]), nonce


async def test_id_tokens_that_are_forged_misdirected_expired_or_replayed_are_refused(
    hub: RunningHub, idp: OidcProvider, nc: NATS, topology: Topology
) -> None:
    outbound = Outbound()
    client = ProviderClient(idp.issuer, True, outbound, min_refetch_s=1.0)
    flows = FlowStore(Bucket(nc.jetstream(), topology.signin_bucket, ttl_s=3600))
    opts: dict[str, Any] = {"client_id": "test-rp", "algorithms": ("RS256",), "skew_s": 60}
    try:
        raw, nonce = await _real_token(idp, client)
        claims = await client.verify_id_token(raw, nonce=nonce, **opts)
        assert claims["sub"] == "alice" and claims["groups"] == ["engineering", "everyone"]
        assert claims["aud"] == "test-rp" and claims["iss"] == idp.issuer
        # PKCE is enforced by the provider: the code without its verifier fails.
        with pytest.raises(OidcError) as refused:
            await client.exchange(
                code="not-a-code",
                verifier="x" * 43,
                redirect_uri=RP_CALLBACK,
                client_id="test-rp",
                client_secret="",
            )
        assert refused.value.reason == "code_refused"
        # A replayed nonce: the first use counts, the second is refused.
        assert await flows.use_nonce("test-rp", nonce) is True
        assert await flows.use_nonce("test-rp", nonce) is False

        seen: list[str] = []

        async def reason(token: str, **over: Any) -> str:
            with pytest.raises(OidcError) as exc:
                await client.verify_id_token(token, nonce=over.pop("nonce", nonce), **{**opts, **over})
            seen.append(exc.value.reason)
            return exc.value.reason

        key = idp.keys[0]
        real = dict(claims)
        # Re-signed with the provider's own key, one thing changed each time.
        assert await reason(_sign({**real, "aud": "someone-else"}, key)) == "wrong_audience"
        assert (
            await reason(_sign({**real, "aud": ["test-rp", "other"], "azp": "other"}, key))
            == "wrong_audience"
        )
        assert await reason(_sign({**real, "iss": "https://evil.example"}, key)) == "wrong_issuer"
        assert await reason(_sign({**real, "nonce": "another-nonce"}, key)) == "wrong_nonce"
        assert await reason(_sign({k: v for k, v in real.items() if k != "nonce"}, key)) == "wrong_nonce"
        assert await reason(_sign({k: v for k, v in real.items() if k != "exp"}, key)) == "invalid_token"
        # Expiry by clock injection: the skew tolerance holds, beyond it fails.
        exp = float(real["exp"])
        await client.verify_id_token(_sign(real, key), nonce=nonce, now=exp + 59, **opts)
        assert await reason(_sign(real, key), now=exp + 61) == "expired"
        assert await reason(_sign({**real, "iat": time.time() + 600}, key)) == "not_yet_valid"
        assert (
            await reason(_sign({**real, "iat": time.time() - 3600, "exp": time.time() + 60}, key))
            == "expired"
        )
        # Another key under the provider's kid: the signature does not verify.
        impostor = make_key("k1")
        assert await reason(_sign(real, impostor)) == "bad_signature"
        # The real token with its payload altered (signature kept).
        head, body, sig = raw.split(".")
        forged = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        forged["sub"] = "admin"
        assert await reason(f"{head}.{_b64(json.dumps(forged).encode())}.{sig}") == "bad_signature"
        # alg none, and HS256 keyed with the provider's public key.
        none_head = _b64(json.dumps({"alg": "none", "kid": key.kid}).encode())
        assert await reason(f"{none_head}.{body}.") == "algorithm_refused"
        public_pem = key.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        hs_head = _b64(json.dumps({"alg": "HS256", "kid": key.kid, "typ": "JWT"}).encode())
        mac = hmac.new(public_pem, f"{hs_head}.{body}".encode(), hashlib.sha256).digest()
        assert await reason(f"{hs_head}.{body}.{_b64(mac)}") == "algorithm_refused"
        assert (
            await reason(f"{hs_head}.{body}.{_b64(mac)}", algorithms=("RS256", "HS256"))
            == "algorithm_refused"
        )
        # An algorithm the provider's configuration does not allow.
        assert await reason(raw, algorithms=("ES256",)) == "algorithm_refused"
        # A made-up kid: one refetch, then none until the interval passes.
        fetches = client.jwks_fetches
        rogue = make_key("no-such-kid")
        assert await reason(_sign(real, rogue)) == "unknown_key"
        assert await reason(_sign(real, make_key("another-kid"))) == "unknown_key"
        assert client.jwks_fetches - fetches <= 1
        # Rotation: the provider now signs with k2 (k1 kept for a while).
        k2 = make_key("k2")
        await idp.restart([k2, key])
        time.sleep(1.05)  # past the refetch interval
        raw2, nonce2 = await _real_token(idp, client)
        assert jwt.get_unverified_header(raw2)["kid"] == "k2"
        before = client.jwks_fetches
        claims2 = await client.verify_id_token(raw2, nonce=nonce2, **opts)
        assert claims2["sub"] == "alice" and client.jwks_fetches == before + 1
        # An ES256 key published under RS256's name is not taken for RS256.
        ec_key = make_key("k-ec", "ES256")
        await idp.restart([k2, ec_key])
        time.sleep(1.05)
        ec_token = _sign(real, ec_key)
        assert await reason(ec_token) == "algorithm_refused"  # ES256 is not in this allow-list
        # An RS256 header naming the EC key: that key is not built for RS256.
        assert await reason(_sign(real, k2, kid="k-ec")) == "bad_key"
        es_opts = {**opts, "algorithms": ("ES256",)}
        assert (await client.verify_id_token(ec_token, nonce=nonce, **es_opts))["sub"] == "alice"
        print(
            f"\nmust-show 1: refused {sorted(set(seen))}; JWKS fetched {client.jwks_fetches} times "
            "(rotation picked up k2 with one refetch; made-up kids rate-limited)"
        )
    finally:
        await outbound.close()


# --- configuration: SSRF rule, IAM, mapping --------------------------------------------------


async def test_provider_configuration_is_checked_and_its_grants_are_ceilinged(
    hub: RunningHub, admin: Client
) -> None:
    assert (await admin.post(f"{A}/orgs", {"id": "acme"})).status == 201
    for issuer, private in (
        ("http://127.0.0.1:1", False),  # loopback without the flag
        ("http://10.0.0.1", False),
        ("https://169.254.169.254", False),  # link-local (cloud metadata)
        ("http://idp.example.com", False),  # not https
        ("ftp://idp.example.com", True),
        ("https://user:pw@idp.example.com", True),
    ):
        ans = await admin.post(
            f"{A}/identity-providers", _spec(issuer, allow_private_network=private, group_rules=[])
        )
        assert (ans.status, ans.error) == (422, "invalid_field"), (issuer, ans)
        assert ans.json["error"]["field"] == "issuer"
    for bad in (
        {"algorithms": ["HS256"]},
        {"algorithms": ["none"]},
        {"scopes": ["email"]},
        {"default_roles": ["NoSuchRole"]},
        {"group_rules": [{"claim": "x", "groups": ["no-such-group"]}]},
        {"client_secret_env": "lower case"},
        {"org": "no-such-org"},
    ):
        ans = await admin.post(
            f"{A}/identity-providers", {**_spec("https://idp.example.com", group_rules=[]), **bad}
        )
        assert (ans.status, ans.error) == (422, "invalid_field"), (bad, ans)
    ok = await admin.post(f"{A}/identity-providers", _spec("https://idp.example.com", group_rules=[]))
    assert ok.status == 201, ok
    assert ok.json["spec"]["client_secret_env"] == SECRET_ENV  # a name: the secret is the Hub's env
    # An org admin of acme cannot map sign-ins to a role it does not hold.
    assert (
        await admin.post(
            f"{A}/users",
            {
                "id": "oa",
                "email": "oa@acme.example",
                "org": "acme",
                "memberships": [{"org": "acme", "roles": ["NexusOrgAdmin"]}],
            },
        )
    ).status == 201
    assert (
        await admin.put(f"{A}/users/oa/password", {"password": "a-long-enough-password-42"})
    ).status == 204
    from tests.hub.conftest import sign_in

    org_admin = await sign_in(hub.url, "oa@acme.example", "a-long-enough-password-42")
    try:
        current = (await org_admin.get(f"{A}/identity-providers/acme-idp")).json["spec"]
        wider = {**current, "default_roles": ["NexusSuperAdmin"]}
        ans = await org_admin.put(f"{A}/identity-providers/acme-idp", wider)
        assert (ans.status, ans.error) == (403, "access_denied"), ans
        ans = await org_admin.put(
            f"{A}/identity-providers/acme-idp", {**current, "default_roles": ["NexusViewer"]}
        )
        assert ans.status == 200, ans
    finally:
        await org_admin.close()
    # Unknown or disabled providers: 404, never a redirect.
    anon = Client(hub.url)
    try:
        assert (await anon.get(f"{A}/auth/oidc/nope/login")).status == 404
    finally:
        await anon.close()


def test_group_mapping_follows_the_claim_at_every_sign_in() -> None:
    from hub.state import Resource
    from streams.config_hub import GroupSpec, Membership, UserSpec

    provider = IdentityProviderSpec(
        id="p",
        org="acme",
        issuer="https://idp.example.com",
        client_id="c",
        default_roles=("NexusViewer",),
        group_rules=(
            GroupRule(claim="eng", groups=("eng",), roles=("NexusDeveloper",)),
            GroupRule(claim="fin", groups=("fin",), roles=("NexusAuditor",)),
        ),
    )
    groups = {
        gid: Resource("group", gid, GroupSpec(id=gid, org="acme", members=members), 1, 0, 0, "", "")
        for gid, members in (("eng", ()), ("fin", ("u1",)), ("other", ("u1",)))
    }
    state = HubState(items={"group": groups})
    before = UserSpec(
        id="u1",
        email="u@acme.example",
        org="acme",
        memberships=(Membership(org="elsewhere", roles=("NexusViewer",)),),
    )
    claims = {"sub": "s", "email": "u@acme.example", "groups": ["eng", "unmapped"]}
    after = desired_user(provider, before, claims)
    assert after.memberships == (
        Membership(org="elsewhere", roles=("NexusViewer",)),
        Membership(org="acme", roles=("NexusViewer", "NexusDeveloper")),
    )
    assert after.tags["oidc-sub.p"] == "s"
    changed = {g.id: g.members for g in group_changes(state, provider, "u1", claims)}
    # Joins eng, leaves fin (mapped, no longer claimed); "other" is not the provider's.
    assert changed == {"eng": ("u1",), "fin": ()}
    assert (
        pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
        == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )
