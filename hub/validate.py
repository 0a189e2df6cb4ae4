"""Is a state acceptable?  The whole of it, every time: a change is judged
by the state it would produce, so no rule can be forgotten by one command
and a reference can never dangle.

Two layers: the file's own rules (``streams.config_validation.validate_config`` on
the compiled config, exactly what a node checks at load) and the Hub's
(users, groups, policies, prices, key lifecycle), which the file format
does not know.  The first problem found is reported with the aggregate and
field it concerns.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hub.compile import compile_config
from hub.signin.oidc import ASYMMETRIC_ALGORITHMS
from hub.state import KEY, HubState
from streams.config_base import ConfigError
from streams.config_checks import check_outbound_url
from streams.config_hub import (
    KEY_QUOTA_PREFIX,
    Attachment,
    GroupSpec,
    IdentityProviderSpec,
    KeySpec,
    PolicySpec,
    UserSpec,
)
from streams.config_validation import validate_config

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
# Ids that also name an IAM resource must fit in an NRN (hub.iam.nrn); an
# org's id is a part of org paths.
_NRN_ID = re.compile(r"^[A-Za-z0-9_.@+=,-]{1,128}$")
_ORG_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Problem(Exception):
    aggregate: str  # "" when the problem is not an item's
    rid: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


def check_id(aggregate: str, rid: str) -> None:
    if not _ID.match(rid):
        raise Problem(
            aggregate, rid, "id", f"{rid!r} is not a valid id (letters, digits, . _ : -; up to 128)"
        )
    if aggregate in ("project", "user", "group", "policy", KEY) and not _NRN_ID.match(rid):
        raise Problem(aggregate, rid, "id", f"{rid!r} is not a valid id here (letters, digits, . _ -)")
    if aggregate == "org" and not _ORG_ID.match(rid):
        raise Problem(
            aggregate, rid, "id", f"{rid!r} is not a valid org id (letters, digits, . _ -; up to 64)"
        )


def validate_state(state: HubState) -> None:
    """Raise the first Problem of ``state``."""
    _hub_rules(state)
    cfg, loc = compile_config(state)
    try:
        validate_config(cfg)
    except ConfigError as exc:
        msg = str(exc)
        found = loc.find(msg)
        if found is None:
            raise Problem("", "", "", msg) from None
        agg, rid, field = found
        raise Problem(agg, rid, _api_field(agg, field), msg.split(":", 1)[1].strip()) from None


def _api_field(aggregate: str, field: str) -> str:
    """A compiled-config field path in the terms of the API's spec."""
    if aggregate == KEY and field == "user":
        return "owner"
    return field


def _managed_names() -> frozenset[str]:
    from hub.iam import MANAGED_POLICY_NAMES

    return frozenset(MANAGED_POLICY_NAMES)


