"""docs/iam.md's table of what each managed role may do is computed from the
managed policies themselves, so it cannot drift from them.

    python -m tests.iam.test_docs     # print the table to paste into the doc
"""

from __future__ import annotations

from pathlib import Path

from hub.iam import (
    MANAGED_POLICY_NAMES,
    RESOURCE_TYPES,
    AttachedPolicy,
    AuthzRequest,
    evaluate,
    managed_policy,
    org_nrn,
    resource_nrn,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "iam.md"
BEGIN, END = "<!-- role-table:begin -->", "<!-- role-table:end -->"
SCOPE = "acme"
PRINCIPAL = "nrn:nexus:iam:acme:user/alice"
# what the Hub passes about a developer's own personal key in their project
OWN_KEY = {
    "nexus:VirtualKeyType": "personal",
    "nexus:ResourceOwner": "alice",
    "nexus:ResourceProject": "p1",
    "nexus:PrincipalProjects": ["p1"],
}


def _target(rtype: str, org: str, rid: str) -> str:
    return org_nrn(org) if rtype == "org" else resource_nrn(rtype, org, rid)


def _verbs(role: str, rtype: str, org: str, rid: str, context: dict[str, object]) -> list[str]:
    policies = [AttachedPolicy("m", role, managed_policy(role, SCOPE), SCOPE)]
    target = _target(rtype, org, rid)
    return [
        verb
        for verb in RESOURCE_TYPES[rtype][1]
        if evaluate(policies, AuthzRequest(PRINCIPAL, f"admin:{rtype}.{verb}", target, context)).allowed
    ]


def _cell(role: str, rtype: str) -> str:
    below = _verbs(role, rtype, "acme/eu", "x", OWN_KEY)
    plain = set(_verbs(role, rtype, "acme/eu", "x", {}))
    at_own_org = set(_verbs(role, rtype, SCOPE, "x", OWN_KEY))
    as_self = _verbs(role, rtype, "acme/eu", "alice", OWN_KEY)
    groups: dict[str, list[str]] = {}  # note -> verbs
    for verb in dict.fromkeys(below + as_self):
        notes = []
        if verb not in plain and verb in below:
            notes.append("own personal keys in own projects")
        if verb not in below:
            notes.append("own user only")
        if verb in below and verb not in at_own_org and rtype == "org":
            notes.append("sub-orgs only")
        groups.setdefault(", ".join(notes), []).append(verb)
    if not groups:
        return "-"
    if list(groups) == [""] and groups[""] == list(RESOURCE_TYPES[rtype][1]):
        return "all"
    return "; ".join(", ".join(verbs) + (f" ({note})" if note else "") for note, verbs in groups.items())


def render_role_table() -> str:
    roles = [name.removeprefix("Nexus") for name in MANAGED_POLICY_NAMES]
    lines = ["| resource | " + " | ".join(roles) + " |", "|---|" + "---|" * len(roles)]
    for rtype in RESOURCE_TYPES:
        lines.append(f"| {rtype} | " + " | ".join(_cell(role, rtype) for role in MANAGED_POLICY_NAMES) + " |")
    return "\n".join(lines)


def test_the_role_table_in_docs_matches_the_managed_policies() -> None:
    text = DOC.read_text()
    documented = text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip()
    assert documented == render_role_table(), "regenerate with: python -m tests.iam.test_docs"


if __name__ == "__main__":
    print(render_role_table())
