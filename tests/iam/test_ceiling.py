"""The grant ceiling: nobody creates, attaches or edits a policy that grants
more than they hold, and nobody raises their own rights (escalation attempts
included).  Each case is worked out by hand from the rule in
hub/iam/ceiling.py."""

from __future__ import annotations

from typing import Any

import pytest

from hub.iam import (
    VERSION,
    AttachedPolicy,
    NrnError,
    Policy,
    find_violations,
    grant_violations,
    languages,
    managed_policy,
    parse_policy,
)
from hub.iam.globs import Glob
from hub.iam.languages import common, resource_constraint, uncovered

P = pytest.param
ALICE = "nrn:nexus:iam:acme:user/alice"


def doc(*statements: dict[str, Any]) -> Policy:
    return parse_policy({"Version": VERSION, "Statement": list(statements)})


def allow(action: Any = "*", resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def deny(action: Any = "*", resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Deny", "Action": action, "Resource": resource, **extra}


def role(name: str, scope: str) -> AttachedPolicy:
    return AttachedPolicy(f"{name}@{scope}", name, managed_policy(name, scope), scope)


def custom(*statements: dict[str, Any], scope: str = "", name: str = "custom") -> AttachedPolicy:
    return AttachedPolicy(name, name, doc(*statements), scope)


ORG_ADMIN = [role("NexusOrgAdmin", "acme")]
SEC_ADMIN = [role("NexusSecurityAdmin", "acme")]
DEVELOPER = [role("NexusDeveloper", "acme")]
SUPER = [role("NexusSuperAdmin", "")]
OFFICE = {"IpAddress": {"nexus:SourceIp": "10.0.0.0/8"}}

CASES = [
    # -- escalation attempts ----------------------------------------------------
    P(
        ORG_ADMIN,
        managed_policy("NexusSuperAdmin", ""),
        "",
        "admin:org.create",
        id="orgadmin-attach-superadmin-to-self",
    ),
    P(
        ORG_ADMIN,
        managed_policy("NexusSuperAdmin", "acme"),
        "acme",
        "admin:config.import",
        id="orgadmin-superadmin-at-own-org",
    ),
    P(ORG_ADMIN, doc(allow()), "acme", "admin:org.delete", id="orgadmin-policy-wider-than-own"),
    P(
        ORG_ADMIN,
        doc(allow("admin:virtual-key.*", "nrn:nexus:gateway:beta:virtual-key/*")),
        "",
        "nrn:nexus:gateway:beta:virtual-key/",
        id="orgadmin-grant-on-another-orgs-keys",
    ),
    P(
        ORG_ADMIN,
        managed_policy("NexusViewer", "beta"),
        "beta",
        "admin:org.read",
        id="orgadmin-role-in-another-org",
    ),
    P(
        SEC_ADMIN,
        managed_policy("NexusOrgAdmin", "acme"),
        "acme",
        "admin:virtual-key.create",
        id="secadmin-join-orgadmin-group",
    ),
    P(
        SEC_ADMIN,
        doc(allow("admin:virtual-key.create")),
        "acme",
        "admin:virtual-key.create",
        id="secadmin-grant-key-issue",
    ),
    P(
        SEC_ADMIN,
        doc(allow("admin:credential.read")),
        "acme",
        "admin:credential.read",
        id="secadmin-grant-credentials",
    ),
    P(
        DEVELOPER,
        managed_policy("NexusViewer", "acme"),
        "acme",
        "admin:policy.read",
        id="developer-grant-viewer",
    ),
    P(
        DEVELOPER,
        managed_policy("NexusDeveloper", "acme"),
        "acme",
        "admin:user.read",
        id="developer-own-role-is-about-grantee",
    ),
    # -- within the ceiling -----------------------------------------------------
    P(SUPER, managed_policy("NexusSuperAdmin", ""), "", None, id="super-grants-super"),
    P(
        ORG_ADMIN,
        managed_policy("NexusOrgAdmin", "acme/eu"),
        "acme/eu",
        None,
        id="orgadmin-delegates-sub-org",
    ),
    P(ORG_ADMIN, managed_policy("NexusOrgAdmin", "acme"), "acme", None, id="orgadmin-peer-same-org"),
    P(
        ORG_ADMIN,
        managed_policy("NexusDeveloper", "acme/eu"),
        "acme/eu",
        None,
        id="orgadmin-grants-developer",
    ),
    P(ORG_ADMIN, managed_policy("NexusSecurityAdmin", "acme"), "acme", None, id="orgadmin-grants-secadmin"),
    P(
        ORG_ADMIN,
        doc(allow("admin:virtual-key.*", "nrn:nexus:*:*:*")),
        "acme",
        None,
        id="scope-cuts-wide-patterns",
    ),
    P(
        ORG_ADMIN,
        doc({"Effect": "Allow", "Action": "admin:virtual-key.read", "NotResource": "nrn:nexus:vault:*:*"}),
        "acme",
        None,
        id="notresource-inside-scope",
    ),
    P(
        ORG_ADMIN,
        doc({"Effect": "Allow", "Action": "admin:virtual-key.read", "NotResource": "nrn:nexus:vault:*:*"}),
        "",
        "admin:virtual-key.read",
        id="notresource-global",
    ),
    P(SEC_ADMIN, doc(allow("admin:hook.*")), "acme/eu", None, id="secadmin-grants-hooks"),
    P(SEC_ADMIN, managed_policy("NexusAuditor", "acme"), "acme", None, id="secadmin-grants-auditor"),
    P(
        ORG_ADMIN,
        doc(allow("admin:virtual-key.*", "nrn:nexus:gateway:acme:virtual-key/${nexus:PrincipalId}")),
        "acme",
        None,
        id="grantee-variable-in-resource",
    ),
    # -- future actions (wildcards, NotAction) ---------------------------------------
    P(
        ORG_ADMIN,
        doc(allow("admin:*.read")),
        "acme",
        "any future action matching admin:*.read",
        id="wildcard-reaching-excluded-config",
    ),
    P(ORG_ADMIN, doc(allow("admin:virtual-key.*")), "acme", None, id="wildcard-inside-holdings"),
    P(
        [
            custom(
                allow(
                    [
                        f"admin:virtual-key.{v}"
                        for v in ("create", "read", "update", "delete", "rotate", "revoke", "approve")
                    ]
                )
            )
        ],
        doc(allow("admin:virtual-key.*")),
        "",
        "any future action matching admin:virtual-key.*",
        id="listed-actions-do-not-cover-wildcard",
    ),
    P(
        SUPER,
        doc({"Effect": "Allow", "NotAction": "admin:audit.*", "Resource": "*"}),
        "acme",
        None,
        id="notaction-from-super",
    ),
    P(
        SEC_ADMIN,
        doc({"Effect": "Allow", "NotAction": "admin:audit.*", "Resource": "*"}),
        "acme",
        "admin:org.create",
        id="notaction-wider-than-secadmin",
    ),
]


@pytest.mark.parametrize(("grantor", "granted", "scope", "complaint"), CASES)
def test_ceiling(grantor: list[AttachedPolicy], granted: Policy, scope: str, complaint: str | None) -> None:
    found = find_violations(grantor, granted, scope, {}, principal=ALICE)
    if complaint is None:
        assert found == []
    else:
        assert found, "expected a violation"
        assert any(complaint in " ".join((*v.actions, v.resource)) for v in found), found


@pytest.mark.parametrize(
    ("grantor_condition", "granted_condition", "ok"),
    [
        P(OFFICE, None, False, id="unconditional-from-conditional"),
        P(OFFICE, OFFICE, True, id="same-condition"),
        P(OFFICE, {"IpAddress": {"nexus:SourceIp": "10.1.0.0/16"}}, True, id="narrower-network"),
        P(
            OFFICE,
            {"IpAddress": {"nexus:SourceIp": ["10.1.0.0/16", "192.168.0.0/16"]}},
            False,
            id="extra-network",
        ),
        P(OFFICE, {"IpAddressIfExists": {"nexus:SourceIp": "10.0.0.0/8"}}, False, id="ifexists-is-weaker"),
        P({"IpAddressIfExists": {"nexus:SourceIp": "10.0.0.0/8"}}, OFFICE, True, id="stronger-than-ifexists"),
        P(
            OFFICE,
            {"IpAddress": {"nexus:SourceIp": "10.0.0.0/8"}, "Bool": {"nexus:SecureTransport": True}},
            True,
            id="extra-condition-narrows",
        ),
        P(
            {"NumericLessThan": {"nexus:MultiFactorAuthAge": 3600}},
            {"NumericLessThan": {"nexus:MultiFactorAuthAge": 600}},
            True,
            id="numeric-tighter",
        ),
        P(
            {"NumericLessThan": {"nexus:MultiFactorAuthAge": 3600}},
            {"NumericLessThan": {"nexus:MultiFactorAuthAge": 7200}},
            False,
            id="numeric-looser",
        ),
        P(
            {"StringNotEquals": {"nexus:UserAgent": "curl"}},
            {"StringNotEquals": {"nexus:UserAgent": ["curl", "wget"]}},
            True,
            id="negated-excludes-more",
        ),
        P(
            {"StringNotEquals": {"nexus:UserAgent": ["curl", "wget"]}},
            {"StringNotEquals": {"nexus:UserAgent": "curl"}},
            False,
            id="negated-excludes-less",
        ),
        P(
            {"StringLike": {"nexus:UserAgent": "cli/*"}},
            {"StringLike": {"nexus:UserAgent": "cli/${*}"}},
            False,
            id="escaped-star-is-not-the-wildcard",
        ),
        P(
            {"StringEquals": {"nexus:ResourceOwner": "${nexus:PrincipalId}"}},
            {"StringEquals": {"nexus:ResourceOwner": "alice"}},
            True,
            id="grantor-variable-filled",
        ),
        P(
            {"StringEquals": {"nexus:ResourceOwner": "${nexus:PrincipalId}"}},
            {"StringEquals": {"nexus:ResourceOwner": "${nexus:PrincipalId}"}},
            False,
            id="grantee-variable-is-not-grantor",
        ),
    ],
)
def test_conditional_rights_grant_only_as_conditional(
    grantor_condition: dict[str, Any], granted_condition: dict[str, Any] | None, ok: bool
) -> None:
    grantor = [custom(allow("admin:virtual-key.*", Condition=grantor_condition))]
    extra = {"Condition": granted_condition} if granted_condition else {}
    found = grant_violations(
        grantor, doc(allow("admin:virtual-key.read", **extra)), "acme", {}, principal=ALICE
    )
    assert (found == []) is ok, found


@pytest.mark.parametrize(
    ("deny_statement", "granted_condition", "ok"),
    [
        P(deny("admin:credential.*"), None, True, id="deny-elsewhere"),
        P(deny("admin:virtual-key.delete"), None, False, id="deny-on-granted-action"),
        P(
            deny("admin:virtual-key.*", "nrn:nexus:gateway:acme/secret:*"),
            None,
            False,
            id="deny-on-part-of-region",
        ),
        P(
            deny(Condition={"NotIpAddress": {"nexus:SourceIp": "10.0.0.0/8"}}),
            OFFICE,
            True,
            id="deny-off-network-contradicted",
        ),
        P(
            deny(Condition={"NotIpAddress": {"nexus:SourceIp": "10.0.0.0/8"}}),
            None,
            False,
            id="deny-off-network-not-contradicted",
        ),
        P(
            deny(Condition={"NotIpAddress": {"nexus:SourceIp": "10.0.0.0/8"}}),
            {"IpAddress": {"nexus:SourceIp": "192.168.0.0/16"}},
            False,
            id="deny-off-network-other-network",
        ),
        P(
            deny(Condition={"Null": {"nexus:MultiFactorAuthPresent": "true"}}),
            {"Bool": {"nexus:MultiFactorAuthPresent": True}},
            True,
            id="deny-without-mfa-contradicted",
        ),
        P(
            deny(Condition={"Bool": {"nexus:MultiFactorAuthPresent": False}}),
            {"Bool": {"nexus:MultiFactorAuthPresent": True}},
            True,
            id="deny-bool-contradicted",
        ),
        P(
            deny(Condition={"StringEquals": {"nexus:ResourceTag/env": "prod"}}),
            {"StringEquals": {"nexus:ResourceTag/env": "dev"}},
            True,
            id="deny-prod-granted-dev",
        ),
        P(
            deny(Condition={"StringEquals": {"nexus:ResourceTag/env": "prod"}}),
            {"StringEqualsIfExists": {"nexus:ResourceTag/env": "dev"}},
            False,
            id="ifexists-does-not-contradict",
        ),
    ],
)
def test_a_grantors_deny_caps_what_they_grant(
    deny_statement: dict[str, Any], granted_condition: dict[str, Any] | None, ok: bool
) -> None:
    grantor = [role("NexusSuperAdmin", ""), custom(deny_statement, name="guard")]
    extra = {"Condition": granted_condition} if granted_condition else {}
    granted = doc(allow("admin:virtual-key.*", "nrn:nexus:gateway:acme/*:*", **extra))
    found = grant_violations(grantor, granted, "", {}, principal=ALICE)
    assert (found == []) is ok, found
    if not ok:
        assert any("denied to you by 'guard'" in line for line in found), found


def test_a_violation_names_an_example_resource_and_every_action() -> None:
    (violation,) = find_violations(
        ORG_ADMIN, managed_policy("NexusSuperAdmin", "acme"), "acme", {}, principal=ALICE
    )
    assert violation.statement == 0
    assert violation.sid == "Everything"
    assert violation.actions == (
        "admin:org.create",
        "admin:org.delete",
        "admin:config.import",
        "admin:config.export",
        "any future action matching *",
    )
    # the org itself (org admins create and delete below it, not it)
    assert violation.resource.startswith("nrn:nexus:") and ":acme:" in violation.resource
    assert violation.reason == "you may not do this yourself"


def test_editing_away_a_deny_needs_what_it_denied() -> None:
    before = doc(allow("admin:virtual-key.*"), deny("admin:virtual-key.delete"))
    after = doc(allow("admin:virtual-key.*"))
    # a grantor who may do everything with keys except delete them
    limited = [custom(allow("admin:virtual-key.*"), deny("admin:virtual-key.delete"), scope="acme")]
    assert grant_violations(limited, before, "acme", {}, principal=ALICE) == []
    found = grant_violations(limited, after, "acme", {}, principal=ALICE, replaces=before)
    # the new version grants deletion, and the Deny that held it back is gone
    key = "admin:virtual-key.delete on nrn:nexus:y:acme:y/y"
    assert found == [
        f"Statement[0]: {key}: denied to you by 'custom' Statement[1]",
        f"Statement[1]: {key}: removing this Deny lifts it, but denied to you by 'custom' Statement[1]",
    ]
    # only removing the Deny (the Allow stays narrower than it)
    narrow = doc(allow(["admin:virtual-key.read", "admin:virtual-key.update"]))
    wider_before = doc(
        allow(["admin:virtual-key.read", "admin:virtual-key.update"]), deny("admin:virtual-key.delete")
    )
    lifted = grant_violations(limited, narrow, "acme", {}, principal=ALICE, replaces=wider_before)
    assert len(lifted) == 1 and "removing this Deny lifts it" in lifted[0]
    # the org admin holds key deletion: they may lift it
    assert grant_violations(ORG_ADMIN, after, "acme", {}, principal=ALICE, replaces=before) == []
    # a Deny kept (even renamed) is not a removal
    renamed = doc(allow("admin:virtual-key.*"), deny("admin:virtual-key.delete") | {"Sid": "Renamed"})
    assert grant_violations(limited, renamed, "acme", {}, principal=ALICE, replaces=before) == []
    # detaching it is the same lift
    assert grant_violations(limited, None, "acme", {}, principal=ALICE, replaces=before) != []


def test_nobody_lifts_a_deny_that_binds_themselves() -> None:
    binding = doc(deny("admin:policy.*"))
    me = [role("NexusOrgAdmin", "acme"), AttachedPolicy("bind", "binding", binding, "acme")]
    found = grant_violations(me, None, "acme", {}, principal=ALICE, replaces=binding)
    assert found and "denied to you by 'binding'" in found[0]


def test_grantor_variables_come_from_the_grantors_context() -> None:
    self_service = [custom(allow("admin:user.*", "nrn:nexus:iam:*:user/${nexus:PrincipalId}"))]
    own = doc(allow("admin:user.read", "nrn:nexus:iam:acme:user/alice"))
    other = doc(allow("admin:user.read", "nrn:nexus:iam:acme:user/bob"))
    assert grant_violations(self_service, own, "", {}, principal=ALICE) == []
    assert grant_violations(self_service, other, "", {}, principal=ALICE) != []
    # without a principal the variable has no value and the statement grants nothing
    assert grant_violations(self_service, own, "", {}) != []


def test_too_complex_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(languages, "MAX_STATES", 5)
    found = grant_violations(ORG_ADMIN, doc(allow("admin:virtual-key.read")), "acme", {}, principal=ALICE)
    assert found and "too complex to prove" in found[0]


def test_bad_scope_is_refused() -> None:
    with pytest.raises(NrnError):
        grant_violations(ORG_ADMIN, doc(allow()), "acme/*", {})


@pytest.mark.parametrize(
    ("region", "union", "witness"),
    [
        P(["nrn:nexus:*:acme/*:*"], [["*"]], None, id="star-covers-all"),
        P(["nrn:nexus:*:acme/*:*"], [["nrn:nexus:*:acme:*"]], "acme/", id="root-does-not-cover-subtree"),
        P(
            ["nrn:nexus:gateway:acme/eu:virtual-key/*"],
            [["nrn:nexus:*:acme/*:*"]],
            None,
            id="subtree-covers-child",
        ),
        P(
            ["nrn:nexus:gateway:acme:key/a?"],
            [["nrn:nexus:gateway:acme:key/a*"]],
            None,
            id="question-inside-star",
        ),
        P(
            ["nrn:nexus:gateway:acme:key/a*"],
            [["nrn:nexus:gateway:acme:key/a?"]],
            "key/a",
            id="star-not-inside-question",
        ),
        P(
            ["nrn:nexus:*:a:x/y"],
            [["nrn:nexus:gateway:a:x/y"], ["nrn:nexus:iam:a:x/y"]],
            "nrn:nexus:",
            id="union-gap",
        ),
        # a part wildcard never crosses ':' so '*' inside the org part cannot reach the type
        P(["nrn:nexus:gateway:acme:user/*"], [["nrn:nexus:gateway:*:user/*"]], None, id="part-wildcard"),
    ],
)
def test_language_cover(region: list[str], union: list[list[str]], witness: str | None) -> None:
    found = uncovered(
        (resource_constraint(region),), [tuple(resource_constraint([p]) for p in member) for member in union]
    )
    if witness is None:
        assert found is None
    else:
        assert found is not None and witness in found
        assert all(Glob.parse(p, any_if_star=True).matches(found) for p in region)
        assert not any(Glob.parse(p, any_if_star=True).matches(found) for member in union for p in member)


def test_language_intersection() -> None:
    assert (
        common((resource_constraint(["nrn:nexus:*:acme:*"]), resource_constraint(["nrn:nexus:*:beta:*"])))
        is None
    )
    both = common(
        (resource_constraint(["nrn:nexus:gateway:*:*"]), resource_constraint(["nrn:nexus:*:acme:*"]))
    )
    assert both is not None and both.startswith("nrn:nexus:gateway:acme:")
    # a NotResource: everything except the vault
    outside = common(
        (resource_constraint(["nrn:nexus:*:*:*"]), resource_constraint(["nrn:nexus:vault:*:*"], negated=True))
    )
    assert outside is not None and not outside.startswith("nrn:nexus:vault:")


@pytest.mark.parametrize(
    ("condition", "grantor_context", "ok"),
    [
        P(
            {"ForAnyValue:StringEquals": {"nexus:PrincipalGroups": "admins"}},
            {"nexus:PrincipalGroups": ["admins"]},
            True,
            id="grantor-in-the-group",
        ),
        P(
            {"ForAnyValue:StringEquals": {"nexus:PrincipalGroups": "admins"}},
            {"nexus:PrincipalGroups": ["dev"]},
            False,
            id="grantor-not-in-the-group",
        ),
        P({"StringEquals": {"nexus:PrincipalOrgPath": "acme"}}, {}, True, id="grantor-org-derived"),
        P({"StringEquals": {"nexus:PrincipalOrgPath": "beta"}}, {}, False, id="grantor-other-org"),
        P(
            {"StringEquals": {"nexus:PrincipalTag/clearance": "high"}},
            {"nexus:PrincipalTag/clearance": "high"},
            True,
            id="grantor-tag",
        ),
        # depends on the resource asked for: not decidable now, so it must be implied (it is not)
        P(
            {"ForAnyValue:StringEquals": {"nexus:PrincipalProjects": "${nexus:ResourceProject}"}},
            {"nexus:PrincipalProjects": ["p1"]},
            False,
            id="resource-dependent-principal-test",
        ),
    ],
)
def test_tests_of_who_the_grantor_is_are_decided_from_their_context(
    condition: dict[str, Any], grantor_context: dict[str, Any], ok: bool
) -> None:
    grantor = [custom(allow("admin:virtual-key.*", Condition=condition))]
    found = grant_violations(
        grantor, doc(allow("admin:virtual-key.read")), "acme", grantor_context, principal=ALICE
    )
    assert (found == []) is ok, found


def test_a_deny_that_does_not_bind_the_grantor_does_not_cap_them() -> None:
    guard = deny(
        "admin:virtual-key.*",
        Condition={"ForAnyValue:StringEquals": {"nexus:PrincipalGroups": "contractors"}},
    )
    grantor = [role("NexusSuperAdmin", ""), custom(guard, name="guard")]
    granted = doc(allow("admin:virtual-key.read"))
    assert (
        grant_violations(grantor, granted, "acme", {"nexus:PrincipalGroups": ["staff"]}, principal=ALICE)
        == []
    )
    bound = grant_violations(
        grantor, granted, "acme", {"nexus:PrincipalGroups": ["contractors"]}, principal=ALICE
    )
    assert bound and "denied to you by 'guard'" in bound[0]


def test_a_plain_action_outside_the_catalogue_is_checked_too() -> None:
    stored = parse_policy(
        {"Version": VERSION, "Statement": [allow("admin:retired.thing")]}, known_actions=None
    )
    assert grant_violations(SUPER, stored, "", {}, principal=ALICE) == []
    assert "admin:retired.thing" in grant_violations(SEC_ADMIN, stored, "acme", {}, principal=ALICE)[0]
