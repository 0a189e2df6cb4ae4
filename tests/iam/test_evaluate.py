"""The evaluator: decisions, the deciding statement, matched statements and
missing context keys."""

from __future__ import annotations

from typing import Any

import pytest

from hub.iam import AuthzRequest, NrnError, StatementRef, allowed_actions, evaluate, is_allowed
from tests.iam.helpers import ALICE, KEY_EU, KEY_US, attached, decide, policy, stmt

P = pytest.param
VK_CREATE = "admin:virtual-key.create"


@pytest.mark.parametrize(
    ("statements", "action", "resource", "outcome"),
    [
        P([], VK_CREATE, KEY_EU, "implicit_deny", id="no-policy-default-deny"),
        P([stmt()], VK_CREATE, KEY_EU, "allowed", id="allow-all"),
        P([stmt("Deny")], VK_CREATE, KEY_EU, "explicit_deny", id="deny-all"),
        P([stmt(), stmt("Deny")], VK_CREATE, KEY_EU, "explicit_deny", id="deny-wins-after"),
        P([stmt("Deny"), stmt()], VK_CREATE, KEY_EU, "explicit_deny", id="deny-wins-before"),
        P([stmt(action="admin:virtual-key.*")], VK_CREATE, KEY_EU, "allowed", id="action-wildcard"),
        P(
            [stmt(action="admin:virtual-key.*")],
            "admin:policy.create",
            KEY_EU,
            "implicit_deny",
            id="action-wildcard-miss",
        ),
        P([stmt(action="admin:*.read")], "admin:org.read", KEY_EU, "allowed", id="action-mid-wildcard"),
        P(
            [stmt(action="admin:*.read")],
            "admin:org.update",
            KEY_EU,
            "implicit_deny",
            id="action-mid-wildcard-miss",
        ),
        P(
            [stmt(action="admin:virtual-key.r?ad")],
            "admin:virtual-key.read",
            KEY_EU,
            "allowed",
            id="action-question",
        ),
        P([stmt(action=["admin:org.read", VK_CREATE])], VK_CREATE, KEY_EU, "allowed", id="action-list"),
        P([stmt(NotAction="admin:policy.*")], VK_CREATE, KEY_EU, "allowed", id="notaction-outside"),
        P([stmt(NotAction="admin:virtual-key.*")], VK_CREATE, KEY_EU, "implicit_deny", id="notaction-inside"),
        P(
            [stmt(), stmt("Deny", NotAction="admin:*.read")],
            VK_CREATE,
            KEY_EU,
            "explicit_deny",
            id="deny-notaction-read-only",
        ),
        P(
            [stmt(), stmt("Deny", NotAction="admin:*.read")],
            "admin:org.read",
            KEY_EU,
            "allowed",
            id="deny-notaction-lets-reads",
        ),
        P(
            [stmt(resource="nrn:nexus:gateway:acme/eu:virtual-key/*")],
            VK_CREATE,
            KEY_EU,
            "allowed",
            id="resource-match",
        ),
        P(
            [stmt(resource="nrn:nexus:gateway:acme/eu:virtual-key/*")],
            VK_CREATE,
            KEY_US,
            "implicit_deny",
            id="resource-miss",
        ),
        P(
            [stmt(NotResource="nrn:nexus:gateway:acme/us:*")],
            VK_CREATE,
            KEY_EU,
            "allowed",
            id="notresource-outside",
        ),
        P(
            [stmt(NotResource="nrn:nexus:gateway:acme/us:*")],
            VK_CREATE,
            KEY_US,
            "implicit_deny",
            id="notresource-inside",
        ),
        P(
            [stmt(), stmt("Deny", NotResource="nrn:nexus:*:acme/eu:*")],
            VK_CREATE,
            KEY_US,
            "explicit_deny",
            id="deny-everything-but-eu",
        ),
        P(
            [stmt(), stmt("Deny", NotResource="nrn:nexus:*:acme/eu:*")],
            VK_CREATE,
            KEY_EU,
            "allowed",
            id="deny-everything-but-eu-eu",
        ),
        P(
            [stmt(resource="nrn:nexus:iam:*:user/${nexus:PrincipalId}")],
            "admin:user.read",
            ALICE,
            "allowed",
            id="resource-variable-self",
        ),
        P(
            [stmt(resource="nrn:nexus:iam:*:user/${nexus:PrincipalId}")],
            "admin:user.read",
            "nrn:nexus:iam:acme:user/bob",
            "implicit_deny",
            id="resource-variable-other",
        ),
        P(
            [stmt("Deny", resource="nrn:nexus:iam:*:user/${nexus:PrincipalId}"), stmt()],
            "admin:user.delete",
            ALICE,
            "explicit_deny",
            id="deny-self-delete",
        ),
    ],
)
def test_outcomes(statements: list[dict[str, Any]], action: str, resource: str, outcome: str) -> None:
    policies = attached(policy(*statements)) if statements else []
    decision = decide(policies, action=action, resource=resource)
    assert decision.outcome == outcome
    assert decision.allowed is (outcome == "allowed")
    assert is_allowed(policies, AuthzRequest(ALICE, action, resource, {})) is decision.allowed


