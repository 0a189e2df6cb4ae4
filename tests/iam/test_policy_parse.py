"""The strict policy parser: every mistake is an error naming its field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hub.iam import VERSION, PolicyError, parse_policy


def doc(*statements: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"Version": VERSION, "Statement": list(statements), **top}


OK = {"Effect": "Allow", "Action": "admin:virtual-key.read", "Resource": "*"}


def with_(**changes: Any) -> dict[str, Any]:
    out = dict(OK)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        pytest.param({"Statement": [OK]}, "Version", "required", id="version-missing"),
        pytest.param({"Version": "2012-10-17", "Statement": [OK]}, "Version", "2026-01-01", id="aws-version"),
        pytest.param(doc(), "Statement", "at least one", id="no-statements"),
        pytest.param(doc(OK, Extra=1), "Extra", "unknown field", id="unknown-top-field"),
        pytest.param(
            doc(with_(Principal="*")), "Statement[0].Principal", "unknown field", id="principal-field"
        ),
        pytest.param(
            doc(with_(Effect="allow")), "Statement[0].Effect", "Invalid enum value", id="effect-lowercase"
        ),
        pytest.param(doc(with_(Effect=None)), "Statement[0].Effect", "required", id="effect-missing"),
        pytest.param(doc(with_(Action=None)), "Statement[0].Action", "exactly one", id="no-action"),
        pytest.param(
            doc(with_(NotAction="admin:org.read")),
            "Statement[0].Action",
            "exactly one",
            id="action-and-notaction",
        ),
        pytest.param(doc(with_(Resource=None)), "Statement[0].Resource", "exactly one", id="no-resource"),
        pytest.param(doc(with_(Action=[])), "Statement[0].Action", "empty", id="empty-action-list"),
        pytest.param(doc(with_(Action=7)), "Statement[0].Action", "Expected", id="action-wrong-type"),
        pytest.param(
            doc(with_(Action="virtual-key.read")),
            "Statement[0].Action",
            "not an action",
            id="action-no-service",
        ),
        pytest.param(
            doc(with_(Action="admin:Virtual-Key.read")),
            "Statement[0].Action",
            "not an action",
            id="action-uppercase",
        ),
        pytest.param(
            doc(with_(Action=["admin:org.read", "admin:orgs.read"])),
            "Statement[0].Action[1]",
            "matches no action",
            id="unknown-action-typo",
        ),
        pytest.param(
            doc(with_(Action="admin:widget.*")),
            "Statement[0].Action",
            "matches no action",
            id="wildcard-matching-nothing",
        ),
        pytest.param(
            doc(with_(Resource="nrn:nexus:iam:acme")), "Statement[0].Resource", "five", id="short-resource"
        ),
        pytest.param(
            doc(with_(Resource="arn:aws:s3:x:y")), "Statement[0].Resource", "never match", id="aws-arn"
        ),
        pytest.param(
            doc(with_(Resource=["*", "nrn:nexus:a:b:c/${"])),
            "Statement[0].Resource[1]",
            "closing",
            id="unterminated-variable",
        ),
        pytest.param(
            doc(with_(Resource="nrn:nexus:iam:*:user/${nexus:Nope}")),
            "Statement[0].Resource",
            "unknown policy variable",
            id="unknown-variable",
        ),
        pytest.param(
            doc(with_(Resource="nrn:nexus:iam:*:user/${nexus:PrincipalGroups}")),
            "Statement[0].Resource",
            "single-valued",
            id="multi-valued-variable",
        ),
        pytest.param(doc(with_(Sid="has space")), "Statement[0].Sid", "letters", id="bad-sid"),
        pytest.param(doc(with_(Sid="A"), with_(Sid="A")), "Statement[1].Sid", "earlier", id="duplicate-sid"),
        pytest.param(
            doc(with_(Condition={"StringEqualz": {"nexus:PrincipalId": "a"}})),
            "Statement[0].Condition.StringEqualz",
            "unknown condition operator",
            id="unknown-operator",
        ),
        pytest.param(
            doc(with_(Condition={"ForSomeValues:StringEquals": {"nexus:PrincipalGroups": "a"}})),
            "Statement[0].Condition.ForSomeValues:StringEquals",
            "set qualifier",
            id="unknown-qualifier",
        ),
        pytest.param(
            doc(with_(Condition={"NullIfExists": {"nexus:PrincipalId": "true"}})),
            "Statement[0].Condition.NullIfExists",
            "Null takes",
            id="null-ifexists",
        ),
        pytest.param(
            doc(with_(Condition={"StringEquals": {"nexus:PrincipalID2": "a"}})),
            "Statement[0].Condition.StringEquals.nexus:PrincipalID2",
            "unknown condition key",
            id="unknown-key",
        ),
        pytest.param(
            doc(with_(Condition={"IpAddress": {"nexus:PrincipalId": "10.0.0.0/8"}})),
            "Statement[0].Condition.IpAddress.nexus:PrincipalId",
            "compares ip",
            id="operator-type-mismatch",
        ),
        pytest.param(
            doc(with_(Condition={"StringEquals": {"nexus:PrincipalGroups": "admins"}})),
            "Statement[0].Condition.StringEquals.nexus:PrincipalGroups",
            "ForAnyValue",
            id="multi-valued-needs-qualifier",
        ),
        pytest.param(
            doc(with_(Condition={"ForAllValues:StringEquals": {"nexus:PrincipalId": "a"}})),
            "Statement[0].Condition.ForAllValues:StringEquals.nexus:PrincipalId",
            "single-valued",
            id="qualifier-on-single-valued",
        ),
        pytest.param(
            doc(with_(Condition={"NumericLessThan": {"nexus:MultiFactorAuthAge": "soon"}})),
            "Statement[0].Condition.NumericLessThan.nexus:MultiFactorAuthAge",
            "not a number",
            id="numeric-value",
        ),
        pytest.param(
            doc(with_(Condition={"NumericLessThan": {"nexus:MultiFactorAuthAge": True}})),
            "Statement[0].Condition.NumericLessThan.nexus:MultiFactorAuthAge",
            "not a number",
            id="numeric-bool",
        ),
        pytest.param(
            doc(with_(Condition={"DateLessThan": {"nexus:CurrentTime": "next tuesday"}})),
            "Statement[0].Condition.DateLessThan.nexus:CurrentTime",
            "ISO 8601",
            id="date-value",
        ),
        pytest.param(
            doc(with_(Condition={"Bool": {"nexus:SecureTransport": "yes"}})),
            "Statement[0].Condition.Bool.nexus:SecureTransport",
            "true or false",
            id="bool-value",
        ),
        pytest.param(
            doc(with_(Condition={"IpAddress": {"nexus:SourceIp": "10.0.0.0/33"}})),
            "Statement[0].Condition.IpAddress.nexus:SourceIp",
            "CIDR",
            id="ip-value",
        ),
        pytest.param(
            doc(with_(Condition={"StringEquals": {"nexus:PrincipalId": 5}})),
            "Statement[0].Condition.StringEquals.nexus:PrincipalId",
            "not a string",
            id="string-value-number",
        ),
        pytest.param(
            doc(with_(Condition={"StringEquals": {"nexus:PrincipalId": []}})),
            "Statement[0].Condition.StringEquals.nexus:PrincipalId",
            "at least one value",
            id="empty-values",
        ),
        pytest.param(
            doc(with_(Condition={"StringEquals": {}})),
            "Statement[0].Condition.StringEquals",
            "at least one condition key",
            id="empty-operator",
        ),
        pytest.param(
            doc(with_(Condition={"StringEquals": {"nexus:ResourceOwner": "${nexus:Who}"}})),
            "Statement[0].Condition.StringEquals.nexus:ResourceOwner",
            "unknown policy variable",
            id="unknown-variable-in-value",
        ),
        pytest.param(
            doc(with_(Condition={"StringEquals": {"nexus:PrincipalId": {"a": 1}}})),
            "Statement[0].Condition.StringEquals.nexus:PrincipalId",
            "Expected",
            id="value-object",
        ),
        pytest.param(doc(*[OK] * 65), "Statement", "more than 64", id="too-many-statements"),
        pytest.param(
            doc(with_(Action=["admin:org.read"] * 101)),
            "Statement[0].Action",
            "more than 100",
            id="too-many-actions",
        ),
    ],
)
def test_invalid_documents_name_the_field(raw: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(raw)
    assert caught.value.field == field
    assert message in caught.value.message
    # the same error from the bytes the API receives
    with pytest.raises(PolicyError) as from_bytes:
        parse_policy(json.dumps(raw).encode())
    assert from_bytes.value.field == field


def test_not_json_and_oversized_bytes() -> None:
    with pytest.raises(PolicyError, match="not valid JSON"):
        parse_policy(b"{")
    with pytest.raises(PolicyError, match="larger than"):
        parse_policy(b" " * 40_000)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(doc(OK), id="minimal"),
        pytest.param({"Version": VERSION, "Statement": OK}, id="single-statement-object"),
        pytest.param(doc(with_(Action=None, NotAction="admin:credential.*")), id="notaction"),
        pytest.param(doc(with_(Resource=None, NotResource="nrn:nexus:vault:*:*")), id="notresource"),
        pytest.param(doc(with_(Action="*")), id="star-action"),
        pytest.param(doc(with_(Action="admin:*.read")), id="read-everything"),
        pytest.param(doc(with_(Action="admin:virtual-key.r?ad")), id="question-mark-action"),
        pytest.param(
            doc(with_(Condition={"StringEquals": {"NEXUS:PRINCIPALID": "a"}})),
            id="key-case-insensitive",
        ),
        pytest.param(
            doc(with_(Condition={"StringEquals": {"nexus:ResourceTag/team": ["a", "b"]}})), id="tag-key"
        ),
        pytest.param(
            doc(with_(Condition={"NumericLessThan": {"nexus:MultiFactorAuthAge": "3600"}})),
            id="numeric-string",
        ),
        pytest.param(
            doc(with_(Condition={"DateGreaterThan": {"nexus:CurrentTime": 1767225600}})), id="epoch-date"
        ),
        pytest.param(doc(with_(Condition={"Bool": {"nexus:SecureTransport": True}})), id="json-bool"),
        pytest.param(doc(with_(Condition={"Null": {"nexus:ResourceOwner": "false"}})), id="null"),
        pytest.param(
            doc(with_(Condition={"ForAllValues:StringLikeIfExists": {"nexus:RequestedModels": "gpt-*"}})),
            id="qualifier-ifexists",
        ),
    ],
)
def test_valid_documents_parse_and_round_trip(raw: dict[str, Any]) -> None:
    parsed = parse_policy(raw)
    again = parse_policy(parsed.to_json())
    assert again == parsed
    assert parse_policy(parsed.document) == parsed


def test_unknown_actions_are_accepted_when_rereading_stored_documents() -> None:
    stored = doc(with_(Action="admin:retired-thing.read"))
    with pytest.raises(PolicyError):
        parse_policy(stored)
    assert parse_policy(stored, known_actions=None).statements[0].effect == "Allow"


def test_a_document_seen_before_is_not_compiled_again() -> None:
    # the Hub rebuilds a caller's policies from stored documents per request
    raw = doc(with_(Sid="Cached"))
    assert parse_policy(raw) is parse_policy(dict(raw))
    assert parse_policy(raw) is not parse_policy(raw, known_actions=None)
