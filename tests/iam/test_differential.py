"""Must-show 2: our evaluator agrees with Cedar on every decision.

Hypothesis generates policy sets (0-3 random policies of 1-3 statements, each
at an org scope; Allow/Deny, Action/NotAction, Resource/NotResource with
wildcards, 0-3 condition operators; plus one policy that applies to every
request and tests one given operator form) and 20 requests per set
(principal, action, resource, context with a random subset of keys).  Each of
the 59 operator forms gets 12 sets: over 10,000 (policy set, request) pairs,
and every form is tested with its key present and absent.  ``cedar_translate`` turns both into Cedar
(cedarpy), and for every pair the test checks:

- the decision (allowed or not) is the same;
- when allowed, Cedar's satisfied permits are exactly our matched statements;
- when denied by a statement, Cedar's satisfied forbids are exactly our
  matched Deny statements, and ``explicit_deny`` vs ``implicit_deny`` agrees;
- Cedar reported no evaluation error (a translation that errors would hide
  disagreements);
- ``is_allowed`` and ``allowed_actions`` (the shortcuts) say what ``evaluate`` says.

Generated conditions cover StringEquals/NotEquals/Like/NotLike, every Numeric
and Date operator, Bool, IpAddress/NotIpAddress (IPv4 and IPv6), Null, the
IfExists form of each, ForAnyValue/ForAllValues with StringEquals/NotEquals on
a multi-valued key, and whole-value policy variables (present and absent).

Excluded, because Cedar cannot express them (each has table-driven unit
tests with hand-computed answers in test_conditions.py / test_evaluate.py /
test_nrn.py):

- ``?`` wildcards: Cedar's ``like`` has only ``*``;
- StringEqualsIgnoreCase / StringNotEqualsIgnoreCase: Cedar has no case folding;
- policy variables inside a longer value, in a Like pattern or in a Resource:
  Cedar has no string concatenation and ``like`` needs a literal pattern;
- ForAnyValue/ForAllValues with StringLike: Cedar has no quantifier over a set;
- non-integer numbers: Cedar's numbers are 64-bit integers (Long);
- context values that do not convert (an IP key holding "unknown") and
  IPv4-mapped IPv6 addresses (we read ::ffff:10.1.2.3 as 10.1.2.3): Cedar
  raises an evaluation error or compares families strictly;
- case variants of condition key names (ours are case-insensitive).

Resource and action patterns have exactly the NRN's five (action's two)
``:``-separated parts, so Cedar's ``*`` (which crosses ``:``) and ours (which
stays inside a part) accept the same names: the test checks that claim too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import cedarpy
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from hub.iam import VERSION, AttachedPolicy, AuthzRequest, allowed_actions, evaluate, is_allowed, parse_policy
from hub.iam.conditions import Condition, Context
from tests.iam import cedar_translate

pytestmark = pytest.mark.slow

SETS_PER_FORM = 12  # x 59 operator forms x 20 requests: over 10,000 pairs (hypothesis skips duplicates)
REQUESTS_PER_SET = 20

ACTIONS = ["admin:virtual-key.create", "admin:virtual-key.read", "admin:policy.attach", "admin:org.read"]
# small name spaces, so that generated patterns often match generated names
SERVICES = ["gateway", "iam"]
ORGS = ["acme", "acme/eu", "acme/eu/de", "beta"]
TYPES = ["virtual-key", "user"]
IDS = ["a", "ab"]
SCOPES = ["", "", "acme", "acme/eu", "beta"]
STRINGS = ["a", "b", "ab", "ba", "A", ""]
LIKE_PATTERNS = ["a*", "*b", "*", "a*b", "", "ab", "*a*"]
INSTANTS = [
    "2026-03-01T12:00:00Z",
    "2026-03-01T13:00:00+01:00",  # the same instant
    "2026-03-01T11:59:59Z",
    "2026-03-01T12:00:01Z",
    "2025-12-31T23:59:59-05:00",
]
IPS = ["10.0.0.1", "10.1.2.3", "192.168.1.1", "203.0.113.7", "2001:db8::1", "::1"]
CIDRS = ["10.0.0.0/8", "10.0.0.0/16", "192.168.0.0/16", "203.0.113.7", "2001:db8::/32", "0.0.0.0/0", "::/0"]
GROUPS = ["dev", "ops", "sec"]

STRING_KEYS = ["nexus:UserAgent", "nexus:ResourceTag/team", "nexus:ResourceOwner"]
DERIVED_STRING_KEYS = ["nexus:PrincipalId", "nexus:ResourceOrgPath"]
VARIABLES = ["${nexus:PrincipalId}", "${nexus:ResourceOwner}"]

# the context a request may carry: key -> strategy of values
CONTEXT_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "nexus:UserAgent": st.sampled_from(STRINGS),
    "nexus:ResourceTag/team": st.sampled_from(STRINGS),
    "nexus:ResourceOwner": st.sampled_from(STRINGS),
    "nexus:MultiFactorAuthAge": st.integers(-3, 3),
    "nexus:CurrentTime": st.sampled_from(INSTANTS),
    "nexus:SecureTransport": st.booleans(),
    "nexus:MultiFactorAuthPresent": st.booleans(),
    "nexus:SourceIp": st.sampled_from(IPS),
    "nexus:PrincipalGroups": st.lists(st.sampled_from(GROUPS), max_size=3, unique=True),
}


def values(element: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A single value or a list of 1-3 (values OR together)."""
    return st.one_of(element, st.lists(element, min_size=1, max_size=3))


