"""The action catalogue: every ``admin:<resource>.<verb>`` the Hub serves, and
the NRN service each resource type lives in.

When the Hub gains a route with a new action, add the verb here (one line);
the managed policies, ``allowed_actions`` and the grant ceiling pick it up.
"""

from __future__ import annotations

from typing import Final

from hub.iam.nrn import nrn

# resource type -> (NRN service, verbs).  CRUD is create/read/update/delete;
# ``read`` covers both get and list.
RESOURCE_TYPES: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "org": ("iam", ("create", "read", "update", "delete")),
    "project": ("iam", ("create", "read", "update", "delete")),
    "user": ("iam", ("create", "read", "update", "delete", "revoke-sessions", "unlock")),
    "group": ("iam", ("create", "read", "update", "delete", "add-member", "remove-member")),
    "policy": ("iam", ("create", "read", "update", "delete", "attach", "detach")),
    # an identity provider's SCIM client for one org (/scim/v2)
    "scim-token": ("iam", ("create", "read", "revoke")),
    # an org's OpenID Connect providers (sign-in, JIT users, group mapping)
    "identity-provider": ("iam", ("create", "read", "update", "delete")),
    # what another principal may do (the simulator); the resource is that principal
    "iam": ("iam", ("simulate",)),
    "virtual-key": ("gateway", ("create", "read", "update", "delete", "rotate", "revoke", "approve")),
    # probe: send the provider a request with its credential (test, model discovery)
    "provider": ("gateway", ("create", "read", "update", "delete", "probe")),
    "model": ("gateway", ("create", "read", "update", "delete")),
    "price": ("gateway", ("create", "read", "update", "delete")),
    "routing-rule": ("gateway", ("create", "read", "update", "delete")),
    "hook": ("gateway", ("create", "read", "update", "delete")),
    "quota": ("gateway", ("create", "read", "update", "delete")),
    "cache": ("gateway", ("create", "read", "update", "delete")),
    # provider credentials (the vault): metadata only is ever read back;
    # probe: does it work against its provider
    "credential": ("vault", ("create", "read", "update", "delete", "probe")),
    # the vault's key versions: rotate (a new version and a rewrap), retire
    "vault": ("vault", ("read", "rotate", "retire")),
    "siem-sink": ("audit", ("create", "read", "update", "delete")),
    "audit": ("audit", ("read", "verify", "export")),
    # the fleet: things (enrol = create; override: set or clear one of its
    # config values; revoke: out of the fleet) and the config template of
    # each thing type
    "thing": ("fleet", ("create", "read", "override", "revoke")),
    "thing-template": ("fleet", ("read", "update")),
    # config as code: `nexus hub import` / `export`
    "config": ("hub", ("import", "export")),
    # the Hub's settings sections (gateway, auth, audit, hooks, quotas, routing, proxy...)
    "settings": ("hub", ("read", "update")),
    # the fleet kill switch (every node's compliance engine out of the path)
    "kill-switch": ("gateway", ("read", "engage", "release")),
    # the Hub's scheduled jobs: their schedule and run history; run one now
    "job": ("hub", ("read", "run")),
    # one-time tokens a device enrols with (shown once, stored hashed)
    "enrolment-token": ("fleet", ("create", "read", "revoke")),
    # enrolled agents (their certificates and attestation keys); revoke: the
    # proxies stop trusting its attestation within seconds
    "agent": ("fleet", ("read", "revoke")),
}

ACTIONS: Final[tuple[str, ...]] = tuple(
    f"admin:{rtype}.{verb}" for rtype, (_service, verbs) in RESOURCE_TYPES.items() for verb in verbs
)


def resource_nrn(rtype: str, org_path: str, id: str) -> str:
    """The NRN of a resource of a catalogued type (its service from the table)."""
    try:
        service = RESOURCE_TYPES[rtype][0]
    except KeyError:
        raise ValueError(f"unknown resource type {rtype!r}") from None
    return nrn(service, org_path, rtype, id)


def org_nrn(org_path: str) -> str:
    """An org is a resource inside itself (``acme/eu`` ->
    ``nrn:nexus:iam:acme/eu:org/eu``), so whoever administers a subtree can
    read its root and a new sub-org's NRN lies inside its parent's scope."""
    if not org_path:
        raise ValueError("the global scope is not an org")
    return resource_nrn("org", org_path, org_path.rsplit("/", 1)[-1])
