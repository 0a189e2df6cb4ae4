"""The ``hub:`` config section: what only the Hub holds about identities and
keys, so that ``nexus hub export`` writes a file that imports back to the
same state (config as code).

Nodes ignore this section (a snapshot the Hub publishes always has it
empty): users, groups and policies never leave the Hub, and a key's budgets
and rate limit reach nodes compiled into the ``quotas:`` section.  Password
hashes are never part of it: an imported user signs in once an admin sets a
password.

These are also the specs the admin API takes and the CONFIG stream's events
carry (strict here, like every inbound payload).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec

from streams.config_base import Strict
from streams.config_quota import Budget, RateLimit


class Membership(Strict, frozen=True, kw_only=True):
    """A user's membership of an org, with the managed roles held there
    (``NexusDeveloper``... attached at that org's path)."""

    org: str
    roles: tuple[str, ...] = ()


class Attachment(Strict, frozen=True, kw_only=True):
    """A policy attached to a user or group: a custom policy's id or a
    managed policy's name, applying at ``org`` and below ("" = global)."""

    policy: str
    org: str = ""


class UserSpec(Strict, frozen=True, kw_only=True):
    id: str
    email: str
    name: str = ""
    # The home org: the user's NRN lies under it ("" = a platform user).
    org: str = ""
    memberships: tuple[Membership, ...] = ()
    # Projects the user works in (what NexusDeveloper's own-project
    # conditions test).
    projects: tuple[str, ...] = ()
    policies: tuple[Attachment, ...] = ()
    disabled: bool = False
    tags: Mapping[str, str] = {}


class GroupSpec(Strict, frozen=True, kw_only=True):
    id: str
    org: str = ""
    name: str = ""
    description: str = ""
    members: tuple[str, ...] = ()  # user ids
    roles: tuple[str, ...] = ()  # managed policies at the group's org
    policies: tuple[Attachment, ...] = ()


class PolicySpec(Strict, frozen=True, kw_only=True):
    """A custom policy, owned by an org ("" = global).  ``document`` is the
    AWS-style JSON (Version, Statement), parsed strictly by hub.iam."""

    id: str
    org: str = ""
    name: str = ""
    description: str = ""
    document: dict[str, Any]


class KeyBudget(Strict, frozen=True, kw_only=True):
    unit: Literal["usd", "tokens"] = "usd"
    limit: float
    window: str = "month"  # day | week | month or a rolling duration (24h)
    action: Literal["hard", "soft"] = "hard"
    alert_at: tuple[float, ...] = ()


class KeyRateLimit(Strict, frozen=True, kw_only=True):
    rpm: int | None = None
    tpm: int | None = None


KeyType = Literal["personal", "application"]


class KeyExtras(Strict, frozen=True, kw_only=True):
    """The lifecycle facts of a virtual key that nodes do not need as such."""

    id: str
    type: KeyType = "application"
    budgets: tuple[KeyBudget, ...] = ()
    rate_limit: KeyRateLimit | None = None


_Count = Annotated[int, msgspec.Meta(ge=1, le=10_000)]
_Rate = Annotated[float, msgspec.Meta(gt=0, le=10_000)]


class SigninSettings(Strict, frozen=True, kw_only=True):
    """How the Hub lets people in (the ``signin`` settings section, held by
    the Hub only, shared by its replicas; nodes never see it).

    Every attempt to sign in with a password takes a token from two buckets,
    one for the source IP and one for the login name (known or not: the
    answers must not tell which e-mails exist); an empty bucket answers 429
    before any password is checked.  ``lockout_failures`` wrong passwords in
    a row lock the login name for ``lockout_seconds`` (0 failures: never)."""

    ip_burst: _Count = 30
    ip_per_minute: _Rate = 30.0
    login_burst: _Count = 10
    login_per_minute: _Rate = 5.0
    lockout_failures: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 5
    lockout_seconds: Annotated[int, msgspec.Meta(ge=1, le=86_400)] = 900
    # A session ends after this long without a request, and in any case
    # this long after it began (at most 24 h: the session bucket's age).
    session_idle_seconds: Annotated[int, msgspec.Meta(ge=60, le=86_400)] = 1800
    session_max_seconds: Annotated[int, msgspec.Meta(ge=60, le=86_400)] = 12 * 3600
    # False: passwords are refused (sign in through an identity provider).
    password_login: bool = True
    # Admin API tokens: the longest lifetime one may be given.
    api_token_max_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] = 365


