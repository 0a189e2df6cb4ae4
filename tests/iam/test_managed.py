"""Managed policies: what each role may do at its own org, below it, and
nowhere else (the table in docs/iam.md)."""

from __future__ import annotations

from typing import Any

import pytest

from hub.iam import (
    ACTIONS,
    MANAGED_POLICY_NAMES,
    AttachedPolicy,
    AuthzRequest,
    NrnError,
    allowed_actions,
    evaluate,
    managed_policy,
    org_nrn,
    resource_nrn,
)

P = pytest.param
SCOPE = "acme/eu"
ME = "nrn:nexus:iam:acme/eu:user/alice"
OWN_KEY = resource_nrn("virtual-key", "acme/eu", "vk_mine")
SUB_KEY = resource_nrn("virtual-key", "acme/eu/de", "vk_sub")
OTHER_KEY = resource_nrn("virtual-key", "acme/us", "vk_other")  # another org of the same tenant
PARENT_KEY = resource_nrn("virtual-key", "acme", "vk_parent")
CREDENTIAL = resource_nrn("credential", SCOPE, "c1")
POLICY = resource_nrn("policy", SCOPE, "p1")
HOOK = resource_nrn("hook", SCOPE, "h1")
AUDIT = resource_nrn("audit", SCOPE, "trail")
PROVIDER = resource_nrn("provider", SCOPE, "openai")
GLOBAL_PROVIDER = resource_nrn("provider", "", "openai")

# What the Hub passes for a developer's own personal key in one of their projects.
MY_PERSONAL_KEY = {
    "nexus:VirtualKeyType": "personal",
    "nexus:ResourceOwner": "alice",
    "nexus:ResourceProject": "chatbot",
    "nexus:PrincipalProjects": ["chatbot", "search"],
}


def allowed(role: str, action: str, resource: str, context: dict[str, Any] | None = None) -> bool:
    policies = [AttachedPolicy("m", role, managed_policy(role, SCOPE), SCOPE)]
    return evaluate(policies, AuthzRequest(ME, action, resource, context or {})).allowed