def ref(policy_id: str, index: int, effect: str = "Allow", sid: str = "") -> StatementRef:
    return StatementRef(
        policy_id=policy_id, policy_name=f"policy-{policy_id[1:]}", sid=sid, effect=effect, index=index
    )  # type: ignore[arg-type]


def test_explanation_names_deciding_and_every_matched_statement() -> None:
    readers = policy(
        stmt(action="admin:org.read", Sid="OrgRead"), stmt(action="admin:virtual-key.*", Sid="Keys")
    )
    admin = policy(stmt(Sid="All"))
    guard = policy(
        stmt(
            "Deny",
            action=VK_CREATE,
            Sid="NoKeysOffVpn",
            Condition={"NotIpAddress": {"nexus:SourceIp": "10.0.0.0/8"}},
        ),
        stmt("Deny", action="admin:policy.*", Sid="NoPolicies"),
    )
    policies = attached(readers, admin, guard)

    allowed = decide(policies, context={"nexus:SourceIp": "10.1.1.1"})
    assert allowed.outcome == "allowed"
    assert allowed.deciding == ref("p0", 1, sid="Keys")
    assert allowed.matched == (ref("p0", 1, sid="Keys"), ref("p1", 0, sid="All"))

    denied = decide(policies, context={"nexus:SourceIp": "8.8.8.8"})
    assert denied.outcome == "explicit_deny"
    assert denied.deciding == ref("p2", 0, "Deny", "NoKeysOffVpn")
    assert denied.matched == (
        ref("p0", 1, sid="Keys"),
        ref("p1", 0, sid="All"),
        ref("p2", 0, "Deny", "NoKeysOffVpn"),
    )

    nothing = decide(attached(readers), action="admin:hook.delete")
    assert nothing == nothing.__class__(allowed=False, outcome="implicit_deny", deciding=None)


@pytest.mark.parametrize(
    ("statements", "context", "missing"),
    [
        P(
            [stmt(Condition={"IpAddress": {"nexus:SourceIp": "10.0.0.0/8"}})],
            {},
            ("nexus:SourceIp",),
            id="absent-ip",
        ),
        P(
            [stmt(Condition={"IpAddress": {"nexus:SourceIp": "10.0.0.0/8"}})],
            {"nexus:SourceIp": "1.1.1.1"},
            (),
            id="present",
        ),
        P(
            [stmt(Condition={"IpAddressIfExists": {"nexus:SourceIp": "10.0.0.0/8"}})],
            {},
            ("nexus:SourceIp",),
            id="ifexists-still-reported",
        ),
        P([stmt(Condition={"Null": {"nexus:ResourceOwner": "true"}})], {}, (), id="null-not-reported"),
        P(
            [
                stmt(
                    Condition={
                        "Null": {"nexus:ResourceOwner": "true"},
                        "StringEquals": {"nexus:ResourceOwner": "a"},
                    }
                )
            ],
            {},
            ("nexus:ResourceOwner",),
            id="null-and-compared",
        ),
        P(
            [stmt(action="admin:org.read", Condition={"IpAddress": {"nexus:SourceIp": "10.0.0.0/8"}})],
            {},
            (),
            id="other-action-not-reported",
        ),
        P(
            [
                stmt(
                    resource="nrn:nexus:*:acme/us:*",
                    Condition={"IpAddress": {"nexus:SourceIp": "10.0.0.0/8"}},
                )
            ],
            {},
            (),
            id="other-resource-not-reported",
        ),
        P(
            [stmt(Condition={"StringEquals": {"nexus:ResourceOwner": "${nexus:ResourceProject}"}})],
            {},
            ("nexus:ResourceOwner", "nexus:ResourceProject"),
            id="variable-reported",
        ),
        P(
            [stmt(resource="nrn:nexus:gateway:*:virtual-key/${nexus:ResourceTag/key}")],
            {},
            ("nexus:ResourceTag/key",),
            id="resource-variable-reported",
        ),
        P(
            [
                stmt(
                    Condition={
                        "DateLessThan": {"nexus:CurrentTime": "2030-01-01"},
                        "Bool": {"nexus:SecureTransport": True},
                    }
                ),
                stmt("Deny", Condition={"StringEquals": {"nexus:ResourceTag/env": "prod"}}),
            ],
            {},
            ("nexus:CurrentTime", "nexus:ResourceTag/env", "nexus:SecureTransport"),
            id="sorted-across-statements",
        ),
    ],
)
def test_missing_context_keys(
    statements: list[dict[str, Any]], context: dict[str, Any], missing: tuple[str, ...]
) -> None:
    assert decide(attached(policy(*statements)), context=context).missing_context_keys == missing


