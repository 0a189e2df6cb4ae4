"""Who an identity provider's ID token is in the Hub: the user it links to
(or creates, just in time), and the roles and groups its groups claim maps
to.  Pure functions of the state and the claims; the commands they return
are executed by the caller (hub/api/oidc.py).  Also the sign-in flows in
progress and the nonces used, kept in the sign-in KV bucket shared by the
Hub's replicas.

Linking: a user is bound to an identity provider by the subject (``sub``)
in the user tag ``oidc-sub.<provider id>``.  A first sign-in may link an
existing user of the provider's org with the same e-mail only when the
provider says it is verified (``email_verified``); otherwise, with JIT on,
a user is created in the provider's org.  Users of other orgs, platform
users and disabled users are never signed in through an org's provider.

Mapping: at every sign-in the user's roles at the provider's org are set
to the provider's ``default_roles`` plus the roles of each matching group
rule, and the user joins the Nexus groups of the matching rules and leaves
the rules' groups that no longer match (the identity provider is the
source of truth for what it maps; other memberships are left alone).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import msgspec
from nats.js.errors import Error as JetStreamError
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from hub.signin.kv import Bucket
from hub.signin.oidc import OidcError
from hub.state import HubState, Resource
from streams.config_hub import GroupSpec, IdentityProviderSpec, Membership, UserSpec

SUBJECT_TAG = "oidc-sub."


def subject_tag(provider_id: str) -> str:
    return SUBJECT_TAG + provider_id


def claimed_groups(claims: Mapping[str, Any], claim: str) -> set[str]:
    value: Any = claims
    for part in claim.split("."):  # a nested claim: "realm_access.roles"
        value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, str):
        return {value}
    if isinstance(value, list):
        return {v for v in value if isinstance(v, str)}
    return set()


def jit_user_id(provider_id: str, subject: str) -> str:
    return f"oidc-{provider_id[:40]}-{hashlib.sha256(subject.encode()).hexdigest()[:20]}"


def find_user(state: HubState, provider: IdentityProviderSpec, claims: Mapping[str, Any]) -> Resource | None:
    sub = str(claims["sub"])
    tag = subject_tag(provider.id)
    for r in state.all("user"):
        if r.spec.org == provider.org and r.spec.tags.get(tag) == sub:
            return r
    email = claims.get("email")
    if isinstance(email, str) and claims.get("email_verified") is True:
        for r in state.all("user"):
            if r.spec.email.lower() == email.lower():
                if r.spec.org != provider.org or r.spec.tags.get(tag):
                    # Another org's user, or linked to another subject.
                    raise OidcError("not_linkable", "this e-mail belongs to another account")
                return r
    return None


def desired_user(
    provider: IdentityProviderSpec, current: UserSpec | None, claims: Mapping[str, Any]
) -> UserSpec:
    """The user as this sign-in leaves it (roles at the provider's org from
    the mapping, the subject link, name and e-mail from the claims)."""
    sub = str(claims["sub"])
    email = claims.get("email")
    if current is None:
        if not isinstance(email, str) or not email:
            raise OidcError("no_email", "the identity provider sent no e-mail address")
        current = UserSpec(id=jit_user_id(provider.id, sub), email=email, org=provider.org)
    wanted = claimed_groups(claims, provider.groups_claim)
    roles = list(provider.default_roles)
    for rule in provider.group_rules:
        if rule.claim in wanted:
            roles += [r for r in rule.roles if r not in roles]
    memberships = [m for m in current.memberships if m.org != provider.org]
    if roles:
        memberships.append(Membership(org=provider.org, roles=tuple(roles)))
    name = claims.get("name")
    return msgspec.structs.replace(
        current,
        name=name[:256] if isinstance(name, str) and name else current.name,
        email=email if isinstance(email, str) and email else current.email,
        memberships=tuple(memberships),
        tags={**current.tags, subject_tag(provider.id): sub},
    )


def group_changes(
    state: HubState, provider: IdentityProviderSpec, user_id: str, claims: Mapping[str, Any]
) -> list[GroupSpec]:
    """The new specs of the mapped groups whose members change."""
    wanted = claimed_groups(claims, provider.groups_claim)
    join = {g for rule in provider.group_rules if rule.claim in wanted for g in rule.groups}
    mapped = {g for rule in provider.group_rules for g in rule.groups}
    out = []
    for gid in sorted(mapped):
        res = state.get("group", gid)
        if res is None or res.spec.org != provider.org:
            continue
        members: tuple[str, ...] = res.spec.members
        if gid in join and user_id not in members:
            out.append(msgspec.structs.replace(res.spec, members=(*members, user_id)))
        elif gid not in join and user_id in members:
            out.append(msgspec.structs.replace(res.spec, members=tuple(m for m in members if m != user_id)))
    return out


# --- flows in progress and nonces used (the sign-in bucket) ---------------------------


class Flow(msgspec.Struct, frozen=True, kw_only=True):
    provider: str
    nonce: str
    verifier: str
    redirect_uri: str
    browser: str  # sha256 of the value of the browser's flow cookie
    created_ms: int
    return_to: str = ""


def _flow_key(state: str) -> str:
    return "oidc.flow." + hashlib.sha256(state.encode()).hexdigest()[:48]


class FlowStore:
    """A flow is taken once: the callback deletes it by compare-and-set on
    the revision it read, so a replayed callback (the same state) finds
    nothing, even on another replica at the same instant."""

    def __init__(self, bucket: Bucket, *, ttl_ms: int = 600_000) -> None:
        self._bucket = bucket
        self.ttl_ms = ttl_ms

    async def put(self, state: str, flow: Flow) -> None:
        kv = await self._bucket.kv()
        await kv.put(_flow_key(state), msgspec.json.encode(flow))

    async def take(self, state: str, now_ms: int) -> Flow | None:
        key = _flow_key(state)
        flow, revision = await self._bucket.read(key, Flow)
        if flow is None or not revision:
            return None
        kv = await self._bucket.kv()
        try:
            await kv.delete(key, last=revision)
        except (KeyWrongLastSequenceError, KeyNotFoundError, JetStreamError):
            return None  # someone else took it
        if now_ms - flow.created_ms > self.ttl_ms:
            return None
        return flow

    async def use_nonce(self, provider: str, nonce: str) -> bool:
        """False when this nonce was used before (a replayed ID token)."""
        kv = await self._bucket.kv()
        digest = hashlib.sha256((provider + "\x00" + nonce).encode()).hexdigest()[:48]
        key = f"oidc.nonce.{digest}"
        try:
            await kv.create(key, b"1")
        except (KeyWrongLastSequenceError, JetStreamError):
            return False
        return True
