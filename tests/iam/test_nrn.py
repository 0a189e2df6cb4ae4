"""NRNs: format, parse, and pattern matching."""

from __future__ import annotations

import pytest

from hub.iam import Nrn, NrnError, in_scope, nrn, nrn_matches, org_nrn, parse_nrn, resource_nrn


@pytest.mark.parametrize(
    ("parts", "text"),
    [
        pytest.param(
            ("gateway", "acme/eu", "virtual-key", "vk_123"),
            "nrn:nexus:gateway:acme/eu:virtual-key/vk_123",
            id="key-in-sub-org",
        ),
        pytest.param(("iam", "acme", "policy", "p1"), "nrn:nexus:iam:acme:policy/p1", id="policy"),
        pytest.param(
            ("gateway", "", "provider", "openai"), "nrn:nexus:gateway::provider/openai", id="global"
        ),
        pytest.param(
            ("iam", "acme", "user", "a.b+c@example.com"),
            "nrn:nexus:iam:acme:user/a.b+c@example.com",
            id="email-id",
        ),
    ],
)
def test_format_and_parse_round_trip(parts: tuple[str, str, str, str], text: str) -> None:
    assert nrn(*parts) == text
    assert parse_nrn(text) == Nrn(*parts)
    assert str(parse_nrn(text)) == text


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        pytest.param("arn:aws:s3:::b", "must start with", id="not-nrn"),
        pytest.param("nrn:nexus:gateway:acme", "expected nrn:nexus", id="too-few-parts"),
        pytest.param("nrn:nexus:gateway:acme:virtual-key", "<type>/<id>", id="no-id"),
        pytest.param("nrn:nexus:gateway:acme:virtual-key/*", "resource id", id="wildcard-id"),
        pytest.param("nrn:nexus:gateway:acme//eu:virtual-key/x", "org path", id="empty-org-segment"),
        pytest.param("nrn:nexus:Gateway:acme:virtual-key/x", "service", id="upper-service"),
        pytest.param("nrn:nexus:gateway:ac*me:virtual-key/x", "org path", id="wildcard-org"),
        pytest.param("nrn:nexus:gateway:acme:virtual-key/a b", "resource id", id="space-in-id"),
        pytest.param("nrn:nexus:gateway:acme:virtual-key/a:b", "expected nrn:nexus", id="colon-in-id"),
    ],
)
def test_malformed_names_are_refused_naming_the_part(text: str, complaint: str) -> None:
    with pytest.raises(NrnError, match=complaint):
        parse_nrn(text)


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        pytest.param("*", "nrn:nexus:gateway:acme/eu:virtual-key/vk_1", True, id="star-matches-all"),
        pytest.param(
            "nrn:nexus:*:acme/*:*",
            "nrn:nexus:gateway:acme/eu/de:virtual-key/vk_1",
            True,
            id="subtree-any-depth",
        ),
        pytest.param(
            "nrn:nexus:*:acme/*:*",
            "nrn:nexus:gateway:acme:virtual-key/vk_1",
            False,
            id="subtree-excludes-root",
        ),
        pytest.param("nrn:nexus:*:acme:*", "nrn:nexus:gateway:acme:virtual-key/vk_1", True, id="org-itself"),
        pytest.param(
            "nrn:nexus:*:acme:*", "nrn:nexus:gateway:acme/eu:virtual-key/vk_1", False, id="org-not-below"
        ),
        pytest.param(
            "nrn:nexus:*:acme*:*",
            "nrn:nexus:gateway:acmecorp:virtual-key/vk_1",
            True,
            id="prefix-glob-is-textual",
        ),
        pytest.param(
            "nrn:nexus:gateway:*:virtual-key/vk_?",
            "nrn:nexus:gateway:x:virtual-key/vk_7",
            True,
            id="question-one-char",
        ),
        pytest.param(
            "nrn:nexus:gateway:*:virtual-key/vk_?",
            "nrn:nexus:gateway:x:virtual-key/vk_77",
            False,
            id="question-not-two",
        ),
        # a part wildcard never crosses ':' (the org part cannot swallow the type)
        pytest.param(
            "nrn:nexus:gateway:*:policy/*", "nrn:nexus:gateway:a:virtual-key/x", False, id="type-differs"
        ),
        pytest.param(
            "nrn:nexus:iam:acme:user/alice", "nrn:nexus:iam:acme:user/Alice", False, id="case-sensitive"
        ),
        pytest.param(
            "nrn:nexus:iam:acme:user/a.ice", "nrn:nexus:iam:acme:user/alice", False, id="dot-is-literal"
        ),
        pytest.param(
            "nrn:nexus:gateway::provider/*", "nrn:nexus:gateway::provider/openai", True, id="global-org"
        ),
    ],
)
def test_pattern_matching(pattern: str, value: str, expected: bool) -> None:
    assert nrn_matches(pattern, value) is expected


@pytest.mark.parametrize(
    "pattern",
    [
        pytest.param("nrn:nexus:gateway:acme", id="four-parts"),
        pytest.param("nrn:nexus:iam:acme:user/${nexus:PrincipalId}", id="variable-outside-policy"),
        pytest.param("arn:aws:*:*:*", id="never-an-nrn"),
    ],
)
def test_bad_patterns_raise(pattern: str) -> None:
    with pytest.raises(NrnError):
        nrn_matches(pattern, "nrn:nexus:gateway:acme:virtual-key/x")


@pytest.mark.parametrize(
    ("org", "scope", "expected"),
    [
        pytest.param("acme", "", True, id="global-covers-all"),
        pytest.param("", "acme", False, id="global-resource-not-in-org"),
        pytest.param("acme", "acme", True, id="itself"),
        pytest.param("acme/eu/de", "acme", True, id="descendant"),
        pytest.param("acmecorp", "acme", False, id="prefix-is-not-child"),
        pytest.param("acme", "acme/eu", False, id="parent-not-in-child"),
    ],
)
def test_scope(org: str, scope: str, expected: bool) -> None:
    assert in_scope(org, scope) is expected


def test_catalogued_types_know_their_service() -> None:
    assert resource_nrn("virtual-key", "acme", "vk_1") == "nrn:nexus:gateway:acme:virtual-key/vk_1"
    assert resource_nrn("credential", "acme", "c1") == "nrn:nexus:vault:acme:credential/c1"
    assert org_nrn("acme/eu") == "nrn:nexus:iam:acme/eu:org/eu"
    with pytest.raises(ValueError, match="unknown resource type"):
        resource_nrn("widget", "acme", "w")