@pytest.mark.parametrize(
    ("scope", "resource", "allowed"),
    [
        P("", KEY_EU, True, id="global"),
        P("acme", KEY_EU, True, id="ancestor"),
        P("acme/eu", KEY_EU, True, id="same"),
        P("acme/us", KEY_EU, False, id="sibling"),
        P("acme/eu/de", KEY_EU, False, id="descendant-scope-not-parent"),
        P("acme", "nrn:nexus:gateway::provider/openai", False, id="org-scope-not-global-resource"),
    ],
)
def test_a_policy_applies_only_inside_its_scope(scope: str, resource: str, allowed: bool) -> None:
    everything = attached(policy(stmt()), scope=scope)
    assert decide(everything, resource=resource).allowed is allowed
    # and a Deny attached elsewhere does not reach in
    denied = attached(policy(stmt()))[0:1] + attached(policy(stmt("Deny")), scope=scope)
    assert decide(denied, resource=resource).allowed is not allowed


def test_allowed_actions_lists_what_the_console_may_render() -> None:
    policies = attached(
        policy(
            stmt(action=["admin:virtual-key.*", "admin:org.read"]),
            stmt("Deny", action="admin:virtual-key.delete"),
            stmt(
                "Deny",
                action="admin:virtual-key.approve",
                Condition={"StringEquals": {"nexus:ResourceOwner": "${nexus:PrincipalId}"}},
            ),
        )
    )
    mine = allowed_actions(policies, KEY_EU, {"nexus:ResourceOwner": "alice"}, principal=ALICE)
    assert mine == [  # catalogue order
        "admin:org.read",
        "admin:virtual-key.create",
        "admin:virtual-key.read",
        "admin:virtual-key.update",
        "admin:virtual-key.rotate",
        "admin:virtual-key.revoke",
    ]
    theirs = allowed_actions(policies, KEY_EU, {"nexus:ResourceOwner": "bob"}, principal=ALICE)
    assert "admin:virtual-key.approve" in theirs
    assert allowed_actions([], KEY_EU, {}) == []
    assert allowed_actions(policies, KEY_EU, {}, ["admin:org.read", "admin:org.update"]) == ["admin:org.read"]


@pytest.mark.parametrize(
    ("principal", "resource", "complaint"),
    [
        P(ALICE, "vk_1", "resource", id="resource-not-nrn"),
        P(ALICE, "nrn:nexus:gateway:acme:virtual-key/*", "resource", id="resource-wildcard"),
        P("alice", KEY_EU, "principal", id="principal-not-nrn"),
    ],
)
def test_requests_must_name_nrns(principal: str, resource: str, complaint: str) -> None:
    with pytest.raises(NrnError, match=complaint):
        evaluate(attached(policy(stmt())), AuthzRequest(principal, VK_CREATE, resource, {}))


def test_decision_serialises_for_the_audit_record() -> None:
    import msgspec

    decision = decide(attached(policy(stmt(Sid="All"))))
    assert msgspec.json.decode(msgspec.json.encode(decision)) == {
        "allowed": True,
        "outcome": "allowed",
        "deciding": {
            "policy_id": "p0",
            "policy_name": "policy-0",
            "sid": "All",
            "effect": "Allow",
            "index": 0,
        },
        "matched": [
            {"policy_id": "p0", "policy_name": "policy-0", "sid": "All", "effect": "Allow", "index": 0}
        ],
        "missing_context_keys": [],
    }


@pytest.mark.parametrize(
    ("context", "allowed"),
    [
        P({"nexus:SourceIp": ["10.0.0.1"]}, True, id="one-value-list"),
        P({"nexus:SourceIp": "10.0.0.1"}, True, id="scalar"),
    ],
)
def test_single_valued_keys_take_one_value(context: dict[str, Any], allowed: bool) -> None:
    office = attached(policy(stmt(Condition={"IpAddress": {"nexus:SourceIp": "10.0.0.0/8"}})))
    assert decide(office, context=context).allowed is allowed


def test_several_values_under_a_single_valued_key_are_refused_naming_it() -> None:
    # otherwise "the value" could be 10.0.0.1 for an IpAddress test and
    # 8.8.8.8 for a NotIpAddress one in the same request
    from hub.iam import ContextError

    office = attached(policy(stmt(Condition={"IpAddress": {"nexus:SourceIp": "10.0.0.0/8"}})))
    with pytest.raises(ContextError) as caught:
        decide(office, context={"nexus:SourceIp": ["10.0.0.1", "8.8.8.8"]})
    assert caught.value.key == "nexus:SourceIp"