ORDERINGS = ["Equals", "NotEquals", "LessThan", "LessThanEquals", "GreaterThan", "GreaterThanEquals"]
BOOLS = st.sampled_from([True, False, "true", "false"])

# every operator form of the common fragment, with the keys and values it takes
FORMS: list[tuple[str, st.SearchStrategy[str], st.SearchStrategy[Any]]] = []
for _if in ("", "IfExists"):
    for _op in ("StringEquals", "StringNotEquals"):
        FORMS.append(
            (
                _op + _if,
                st.sampled_from(STRING_KEYS + DERIVED_STRING_KEYS),
                st.sampled_from(STRINGS + ORGS + VARIABLES),
            )
        )
    for _op in ("StringLike", "StringNotLike"):
        FORMS.append((_op + _if, st.sampled_from(STRING_KEYS), st.sampled_from(LIKE_PATTERNS)))
    for _order in ORDERINGS:
        FORMS.append(("Numeric" + _order + _if, st.just("nexus:MultiFactorAuthAge"), st.integers(-3, 3)))
        FORMS.append(("Date" + _order + _if, st.just("nexus:CurrentTime"), st.sampled_from(INSTANTS)))
    FORMS.append(
        ("Bool" + _if, st.sampled_from(["nexus:SecureTransport", "nexus:MultiFactorAuthPresent"]), BOOLS)
    )
    for _op in ("IpAddress", "NotIpAddress"):
        FORMS.append((_op + _if, st.just("nexus:SourceIp"), st.sampled_from(CIDRS)))
    for _qualifier in ("ForAnyValue", "ForAllValues"):
        for _op in ("StringEquals", "StringNotEquals"):
            FORMS.append(
                (
                    f"{_qualifier}:{_op}{_if}",
                    st.just("nexus:PrincipalGroups"),
                    st.sampled_from([*GROUPS, "${nexus:UserAgent}"]),
                )
            )
FORMS.append(("Null", st.sampled_from(sorted(CONTEXT_VALUES)), BOOLS))
OPERATORS = [name for name, _keys, _values in FORMS]


@st.composite
def condition_block(draw: st.DrawFn) -> tuple[str, str, Any]:
    name, keys, element = draw(st.sampled_from(FORMS))
    return name, draw(keys), draw(values(element))


@st.composite
def starred(draw: st.DrawFn, text: str) -> str:
    """``text`` with some runs of characters (never a ':') turned into ``*``."""
    out: list[str] = []
    for ch in text:
        if ch != ":" and draw(st.integers(0, 3)) == 0:
            if not out or out[-1] != "*":
                out.append("*")
        elif ch == ":" or not out or out[-1] != "*" or draw(st.booleans()):
            out.append(ch)
    return "".join(out)


def resource_names() -> st.SearchStrategy[str]:
    return st.builds(
        lambda service, org, rtype, rid: f"nrn:nexus:{service}:{org}:{rtype}/{rid}",
        st.sampled_from(SERVICES),
        st.sampled_from(ORGS),
        st.sampled_from(TYPES),
        st.sampled_from(IDS),
    )


def action_patterns() -> st.SearchStrategy[str]:
    return st.one_of(st.just("*"), st.sampled_from(ACTIONS).flatmap(starred))


def resource_patterns() -> st.SearchStrategy[str]:
    return st.one_of(st.just("*"), resource_names().flatmap(starred), st.just("*"))