def _hub_rules(state: HubState) -> None:
    orgs = {r.id for r in state.all("org")}
    projects = {r.id: r.spec.org for r in state.all("project")}
    users = {r.id for r in state.all("user")}
    policies = {r.id for r in state.all("policy")}
    models = {r.id for r in state.all("model")}
    managed: frozenset[str] | None = None
    if state.count("user") or state.count("group") or state.count("policy") or state.count(IDP):
        managed = _managed_names()

    def check_attachments(agg: str, rid: str, attachments: tuple[Attachment, ...]) -> None:
        assert managed is not None
        for j, a in enumerate(attachments):
            if a.policy not in policies and a.policy not in managed:
                raise Problem(agg, rid, f"policies[{j}].policy", f"unknown policy {a.policy!r}")
            if a.org and a.org not in orgs:
                raise Problem(agg, rid, f"policies[{j}].org", f"unknown org {a.org!r}")

    def check_roles(agg: str, rid: str, roles: tuple[str, ...], where: str) -> None:
        assert managed is not None
        for j, role in enumerate(roles):
            if role not in managed:
                raise Problem(
                    agg, rid, f"{where}[{j}]", f"unknown role {role!r} (one of {', '.join(sorted(managed))})"
                )

    emails: dict[str, str] = {}
    for r in state.all("user"):
        u: UserSpec = r.spec
        check_id("user", r.id)
        if not _EMAIL.match(u.email):
            raise Problem("user", r.id, "email", f"{u.email!r} is not an e-mail address")
        other = emails.setdefault(u.email.lower(), r.id)
        if other != r.id:
            raise Problem("user", r.id, "email", f"{u.email!r} is already the e-mail of user {other!r}")
        if u.org and u.org not in orgs:
            raise Problem("user", r.id, "org", f"unknown org {u.org!r}")
        for j, m in enumerate(u.memberships):
            if m.org not in orgs:
                raise Problem("user", r.id, f"memberships[{j}].org", f"unknown org {m.org!r}")
            check_roles("user", r.id, m.roles, f"memberships[{j}].roles")
        for j, p in enumerate(u.projects):
            if p not in projects:
                raise Problem("user", r.id, f"projects[{j}]", f"unknown project {p!r}")
        check_attachments("user", r.id, u.policies)
    for r in state.all("group"):
        g: GroupSpec = r.spec
        check_id("group", r.id)
        if g.org and g.org not in orgs:
            raise Problem("group", r.id, "org", f"unknown org {g.org!r}")
        for j, member in enumerate(g.members):
            if member not in users:
                raise Problem("group", r.id, f"members[{j}]", f"unknown user {member!r}")
        if len(set(g.members)) != len(g.members):
            raise Problem("group", r.id, "members", "a user is listed twice")
        check_roles("group", r.id, g.roles, "roles")
        check_attachments("group", r.id, g.policies)
    if policies:
        from hub.iam import PolicyError, parse_policy

        assert managed is not None
        for r in state.all("policy"):
            pol: PolicySpec = r.spec
            check_id("policy", r.id)
            if r.id in managed:
                raise Problem("policy", r.id, "id", f"{r.id!r} is the name of a managed policy")
            if pol.org and pol.org not in orgs:
                raise Problem("policy", r.id, "org", f"unknown org {pol.org!r}")
            try:
                parse_policy(pol.document)
            except PolicyError as exc:
                raise Problem("policy", r.id, "document", str(exc)) from None
    for r in state.all("price"):
        if r.id not in models:
            raise Problem("price", r.id, "model", f"unknown model {r.id!r}")
    for r in state.all("model"):
        if r.spec.price is not None:
            raise Problem("model", r.id, "price", "set a model's price through /api/admin/prices")
    for r in state.all("quota"):
        if r.id.startswith(KEY_QUOTA_PREFIX):
            raise Problem(
                "quota", r.id, "id", f"ids starting with {KEY_QUOTA_PREFIX!r} belong to keys' own limits"
            )
    for r in state.all(KEY):
        k: KeySpec = r.spec
        check_id(KEY, r.id)
        if k.type == "personal" and not k.owner:
            raise Problem(KEY, r.id, "owner", "a personal key needs an owner (a user id)")
        # An application key's owner is a free label (traffic is attributed
        # to it); a personal key belongs to a user of the Hub.
        if k.type == "personal" and k.owner not in users:
            raise Problem(KEY, r.id, "owner", f"unknown user {k.owner!r}")
        for j, b in enumerate(k.budgets):
            if not b.limit > 0:
                raise Problem(KEY, r.id, f"budgets[{j}].limit", "must be positive")
        if k.rate_limit is not None:
            for name in ("rpm", "tpm"):
                v = getattr(k.rate_limit, name)
                if v is not None and v <= 0:
                    raise Problem(KEY, r.id, f"rate_limit.{name}", "must be positive")
    for r in state.all("org"):
        check_id("org", r.id)
    for r in state.all("project"):
        check_id("project", r.id)
    groups = {r.id: r.spec.org for r in state.all("group")}
    for r in state.all(IDP):
        _identity_provider(r.id, r.spec, orgs, groups, check_roles)


