"""SigV4 against AWS's published test vectors."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from adapters.bedrock.sigv4 import Credentials, canonical_uri, sign

CREDS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
WHEN = datetime(2015, 8, 30, 12, 36, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("method", "url", "headers", "service", "expected"),
    [
        pytest.param(
            "GET",
            "https://example.amazonaws.com/",
            {},
            "service",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
            "SignedHeaders=host;x-amz-date, "
            "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            id="get-vanilla",
        ),
        pytest.param(
            "GET",
            "https://example.amazonaws.com/?Param2=value2&Param1=value1",
            {},
            "service",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
            "SignedHeaders=host;x-amz-date, "
            "Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
            id="get-vanilla-query-order-key-case",
        ),
        pytest.param(
            "GET",
            "https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08",
            {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
            "iam",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, "
            "SignedHeaders=content-type;host;x-amz-date, "
            "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
            id="iam-list-users",
        ),
    ],
)
def test_published_vectors(
    method: str, url: str, headers: dict[str, str], service: str, expected: str
) -> None:
    out = sign(method, url, headers, b"", credentials=CREDS, region="us-east-1", service=service, now=WHEN)
    assert out["authorization"] == expected
    assert out["x-amz-date"] == "20150830T123600Z"


def test_session_token_is_sent_and_signed() -> None:
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "SESSION")
    out = sign(
        "GET",
        "https://example.amazonaws.com/",
        {},
        b"",
        credentials=creds,
        region="us-east-1",
        service="service",
        now=WHEN,
    )
    assert out["x-amz-security-token"] == "SESSION"
    assert "SignedHeaders=host;x-amz-date;x-amz-security-token," in out["authorization"]


def test_bedrock_model_id_path_is_encoded_twice_when_signed() -> None:
    assert canonical_uri("/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse", "bedrock") == (
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%253A0/converse"
    )


def test_credentials_repr_hides_the_secret() -> None:
    assert "wJalr" not in repr(CREDS)
