"""Small builders shared by the IAM tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hub.iam import VERSION, AttachedPolicy, AuthzRequest, Decision, Policy, evaluate, parse_policy

ALICE = "nrn:nexus:iam:acme:user/alice"
KEY_EU = "nrn:nexus:gateway:acme/eu:virtual-key/vk_1"
KEY_US = "nrn:nexus:gateway:acme/us:virtual-key/vk_2"


def stmt(effect: str = "Allow", action: Any = "*", resource: Any = "*", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"Effect": effect}
    if "NotAction" not in extra:
        out["Action"] = action
    if "NotResource" not in extra:
        out["Resource"] = resource
    out.update(extra)
    return out


def policy(*statements: dict[str, Any]) -> Policy:
    return parse_policy({"Version": VERSION, "Statement": list(statements)})


def attached(*policies: Policy, scope: str = "") -> list[AttachedPolicy]:
    return [
        AttachedPolicy(policy_id=f"p{n}", name=f"policy-{n}", document=p, scope=scope)
        for n, p in enumerate(policies)
    ]


def decide(
    policies: list[AttachedPolicy],
    action: str = "admin:virtual-key.create",
    resource: str = KEY_EU,
    context: Mapping[str, object] | None = None,
    principal: str = ALICE,
) -> Decision:
    return evaluate(
        policies, AuthzRequest(principal=principal, action=action, resource=resource, context=context or {})
    )