IDP = "identity-provider"
_ENV = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")


def _identity_provider(
    rid: str,
    p: IdentityProviderSpec,
    orgs: set[str],
    groups: dict[str, str],
    check_roles: Callable[[str, str, tuple[str, ...], str], None],
) -> None:
    check_id(IDP, rid)
    if p.org not in orgs:
        raise Problem(IDP, rid, "org", f"unknown org {p.org!r}")
    try:
        check_outbound_url(p.issuer, allow_private=p.allow_private_network, where="issuer")
    except ConfigError as exc:
        raise Problem(IDP, rid, "issuer", str(exc).removeprefix("issuer: ")) from None
    if not p.allow_private_network and not p.issuer.startswith("https://"):
        raise Problem(IDP, rid, "issuer", "must be https (or set allow_private_network for a test provider)")
    if not p.client_id:
        raise Problem(IDP, rid, "client_id", "is required")
    if p.client_secret_env and not _ENV.match(p.client_secret_env):
        raise Problem(IDP, rid, "client_secret_env", "an environment variable's name (A-Z, 0-9, _)")
    if "openid" not in p.scopes:
        raise Problem(IDP, rid, "scopes", "must include openid")
    if not p.algorithms:
        raise Problem(IDP, rid, "algorithms", "name at least one")
    for j, alg in enumerate(p.algorithms):
        if alg not in ASYMMETRIC_ALGORITHMS:
            raise Problem(
                IDP, rid, f"algorithms[{j}]", f"{alg!r} is not one of {', '.join(ASYMMETRIC_ALGORITHMS)}"
            )
    check_roles(IDP, rid, p.default_roles, "default_roles")
    for j, rule in enumerate(p.group_rules):
        if not rule.claim:
            raise Problem(IDP, rid, f"group_rules[{j}].claim", "is required")
        check_roles(IDP, rid, rule.roles, f"group_rules[{j}].roles")
        for k, g in enumerate(rule.groups):
            if groups.get(g) != p.org:
                raise Problem(IDP, rid, f"group_rules[{j}].groups[{k}]", f"no group {g!r} in org {p.org!r}")


def first_problem(state: HubState) -> Problem | None:
    try:
        validate_state(state)
    except Problem as p:
        return p
    return None


def references(state: HubState, aggregate: str, rid: str) -> list[str]:
    """What in the Hub's own aggregates still names (aggregate, rid): the
    reason a delete is refused (the config's references are found by
    validating the state without it)."""
    out: list[str] = []
    if aggregate == "org":
        out += [f"user {r.id}" for r in state.all("user") if _user_mentions_org(r.spec, rid)]
        out += [f"group {r.id}" for r in state.all("group") if r.spec.org == rid]
        out += [f"policy {r.id}" for r in state.all("policy") if r.spec.org == rid]
        out += [f"identity provider {r.id}" for r in state.all(IDP) if r.spec.org == rid]
    elif aggregate == "group":
        out += [
            f"identity provider {r.id}"
            for r in state.all(IDP)
            if any(rid in rule.groups for rule in r.spec.group_rules)
        ]
    elif aggregate == "user":
        out += [f"group {r.id}" for r in state.all("group") if rid in r.spec.members]
        out += [
            f"virtual key {r.id}" for r in state.all(KEY) if r.spec.type == "personal" and r.spec.owner == rid
        ]
    elif aggregate == "policy":
        for agg in ("user", "group"):
            out += [f"{agg} {r.id}" for r in state.all(agg) if any(a.policy == rid for a in r.spec.policies)]
    elif aggregate == "model":
        out += [f"price {r.id}" for r in state.all("price") if r.id == rid]
    elif aggregate == "project":
        out += [f"user {r.id}" for r in state.all("user") if rid in r.spec.projects]
    return out


def _user_mentions_org(u: Any, org: str) -> bool:
    return bool(
        u.org == org or any(m.org == org for m in u.memberships) or any(a.org == org for a in u.policies)
    )