def one_or_list(element: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.one_of(element, st.lists(element, min_size=1, max_size=3))


@st.composite
def statements(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {"Effect": draw(st.sampled_from(["Allow", "Allow", "Deny"]))}
    action_field = "NotAction" if draw(st.integers(0, 4)) == 0 else "Action"
    resource_field = "NotResource" if draw(st.integers(0, 4)) == 0 else "Resource"
    out[action_field] = draw(one_or_list(action_patterns()))
    out[resource_field] = draw(one_or_list(resource_patterns()))
    condition: dict[str, dict[str, Any]] = {}
    for op, key, value in draw(st.lists(condition_block(), max_size=3)):
        condition.setdefault(op, {})[key] = value
    if condition:
        out["Condition"] = condition
    return out


Form = tuple[str, st.SearchStrategy[str], st.SearchStrategy[Any]]


@st.composite
def policy_sets(draw: st.DrawFn, focus: Form) -> list[tuple[list[dict[str, Any]], str]]:
    """1-3 random policies, plus a policy applying to every request whose
    statement tests the operator form ``focus`` (so every form is reached)."""
    random = draw(
        st.lists(
            st.tuples(st.lists(statements(), min_size=1, max_size=3), st.sampled_from(SCOPES)), max_size=3
        )
    )
    name, keys, element = focus
    focused = {
        "Effect": draw(st.sampled_from(["Allow", "Deny"])),
        "Action": "*",
        "Resource": "*",
        "Condition": {name: {draw(keys): draw(values(element))}},
    }
    at = draw(st.integers(0, len(random)))
    return [*random[:at], ([focused], ""), *random[at:]]


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, str, dict[str, Any]]:
    principal = f"nrn:nexus:iam:{draw(st.sampled_from(ORGS))}:user/{draw(st.sampled_from(IDS))}"
    keys = draw(st.lists(st.sampled_from(sorted(CONTEXT_VALUES)), unique=True))
    context = {key: draw(CONTEXT_VALUES[key]) for key in keys}
    return principal, draw(st.sampled_from(ACTIONS)), draw(resource_names()), context


def check(
    raw_set: list[tuple[list[dict[str, Any]], str]],
    reqs: list[tuple[str, str, str, dict[str, Any]]],
    seen: Counter[str],
) -> None:
    documents = [({"Version": VERSION, "Statement": stmts}, scope) for stmts, scope in raw_set]
    ours = [
        AttachedPolicy(policy_id=str(n), name=f"p{n}", document=parse_policy(doc), scope=scope)
        for n, (doc, scope) in enumerate(documents)
    ]
    text, origin = cedar_translate.policy_set(documents)
    cedar_requests = []
    entities: dict[str, dict[str, Any]] = {}
    for principal, action, resource, context in reqs:
        cedar_request, request_entities = cedar_translate.request(principal, action, resource, context)
        cedar_requests.append(cedar_request)
        for entity in request_entities:
            entities[entity["uid"]["type"] + entity["uid"]["id"]] = entity
    answers = cedarpy.is_authorized_batch(cedar_requests, text, list(entities.values()))
    for (principal, action, resource, context), answer in zip(reqs, answers, strict=True):
        decision = evaluate(ours, AuthzRequest(principal, action, resource, context))
        where = f"\npolicies: {documents}\nrequest: {(principal, action, resource, context)}\ncedar:\n{text}"
        assert not answer.diagnostics.errors, f"Cedar errors {answer.diagnostics.errors}{where}"
        assert decision.allowed == answer.allowed, f"ours {decision.outcome}, Cedar {answer.decision}{where}"
        cedar_matched = sorted(
            origin[int(reason.removeprefix("policy"))] for reason in answer.diagnostics.reasons
        )
        effect = "Allow" if decision.allowed else "Deny"
        our_matched = sorted(
            (int(ref.policy_id), ref.index) for ref in decision.matched if ref.effect == effect
        )
        assert our_matched == cedar_matched, f"matched {our_matched} vs Cedar {cedar_matched}{where}"
        assert (decision.outcome == "explicit_deny") == (not answer.allowed and bool(cedar_matched)), where
        # the shortcuts agree with the full evaluation
        request = AuthzRequest(principal, action, resource, context)
        assert is_allowed(ours, request) == decision.allowed, where
        listed = allowed_actions(ours, resource, context, ACTIONS, principal=principal)
        assert (action in listed) == decision.allowed, where
        seen[decision.outcome] += 1


def agreement(focus: Form, seen: Counter[str]) -> Callable[[], None]:
    @settings(
        max_examples=SETS_PER_FORM,
        derandomize=True,
        database=None,
        deadline=None,
        # no shrinking: an example is a whole set of 20 requests, and the
        # failure message already names the one pair that disagreed
        phases=[Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.data())
    def agree(data: st.DataObject) -> None:
        raw_set = data.draw(policy_sets(focus))
        reqs = data.draw(st.lists(requests(), min_size=REQUESTS_PER_SET, max_size=REQUESTS_PER_SET))
        check(raw_set, reqs, seen)

    return agree


def test_evaluator_agrees_with_cedar(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: Counter[str] = Counter()
    # Which operator forms our evaluator actually tested, with the key present
    # and absent (a statement's conditions are only tested once its action,
    # resource and scope match): agreement on forms never reached would prove
    # nothing.
    reached: Counter[tuple[str, bool]] = Counter()
    test_condition = Condition.test

    def counting(self: Condition, ctx: Context) -> bool:
        reached[(self.op.name, self.key in ctx)] += 1
        return test_condition(self, ctx)

    monkeypatch.setattr(Condition, "test", counting)

    for focus in FORMS:
        agreement(focus, seen)()
    assert sum(seen.values()) >= 10_000
    # not a vacuous agreement: every outcome is well represented
    for outcome in ("allowed", "explicit_deny", "implicit_deny"):
        assert seen[outcome] >= 0.05 * sum(seen.values()), seen
    unreached = [(op, present) for op in OPERATORS for present in (True, False) if reached[(op, present)] < 5]
    assert not unreached, f"operator forms tested fewer than 5 times (operator, key present): {unreached}"
    print(
        f"pairs checked: {sum(seen.values())} {dict(seen)}; least-reached form: {min(reached.values())} times"
    )