TokenKind = Literal["admin", "scim"]


class ApiTokenSpec(Strict, frozen=True, kw_only=True):
    """A bearer token the Hub issued (the ``api-token`` aggregate): the token
    itself is shown once to whoever asked for it; the CONFIG stream holds
    only its keyed hash (in the ``key.issued`` event, like a virtual key).

    ``admin``: acts as ``user`` on the admin API, never with more rights
    than that user holds now, narrowed to ``policy`` (a custom policy's id
    or a managed policy's name, at ``policy_org``) when one is named.
    ``scim``: an identity provider's provisioning client for ``org``
    (``/scim/v2``); it acts on that org's users and groups only."""

    id: str
    kind: TokenKind = "admin"
    user: str = ""
    # admin: the user's home org (where the token's NRN lies); scim: the org
    # it provisions.
    org: str = ""
    description: str = ""
    expires_at: dt.datetime
    policy: str = ""
    policy_org: str = ""


class GroupRule(Strict, frozen=True, kw_only=True):
    """What a value of the identity provider's groups claim gives a user of
    the provider's org: membership of Nexus groups, managed roles."""

    claim: str  # the IdP's group ("engineering", a group's object id...)
    groups: tuple[str, ...] = ()  # Nexus groups of the provider's org
    roles: tuple[str, ...] = ()  # managed roles at the provider's org


class IdentityProviderSpec(Strict, frozen=True, kw_only=True):
    """An OpenID Connect identity provider people of ``org`` sign in with
    (the ``identity-provider`` aggregate; authorization code + PKCE).

    The client secret is never part of it: ``client_secret_env`` names the
    Hub's environment variable holding it ("": a public client, PKCE only).
    ``issuer`` is an operator's outbound URL: https and a public address
    unless ``allow_private_network``."""

    id: str
    org: str
    name: str = ""
    issuer: str
    client_id: str
    client_secret_env: str = ""
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    # The claim holding the user's groups (a list of strings, or one string).
    groups_claim: str = "groups"
    group_rules: tuple[GroupRule, ...] = ()
    # Roles at ``org`` every user signing in through it gets.
    default_roles: tuple[str, ...] = ()
    # Create a user on their first sign-in (else only existing users of
    # the org, matched by a verified e-mail, may sign in).
    jit: bool = True
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    clock_skew_seconds: Annotated[int, msgspec.Meta(ge=0, le=300)] = 60
    allow_private_network: bool = False
    enabled: bool = True


class HubSection(Strict, frozen=True, kw_only=True):
    users: tuple[UserSpec, ...] = ()
    groups: tuple[GroupSpec, ...] = ()
    policies: tuple[PolicySpec, ...] = ()
    keys: tuple[KeyExtras, ...] = ()

    def empty(self) -> bool:
        return not (self.users or self.groups or self.policies or self.keys)


class KeySpec(Strict, frozen=True, kw_only=True):
    """A virtual key as an admin asks for it (the key itself and its hash
    are made by the Hub; ``id`` is assigned when empty)."""

    id: str = ""
    org: str
    project: str
    type: KeyType = "application"
    # The user a personal key belongs to (default: whoever creates it).
    owner: str = ""
    description: str = ""
    # Public model names the key may call; "*" allows every model.
    allowed_models: tuple[str, ...] = ("*",)
    expires_at: dt.datetime | None = None
    budgets: tuple[KeyBudget, ...] = ()
    rate_limit: KeyRateLimit | None = None
    metadata: Mapping[str, str | int | float | bool] = {}


class PriceSpec(Strict, frozen=True, kw_only=True):
    """A model's price (USD per million tokens), kept apart from the model so
    that finance can own prices without owning routing."""

    model: str
    input: float = 0.0
    output: float = 0.0
    cached_input: float | None = None
    cache_write: float | None = None
    reasoning: float | None = None


class BudgetQuota(Budget, tag_field="kind", tag="budget", frozen=True, kw_only=True):
    """A budget as the admin API takes it (``kind: budget``)."""


class RateLimitQuota(RateLimit, tag_field="kind", tag="rate_limit", frozen=True, kw_only=True):
    """A rate limit as the admin API takes it (``kind: rate_limit``)."""


QuotaSpec = BudgetQuota | RateLimitQuota

# Quota ids the Hub derives from a key's own budgets and rate limit.
KEY_QUOTA_PREFIX = "vk."
