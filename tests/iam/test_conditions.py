"""Every condition operator, with and without IfExists, against present,
absent and multiple values, checked through the evaluator (an Allow on
everything guarded by the one condition).  Expected answers are worked out by
hand from AWS IAM's documented semantics (see hub/iam/conditions.py)."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from tests.iam.helpers import attached, decide, policy, stmt

T0 = "2026-03-01T12:00:00Z"
BEFORE = datetime(2026, 3, 1, 11, 59, 59, tzinfo=UTC)
AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
AFTER = datetime(2026, 3, 1, 12, 0, 1, tzinfo=UTC)

P = pytest.param
CASES = [
    # -- strings -------------------------------------------------------------
    P("StringEquals", "nexus:UserAgent", "cli", "cli", True, id="StringEquals-match"),
    P("StringEquals", "nexus:UserAgent", "cli", "CLI", False, id="StringEquals-case-sensitive"),
    P("StringEquals", "nexus:UserAgent", ["a", "cli"], "cli", True, id="StringEquals-values-OR"),
    P("StringEquals", "nexus:UserAgent", "cli", None, False, id="StringEquals-absent"),
    P("StringEquals", "nexus:UserAgent", "c*", "cli", False, id="StringEquals-star-is-literal"),
    P("StringEquals", "nexus:UserAgent", "c*", "c*", True, id="StringEquals-literal-star"),
    P("StringNotEquals", "nexus:UserAgent", "cli", "web", True, id="StringNotEquals-differs"),
    P("StringNotEquals", "nexus:UserAgent", ["cli", "web"], "web", False, id="StringNotEquals-values-NOR"),
    P("StringNotEquals", "nexus:UserAgent", "cli", None, True, id="StringNotEquals-absent-holds"),
    P("StringEqualsIfExists", "nexus:UserAgent", "cli", None, True, id="StringEqualsIfExists-absent"),
    P(
        "StringEqualsIfExists",
        "nexus:UserAgent",
        "cli",
        "web",
        False,
        id="StringEqualsIfExists-present-differs",
    ),
    P("StringNotEqualsIfExists", "nexus:UserAgent", "cli", None, True, id="StringNotEqualsIfExists-absent"),
    P("StringEqualsIgnoreCase", "nexus:UserAgent", "CLI", "cli", True, id="IgnoreCase-match"),
    P("StringEqualsIgnoreCase", "nexus:UserAgent", "Straße", "STRASSE", True, id="IgnoreCase-casefold"),
    P("StringNotEqualsIgnoreCase", "nexus:UserAgent", "CLI", "cli", False, id="NotIgnoreCase-same"),
    P("StringNotEqualsIgnoreCase", "nexus:UserAgent", "CLI", None, True, id="NotIgnoreCase-absent"),
    P("StringLike", "nexus:UserAgent", "nexus-cli/*", "nexus-cli/1.2", True, id="StringLike-star"),
    P("StringLike", "nexus:UserAgent", "nexus-cli/*", "curl/8", False, id="StringLike-no"),
    P("StringLike", "nexus:UserAgent", "v?", "v1", True, id="StringLike-question"),
    P("StringLike", "nexus:UserAgent", "v?", "v12", False, id="StringLike-question-one-char"),
    P("StringLike", "nexus:UserAgent", "a*c", "a:b:c", True, id="StringLike-star-crosses-colon"),
    P("StringLike", "nexus:UserAgent", "a.c", "abc", False, id="StringLike-dot-is-literal"),
    P("StringLike", "nexus:UserAgent", "*", None, False, id="StringLike-absent"),
    P(
        "StringNotLike",
        "nexus:UserAgent",
        ["curl*", "wget*"],
        "curl/8",
        False,
        id="StringNotLike-matches-one",
    ),
    P("StringNotLike", "nexus:UserAgent", ["curl*", "wget*"], "cli", True, id="StringNotLike-matches-none"),
    P("StringNotLike", "nexus:UserAgent", "curl*", None, True, id="StringNotLike-absent"),
    P("StringLikeIfExists", "nexus:UserAgent", "x*", None, True, id="StringLikeIfExists-absent"),
    P("StringEquals", "nexus:ResourceTag/team", "ml", "ml", True, id="tag-key"),
    P("StringEquals", "nexus:UserAgent", "1", 1, True, id="context-int-as-string"),
    P("StringEquals", "nexus:UserAgent", "true", True, True, id="context-bool-as-string"),
    # -- numbers -------------------------------------------------------------
    P("NumericEquals", "nexus:MultiFactorAuthAge", 10, 10, True, id="NumericEquals"),
    P(
        "NumericEquals",
        "nexus:MultiFactorAuthAge",
        "10",
        10.0,
        True,
        id="NumericEquals-string-policy-float-context",
    ),
    P("NumericNotEquals", "nexus:MultiFactorAuthAge", [1, 2], 3, True, id="NumericNotEquals-NOR"),
    P("NumericNotEquals", "nexus:MultiFactorAuthAge", [1, 2], 2, False, id="NumericNotEquals-hit"),
    P("NumericNotEquals", "nexus:MultiFactorAuthAge", 1, None, True, id="NumericNotEquals-absent"),
    P("NumericLessThan", "nexus:MultiFactorAuthAge", 3600, 3599, True, id="LessThan-below"),
    P("NumericLessThan", "nexus:MultiFactorAuthAge", 3600, 3600, False, id="LessThan-equal"),
    P("NumericLessThanEquals", "nexus:MultiFactorAuthAge", 3600, 3600, True, id="LessThanEquals-equal"),
    P("NumericGreaterThan", "nexus:MultiFactorAuthAge", 0.5, 0.75, True, id="GreaterThan-float"),
    P("NumericGreaterThan", "nexus:MultiFactorAuthAge", 5, 5, False, id="GreaterThan-equal"),
    P("NumericGreaterThanEquals", "nexus:MultiFactorAuthAge", 5, 5, True, id="GreaterThanEquals-equal"),
    P("NumericLessThan", "nexus:MultiFactorAuthAge", [10, 100], 50, True, id="LessThan-any-value"),
    P("NumericLessThan", "nexus:MultiFactorAuthAge", 10, "5", True, id="LessThan-context-string"),
    P("NumericLessThan", "nexus:MultiFactorAuthAge", 10, "five", False, id="LessThan-context-garbage"),
    P("NumericLessThan", "nexus:MultiFactorAuthAge", 10, None, False, id="LessThan-absent"),
    P("NumericLessThanIfExists", "nexus:MultiFactorAuthAge", 10, None, True, id="LessThanIfExists-absent"),
    P("NumericLessThanIfExists", "nexus:MultiFactorAuthAge", 10, 11, False, id="LessThanIfExists-present"),
    P("NumericLessThan", "nexus:MultiFactorAuthAge", 10, True, False, id="LessThan-bool-is-not-number"),
    # -- dates ---------------------------------------------------------------
    P("DateLessThan", "nexus:CurrentTime", T0, BEFORE, True, id="DateLessThan-before"),
    P("DateLessThan", "nexus:CurrentTime", T0, AT, False, id="DateLessThan-at"),
    P("DateLessThanEquals", "nexus:CurrentTime", T0, AT, True, id="DateLessThanEquals-at"),
    P("DateGreaterThan", "nexus:CurrentTime", T0, AFTER, True, id="DateGreaterThan-after"),
    P("DateGreaterThanEquals", "nexus:CurrentTime", T0, BEFORE, False, id="DateGreaterThanEquals-before"),
    P(
        "DateEquals",
        "nexus:CurrentTime",
        T0,
        AT.astimezone(timezone(timedelta(hours=2))),
        True,
        id="DateEquals-other-zone",
    ),
    P(
        "DateEquals",
        "nexus:CurrentTime",
        "2026-03-01T13:00:00+01:00",
        AT,
        True,
        id="DateEquals-policy-offset",
    ),
    P("DateNotEquals", "nexus:CurrentTime", T0, AFTER, True, id="DateNotEquals"),
    P("DateNotEquals", "nexus:CurrentTime", T0, None, True, id="DateNotEquals-absent"),
    P("DateGreaterThan", "nexus:CurrentTime", 1772366400, AFTER, True, id="Date-epoch-policy"),
    P("DateGreaterThan", "nexus:CurrentTime", T0, "2026-03-01T12:00:01Z", True, id="Date-iso-context"),
    P("DateGreaterThan", "nexus:CurrentTime", T0, 1772366401, True, id="Date-epoch-context"),
    P("DateLessThan", "nexus:CurrentTime", "2026-03-02", AT, True, id="Date-day-only-is-midnight-utc"),
    P(
        "DateLessThan",
        "nexus:CurrentTime",
        T0,
        datetime(2026, 3, 1, 11, 0),
        True,
        id="Date-naive-context-is-utc",
    ),
    P("DateLessThan", "nexus:CurrentTime", T0, "yesterday", False, id="Date-context-garbage"),
    P("DateLessThanIfExists", "nexus:CurrentTime", T0, None, True, id="DateIfExists-absent"),
    # -- booleans ------------------------------------------------------------
    P("Bool", "nexus:SecureTransport", "true", True, True, id="Bool-true"),
    P("Bool", "nexus:SecureTransport", "true", False, False, id="Bool-false"),
    P("Bool", "nexus:SecureTransport", False, "false", True, id="Bool-context-string"),
    P("Bool", "nexus:SecureTransport", "TRUE", True, True, id="Bool-policy-case"),
    P("Bool", "nexus:SecureTransport", "true", None, False, id="Bool-absent"),
    P("BoolIfExists", "nexus:SecureTransport", "true", None, True, id="BoolIfExists-absent"),
    P("Bool", "nexus:SecureTransport", "true", "yes", False, id="Bool-context-garbage"),
    # -- IP addresses --------------------------------------------------------
    P("IpAddress", "nexus:SourceIp", "10.0.0.0/8", "10.20.30.40", True, id="IpAddress-in"),
    P("IpAddress", "nexus:SourceIp", "10.0.0.0/8", "11.0.0.1", False, id="IpAddress-out"),
    P("IpAddress", "nexus:SourceIp", "203.0.113.7", "203.0.113.7", True, id="IpAddress-single-host"),
    P(
        "IpAddress",
        "nexus:SourceIp",
        ["10.0.0.0/8", "192.168.0.0/16"],
        "192.168.1.1",
        True,
        id="IpAddress-values-OR",
    ),
    P("IpAddress", "nexus:SourceIp", "2001:db8::/32", "2001:db8::1", True, id="IpAddress-v6"),
    P("IpAddress", "nexus:SourceIp", "0.0.0.0/0", "2001:db8::1", False, id="IpAddress-family-mismatch"),
    P("IpAddress", "nexus:SourceIp", "10.0.0.0/8", "::ffff:10.1.2.3", True, id="IpAddress-v4-mapped-is-v4"),
    P(
        "IpAddress",
        "nexus:SourceIp",
        "10.0.0.0/8",
        ipaddress.ip_address("10.1.1.1"),
        True,
        id="IpAddress-object",
    ),
    P("IpAddress", "nexus:SourceIp", "10.0.0.5/8", "10.9.9.9", True, id="IpAddress-host-bits-ignored"),
    P("IpAddress", "nexus:SourceIp", "10.0.0.0/8", "not-an-ip", False, id="IpAddress-garbage"),
    P("IpAddress", "nexus:SourceIp", "10.0.0.0/8", None, False, id="IpAddress-absent"),
    P("NotIpAddress", "nexus:SourceIp", "10.0.0.0/8", "11.0.0.1", True, id="NotIpAddress-out"),
    P("NotIpAddress", "nexus:SourceIp", "10.0.0.0/8", "10.0.0.1", False, id="NotIpAddress-in"),
    P("NotIpAddress", "nexus:SourceIp", "10.0.0.0/8", "::ffff:10.1.2.3", False, id="NotIpAddress-v4-mapped"),
    P("NotIpAddress", "nexus:SourceIp", "10.0.0.0/8", None, True, id="NotIpAddress-absent"),
    P("IpAddressIfExists", "nexus:SourceIp", "10.0.0.0/8", None, True, id="IpAddressIfExists-absent"),
    # -- Null ----------------------------------------------------------------
    P("Null", "nexus:ResourceOwner", "true", None, True, id="Null-true-absent"),
    P("Null", "nexus:ResourceOwner", "true", "bob", False, id="Null-true-present"),
    P("Null", "nexus:ResourceOwner", False, "bob", True, id="Null-false-present"),
    P("Null", "nexus:ResourceOwner", "false", None, False, id="Null-false-absent"),
    P("Null", "nexus:ResourceOwner", ["true", "false"], None, True, id="Null-either"),
    P("Null", "nexus:PrincipalGroups", "false", [], True, id="Null-empty-list-is-present"),
    # -- multi-valued keys and set qualifiers ---------------------------------
    P(
        "ForAnyValue:StringEquals",
        "nexus:PrincipalGroups",
        ["admins", "sec"],
        ["dev", "sec"],
        True,
        id="AnyValue-one-hits",
    ),
    P("ForAnyValue:StringEquals", "nexus:PrincipalGroups", "admins", ["dev"], False, id="AnyValue-none-hits"),
    P("ForAnyValue:StringEquals", "nexus:PrincipalGroups", "admins", [], False, id="AnyValue-empty"),
    P("ForAnyValue:StringEquals", "nexus:PrincipalGroups", "admins", None, False, id="AnyValue-absent"),
    P(
        "ForAnyValue:StringEqualsIfExists",
        "nexus:PrincipalGroups",
        "admins",
        None,
        True,
        id="AnyValueIfExists-absent",
    ),
    P(
        "ForAllValues:StringEquals",
        "nexus:RequestedModels",
        ["gpt-4o", "o3"],
        ["gpt-4o"],
        True,
        id="AllValues-subset",
    ),
    P(
        "ForAllValues:StringEquals",
        "nexus:RequestedModels",
        ["gpt-4o"],
        ["gpt-4o", "o3"],
        False,
        id="AllValues-one-outside",
    ),
    P("ForAllValues:StringEquals", "nexus:RequestedModels", "gpt-4o", [], True, id="AllValues-empty-holds"),
    P(
        "ForAllValues:StringEquals",
        "nexus:RequestedModels",
        "gpt-4o",
        None,
        True,
        id="AllValues-absent-holds",
    ),
    P(
        "ForAllValues:StringLike",
        "nexus:RequestedModels",
        "gpt-*",
        ["gpt-4o", "gpt-5"],
        True,
        id="AllValues-like",
    ),
    P(
        "ForAnyValue:StringNotEquals",
        "nexus:PrincipalGroups",
        "dev",
        ["dev", "sec"],
        True,
        id="AnyValue-not-one-differs",
    ),
    P(
        "ForAnyValue:StringNotEquals",
        "nexus:PrincipalGroups",
        "dev",
        ["dev"],
        False,
        id="AnyValue-not-all-same",
    ),
    P(
        "ForAllValues:StringNotEquals",
        "nexus:PrincipalGroups",
        "dev",
        ["ops", "sec"],
        True,
        id="AllValues-not-none-equal",
    ),
    P(
        "ForAllValues:StringNotEquals",
        "nexus:PrincipalGroups",
        "dev",
        ["ops", "dev"],
        False,
        id="AllValues-not-one-equal",
    ),
    P("ForAllValues:StringNotEquals", "nexus:PrincipalGroups", "dev", None, True, id="AllValues-not-absent"),
    P(
        "ForAnyValue:StringLike",
        "nexus:PrincipalGroups",
        "team-*",
        ("x", "team-ml"),
        True,
        id="AnyValue-like-tuple-context",
    ),
]


@pytest.mark.parametrize(("operator", "key", "values", "context_value", "expected"), CASES)
def test_operator(operator: str, key: str, values: Any, context_value: Any, expected: bool) -> None:
    policies = attached(policy(stmt(Condition={operator: {key: values}})))
    context = {} if context_value is None else {key: context_value}
    assert decide(policies, context=context).allowed is expected


@pytest.mark.parametrize(
    ("condition", "context", "expected"),
    [
        P(
            {"StringEquals": {"nexus:UserAgent": "cli", "nexus:RequestedRegion": "eu"}},
            {"nexus:UserAgent": "cli", "nexus:RequestedRegion": "eu"},
            True,
            id="keys-AND-both",
        ),
        P(
            {"StringEquals": {"nexus:UserAgent": "cli", "nexus:RequestedRegion": "eu"}},
            {"nexus:UserAgent": "cli", "nexus:RequestedRegion": "us"},
            False,
            id="keys-AND-one-fails",
        ),
        P(
            {"StringEquals": {"nexus:UserAgent": "cli"}, "IpAddress": {"nexus:SourceIp": "10.0.0.0/8"}},
            {"nexus:UserAgent": "cli", "nexus:SourceIp": "10.0.0.1"},
            True,
            id="operators-AND-both",
        ),
        P(
            {"StringEquals": {"nexus:UserAgent": "cli"}, "IpAddress": {"nexus:SourceIp": "10.0.0.0/8"}},
            {"nexus:UserAgent": "cli", "nexus:SourceIp": "8.8.8.8"},
            False,
            id="operators-AND-one-fails",
        ),
        P(
            {"StringEquals": {"NEXUS:useragent": "cli"}},
            {"Nexus:UserAgent": "cli"},
            True,
            id="key-names-case-insensitive",
        ),
        P(
            {"StringEquals": {"nexus:ResourceOwner": "${nexus:PrincipalId}"}},
            {"nexus:ResourceOwner": "alice"},
            True,
            id="variable-derived-from-principal",
        ),
        P(
            {"StringEquals": {"nexus:ResourceOwner": "${nexus:PrincipalId}"}},
            {"nexus:ResourceOwner": "bob"},
            False,
            id="variable-differs",
        ),
        P(
            {"StringNotEquals": {"nexus:ResourceOwner": "${nexus:ResourceProject}"}},
            {"nexus:ResourceOwner": "bob"},
            False,
            id="variable-missing-makes-negated-false",
        ),
        P(
            {"StringLike": {"nexus:UserAgent": "${nexus:PrincipalId}-*"}},
            {"nexus:UserAgent": "alice-laptop"},
            True,
            id="variable-in-like",
        ),
        P(
            {"StringLike": {"nexus:UserAgent": "${nexus:PrincipalId}"}},
            {"nexus:UserAgent": "anything", "nexus:PrincipalId": "*"},
            False,
            id="substituted-star-is-literal",
        ),
        P(
            {"StringEquals": {"nexus:UserAgent": "team-${nexus:PrincipalId}-cli"}},
            {"nexus:UserAgent": "team-alice-cli"},
            True,
            id="variable-inside-a-value",
        ),
        P(
            {"StringEquals": {"nexus:UserAgent": "team-${nexus:PrincipalId}-cli"}},
            {"nexus:UserAgent": "team-bob-cli"},
            False,
            id="variable-inside-a-value-differs",
        ),
        P({"StringEquals": {"nexus:UserAgent": "${*}"}}, {"nexus:UserAgent": "*"}, True, id="escaped-star"),
        P(
            {"StringEquals": {"nexus:UserAgent": "a${$}b"}},
            {"nexus:UserAgent": "a$b"},
            True,
            id="escaped-dollar",
        ),
        P(
            {"StringEquals": {"nexus:PrincipalId": "carol"}},
            {"nexus:PrincipalId": "carol"},
            True,
            id="caller-context-wins-over-derived",
        ),
        P(
            {"StringEquals": {"nexus:ResourceOrgPath": "acme/eu", "nexus:ResourceType": "virtual-key"}},
            {},
            True,
            id="resource-keys-derived",
        ),
        P(
            {"StringEquals": {"nexus:UserAgent": "cli"}},
            {"nexus:UserAgent": None},
            False,
            id="none-is-absent",
        ),
    ],
)
def test_condition_blocks(condition: dict[str, Any], context: dict[str, Any], expected: bool) -> None:
    policies = attached(policy(stmt(Condition=condition)))
    assert decide(policies, context=context).allowed is expected
