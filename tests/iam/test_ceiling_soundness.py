"""The grant ceiling is sound: whenever it accepts a grant, every request the
granted policy allows is one the grantor may make themselves.

Hypothesis generates a grantor (1-3 random policies at random scopes, the
same generators as the differential test: wildcards, NotAction/NotResource,
every condition form, Denies) and a grant (a random policy at a random
scope).  When ``grant_violations`` finds nothing, 20 random requests are
evaluated for the grantee under the granted policy and for the grantor under
their own: an Allow for the grantee without one for the grantor is a hole in
the ceiling.  The principals differ (org, id, groups), so statements about
who the caller is are checked too.  The check is conservative, so many
grants are refused; the test insists that enough are accepted to mean
something.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from hub.iam import VERSION, AttachedPolicy, AuthzRequest, evaluate, grant_violations, parse_policy
from tests.iam.test_differential import ACTIONS, SCOPES, condition_block, requests, statements

pytestmark = pytest.mark.slow

GRANTOR = "nrn:nexus:iam:acme:user/a"
GRANTEE = "nrn:nexus:iam:beta:user/ab"
GROUPS = {GRANTOR: ["dev"], GRANTEE: ["ops", "sec"]}

broad = st.fixed_dictionaries(
    {
        "Effect": st.just("Allow"),
        "Action": st.sampled_from(["*", "admin:*", "admin:virtual-key.*", ACTIONS]),
        "Resource": st.sampled_from(
            ["*", "nrn:nexus:*:acme:*", "nrn:nexus:*:acme/*:*", "nrn:nexus:gateway:*:*"]
        ),
    }
)


@st.composite
def wide_grants(draw: st.DrawFn) -> dict[str, Any]:
    """An Allow that random requests often hit, with 0-2 conditions."""
    out = draw(broad)
    condition: dict[str, dict[str, Any]] = {}
    for op, key, value in draw(st.lists(condition_block(), max_size=2)):
        condition.setdefault(op, {})[key] = value
    if condition:
        out["Condition"] = condition
    return out


def attach(stmts: list[dict[str, Any]], scope: str, name: str) -> AttachedPolicy:
    return AttachedPolicy(name, name, parse_policy({"Version": VERSION, "Statement": stmts}), scope)


def as_principal(principal: str, context: dict[str, Any]) -> dict[str, Any]:
    own = {k: v for k, v in context.items() if not k.startswith("nexus:Principal")}
    own["nexus:PrincipalGroups"] = GROUPS[principal]
    return own


def test_the_ceiling_never_lets_a_grant_exceed_the_grantor(monkeypatch: pytest.MonkeyPatch) -> None:
    tally: Counter[str] = Counter()

    @settings(
        max_examples=400,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.data())
    def sound(data: st.DataObject) -> None:
        grantor_sets = data.draw(
            st.lists(
                st.tuples(
                    st.lists(st.one_of(broad, statements()), min_size=1, max_size=3), st.sampled_from(SCOPES)
                ),
                min_size=1,
                max_size=3,
            )
        )
        grantor = [attach(stmts, scope, f"g{n}") for n, (stmts, scope) in enumerate(grantor_sets)]
        granted_stmts = data.draw(st.lists(st.one_of(wide_grants(), statements()), min_size=1, max_size=2))
        scope = data.draw(st.sampled_from(SCOPES))
        granted = attach(granted_stmts, scope, "granted")
        found = grant_violations(
            grantor, granted.document, scope, as_principal(GRANTOR, {}), principal=GRANTOR
        )
        if found:
            tally["refused"] += 1
            return
        tally["accepted"] += 1
        for _principal, action, resource, context in data.draw(
            st.lists(requests(), min_size=20, max_size=20)
        ):
            grantee_may = evaluate(
                [granted], AuthzRequest(GRANTEE, action, resource, as_principal(GRANTEE, context))
            )
            if not grantee_may.allowed:
                continue
            tally["granted requests"] += 1
            grantor_may = evaluate(
                grantor, AuthzRequest(GRANTOR, action, resource, as_principal(GRANTOR, context))
            )
            assert grantor_may.allowed, (
                f"the ceiling accepted a grant beyond the grantor\ngrantor: {grantor_sets}\n"
                f"granted at {scope!r}: {granted_stmts}\nrequest: {(action, resource, context)}\n"
                f"grantee: {grantee_may}\ngrantor: {grantor_may}"
            )

    sound()
    print(dict(tally))
    # (seen: 156 accepted, 266 requests granted; seeded bugs in the ceiling,
    # such as ignoring the grantor's conditions, Denies or scopes, fail it)
    assert tally["accepted"] >= 100, tally
    assert tally["granted requests"] >= 200, tally