CASES = [
    # super admin (attached at acme/eu: that subtree, everything)
    P("NexusSuperAdmin", "admin:credential.delete", CREDENTIAL, None, True, id="super-credentials"),
    P("NexusSuperAdmin", "admin:org.delete", org_nrn(SCOPE), None, True, id="super-own-org"),
    P("NexusSuperAdmin", "admin:virtual-key.revoke", OTHER_KEY, None, False, id="super-other-org"),
    # org admin
    P("NexusOrgAdmin", "admin:virtual-key.approve", OWN_KEY, None, True, id="orgadmin-approve-key"),
    P("NexusOrgAdmin", "admin:virtual-key.revoke", SUB_KEY, None, True, id="orgadmin-sub-org-key"),
    P("NexusOrgAdmin", "admin:virtual-key.revoke", OTHER_KEY, None, False, id="orgadmin-edit-other-orgs-key"),
    P("NexusOrgAdmin", "admin:virtual-key.read", PARENT_KEY, None, False, id="orgadmin-parent-org"),
    P("NexusOrgAdmin", "admin:credential.update", CREDENTIAL, None, True, id="orgadmin-credentials"),
    P("NexusOrgAdmin", "admin:policy.attach", POLICY, None, True, id="orgadmin-attach-policy"),
    P("NexusOrgAdmin", "admin:org.update", org_nrn(SCOPE), None, True, id="orgadmin-rename-own-org"),
    P("NexusOrgAdmin", "admin:org.delete", org_nrn(SCOPE), None, False, id="orgadmin-delete-own-org"),
    P("NexusOrgAdmin", "admin:org.create", org_nrn("acme/eu/de"), None, True, id="orgadmin-create-sub-org"),
    P("NexusOrgAdmin", "admin:org.create", org_nrn("acme/fr"), None, False, id="orgadmin-create-sibling"),
    P("NexusOrgAdmin", "admin:org.delete", org_nrn("acme/eu/de"), None, True, id="orgadmin-delete-sub-org"),
    P(
        "NexusOrgAdmin",
        "admin:config.import",
        resource_nrn("config", SCOPE, "all"),
        None,
        False,
        id="orgadmin-no-import",
    ),
    P("NexusOrgAdmin", "admin:provider.update", GLOBAL_PROVIDER, None, False, id="orgadmin-global-provider"),
    # security admin
    P("NexusSecurityAdmin", "admin:hook.update", HOOK, None, True, id="secadmin-hooks"),
    P("NexusSecurityAdmin", "admin:policy.create", POLICY, None, True, id="secadmin-policies"),
    P("NexusSecurityAdmin", "admin:audit.export", AUDIT, None, True, id="secadmin-audit"),
    P("NexusSecurityAdmin", "admin:virtual-key.revoke", OWN_KEY, None, True, id="secadmin-revoke-leaked-key"),
    P("NexusSecurityAdmin", "admin:virtual-key.create", OWN_KEY, None, False, id="secadmin-no-key-issue"),
    P("NexusSecurityAdmin", "admin:credential.read", CREDENTIAL, None, False, id="secadmin-no-credentials"),
    P("NexusSecurityAdmin", "admin:provider.update", PROVIDER, None, False, id="secadmin-no-provider-edit"),
    P("NexusSecurityAdmin", "admin:provider.read", PROVIDER, None, True, id="secadmin-reads-providers"),
    P(
        "NexusSecurityAdmin",
        "admin:hook.update",
        resource_nrn("hook", "acme/us", "h"),
        None,
        False,
        id="secadmin-other-org",
    ),
    # developer
    P(
        "NexusDeveloper",
        "admin:virtual-key.create",
        OWN_KEY,
        MY_PERSONAL_KEY,
        True,
        id="dev-create-own-personal-key",
    ),
    P("NexusDeveloper", "admin:virtual-key.rotate", OWN_KEY, MY_PERSONAL_KEY, True, id="dev-rotate-own-key"),
    P(
        "NexusDeveloper",
        "admin:virtual-key.approve",
        OWN_KEY,
        MY_PERSONAL_KEY,
        False,
        id="dev-cannot-approve-own-key",
    ),
    P("NexusDeveloper", "admin:virtual-key.delete", OWN_KEY, MY_PERSONAL_KEY, False, id="dev-no-delete"),
    P(
        "NexusDeveloper",
        "admin:virtual-key.revoke",
        OWN_KEY,
        {**MY_PERSONAL_KEY, "nexus:ResourceOwner": "bob"},
        False,
        id="dev-someone-elses-key",
    ),
    P(
        "NexusDeveloper",
        "admin:virtual-key.create",
        OWN_KEY,
        {**MY_PERSONAL_KEY, "nexus:VirtualKeyType": "application"},
        False,
        id="dev-application-key",
    ),
    P(
        "NexusDeveloper",
        "admin:virtual-key.create",
        OWN_KEY,
        {**MY_PERSONAL_KEY, "nexus:ResourceProject": "billing"},
        False,
        id="dev-project-not-theirs",
    ),
    P(
        "NexusDeveloper",
        "admin:virtual-key.create",
        OWN_KEY,
        {k: v for k, v in MY_PERSONAL_KEY.items() if k != "nexus:ResourceOwner"},
        False,
        id="dev-owner-unknown",
    ),
    P("NexusDeveloper", "admin:virtual-key.create", OTHER_KEY, MY_PERSONAL_KEY, False, id="dev-other-org"),
    P(
        "NexusDeveloper",
        "admin:model.read",
        resource_nrn("model", SCOPE, "gpt-4o"),
        None,
        True,
        id="dev-reads-models",
    ),
    P("NexusDeveloper", "admin:user.read", ME, None, True, id="dev-reads-self"),
    P(
        "NexusDeveloper",
        "admin:user.read",
        "nrn:nexus:iam:acme/eu:user/bob",
        None,
        False,
        id="dev-not-other-users",
    ),
    P("NexusDeveloper", "admin:credential.read", CREDENTIAL, None, False, id="dev-no-credentials"),
    P("NexusDeveloper", "admin:policy.read", POLICY, None, False, id="dev-no-policies"),
    # viewer
    P("NexusViewer", "admin:policy.read", POLICY, None, True, id="viewer-reads-policies"),
    P("NexusViewer", "admin:virtual-key.read", SUB_KEY, None, True, id="viewer-reads-sub-org"),
    P("NexusViewer", "admin:virtual-key.update", OWN_KEY, None, False, id="viewer-no-writes"),
    P("NexusViewer", "admin:credential.read", CREDENTIAL, None, False, id="viewer-no-credentials"),
    P("NexusViewer", "admin:audit.read", AUDIT, None, False, id="viewer-no-audit"),
    # auditor
    P("NexusAuditor", "admin:audit.read", AUDIT, None, True, id="auditor-reads-audit"),
    P("NexusAuditor", "admin:audit.verify", AUDIT, None, True, id="auditor-verifies"),
    P("NexusAuditor", "admin:org.read", org_nrn(SCOPE), None, False, id="auditor-audit-only"),
    P(
        "NexusAuditor",
        "admin:audit.read",
        resource_nrn("audit", "acme/us", "trail"),
        None,
        False,
        id="auditor-other-org",
    ),
]


@pytest.mark.parametrize(("role", "action", "resource", "context", "expected"), CASES)
def test_managed_role(
    role: str, action: str, resource: str, context: dict[str, Any] | None, expected: bool
) -> None:
    assert allowed(role, action, resource, context) is expected


def test_every_role_is_covered_by_the_table() -> None:
    assert {case.values[0] for case in CASES} == set(MANAGED_POLICY_NAMES)


def test_global_super_admin_reaches_global_resources() -> None:
    policies = [AttachedPolicy("m", "NexusSuperAdmin", managed_policy("NexusSuperAdmin", ""), "")]
    assert allowed_actions(policies, GLOBAL_PROVIDER, {}) == [a for a in ACTIONS]


def test_unknown_names_and_scopes_are_refused() -> None:
    with pytest.raises(KeyError, match="NexusRoot"):
        managed_policy("NexusRoot", "acme")
    with pytest.raises(NrnError):
        managed_policy("NexusViewer", "acme/*")
