"""Managed policies: the six roles, each a function of the org path it is
attached at.  docs/iam.md has the table of what each may do and why (a test
keeps that table equal to these documents).
"""

from __future__ import annotations

import functools
from typing import Any, Final

from hub.iam.actions import ACTIONS
from hub.iam.nrn import NrnError, valid_org_path
from hub.iam.policy import VERSION, Policy, parse_policy

MANAGED_POLICY_NAMES: Final = (
    "NexusSuperAdmin",
    "NexusOrgAdmin",
    "NexusSecurityAdmin",
    "NexusDeveloper",
    "NexusViewer",
    "NexusAuditor",
)


def _under(scope: str, service: str = "*", rtype: str = "*", rid: str = "*") -> list[str]:
    """Resource patterns for everything of a kind at ``scope`` and below."""
    last = f"{rtype}/{rid}" if rtype != "*" else "*"
    if scope == "":
        return ["*"] if last == "*" and service == "*" else [f"nrn:nexus:{service}:*:{last}"]
    return [f"nrn:nexus:{service}:{scope}:{last}", f"nrn:nexus:{service}:{scope}/*:{last}"]


def _below(scope: str, service: str, rtype: str) -> list[str]:
    """Strictly below ``scope`` (sub-orgs, not the org itself)."""
    return [f"nrn:nexus:{service}:{scope}/*:{rtype}/*" if scope else f"nrn:nexus:{service}:*:{rtype}/*"]


# What a viewer reads: every catalogue read except provider credentials, the
# vault's keys and the audit trail (the auditor's).
_VIEWER_READS: Final = tuple(
    a
    for a in ACTIONS
    if a.endswith(".read") and a not in ("admin:credential.read", "admin:vault.read", "admin:audit.read")
)
_DEVELOPER_READS: Final = (
    "admin:org.read",
    "admin:project.read",
    "admin:provider.read",
    "admin:model.read",
    "admin:price.read",
    "admin:routing-rule.read",
    "admin:hook.read",
    "admin:quota.read",
)
_SECURITY_READS: Final = tuple(
    a
    for a in _VIEWER_READS
    if a.split(":")[1].split(".")[0] not in ("hook", "policy", "group", "siem-sink", "audit")
)


def _statements(name: str, scope: str) -> list[dict[str, Any]]:
    if name == "NexusSuperAdmin":
        return [{"Sid": "Everything", "Effect": "Allow", "Action": "*", "Resource": _under(scope)}]
    if name == "NexusOrgAdmin":
        return [
            {
                "Sid": "AdministerTheOrgTree",
                "Effect": "Allow",
                "NotAction": ["admin:org.create", "admin:org.delete", "admin:config.*"],
                "Resource": _under(scope),
            },
            {
                "Sid": "CreateAndDeleteSubOrgs",
                "Effect": "Allow",
                "Action": ["admin:org.create", "admin:org.delete"],
                "Resource": _below(scope, "iam", "org"),
            },
        ]
    if name == "NexusSecurityAdmin":
        return [
            {
                "Sid": "GuardrailsPoliciesAndAudit",
                "Effect": "Allow",
                "Action": [
                    "admin:hook.*",
                    "admin:policy.*",
                    "admin:group.*",
                    "admin:siem-sink.*",
                    "admin:audit.*",
                    "admin:iam.simulate",
                    "admin:virtual-key.revoke",
                    # incident response: take a suspect node out of the fleet
                    "admin:thing.revoke",
                    # incident response: end a suspect account's sessions
                    "admin:user.revoke-sessions",
                    "admin:user.unlock",
                    # and stop trusting a lost or compromised device
                    "admin:agent.revoke",
                ],
                "Resource": _under(scope),
            },
            {
                "Sid": "ReadConfiguration",
                "Effect": "Allow",
                "Action": list(_SECURITY_READS),
                "Resource": _under(scope),
            },
        ]
    if name == "NexusDeveloper":
        return [
            {
                "Sid": "ReadWhatKeysUse",
                "Effect": "Allow",
                "Action": list(_DEVELOPER_READS),
                "Resource": _under(scope),
            },
            {
                "Sid": "ReadOwnUser",
                "Effect": "Allow",
                "Action": "admin:user.read",
                "Resource": _under(scope, "iam", "user", "${nexus:PrincipalId}"),
            },
            {
                "Sid": "OwnPersonalKeysInOwnProjects",
                "Effect": "Allow",
                "Action": [
                    "admin:virtual-key.create",
                    "admin:virtual-key.read",
                    "admin:virtual-key.update",
                    "admin:virtual-key.rotate",
                    "admin:virtual-key.revoke",
                ],
                "Resource": _under(scope, "gateway", "virtual-key"),
                "Condition": {
                    "StringEquals": {
                        "nexus:VirtualKeyType": "personal",
                        "nexus:ResourceOwner": "${nexus:PrincipalId}",
                    },
                    "ForAnyValue:StringEquals": {"nexus:PrincipalProjects": "${nexus:ResourceProject}"},
                },
            },
        ]
    if name == "NexusViewer":
        return [
            {
                "Sid": "ReadConfiguration",
                "Effect": "Allow",
                "Action": list(_VIEWER_READS),
                "Resource": _under(scope),
            }
        ]
    if name == "NexusAuditor":
        return [
            {
                "Sid": "ReadTheAuditTrail",
                "Effect": "Allow",
                "Action": ["admin:audit.read", "admin:audit.verify", "admin:audit.export"],
                "Resource": _under(scope),
            }
        ]
    raise KeyError(name)


@functools.lru_cache(maxsize=1024)
def managed_policy(name: str, scope: str) -> Policy:
    """The managed policy ``name`` for the org path ``scope`` ("" = global).
    Raises KeyError for an unknown name, NrnError for a bad org path."""
    if name not in MANAGED_POLICY_NAMES:
        raise KeyError(f"unknown managed policy {name!r}; one of {', '.join(MANAGED_POLICY_NAMES)}")
    if not valid_org_path(scope):
        raise NrnError(f"org path {scope!r} is not valid")
    return parse_policy({"Version": VERSION, "Id": name, "Statement": _statements(name, scope)})
