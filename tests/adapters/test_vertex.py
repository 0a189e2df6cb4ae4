"""Vertex: URL shape, bearer auth, :predict embeddings, and the
service-account JWT assertion verified with the key's public half."""

from __future__ import annotations

import base64
import urllib.parse

import msgspec
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from adapters.base import CodecError
from adapters.canonical import ChatRequest, EmbeddingRequest, Message
from adapters.vertex import VertexCodec, auth
from tests.adapters.helpers import body, fixture, plain, target

CODEC = VertexCodec()


@pytest.fixture(scope="module")
def sa_json() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return msgspec.json.encode(
        {
            "type": "service_account",
            "project_id": "proj-1",
            "private_key_id": "kid-1",
            "private_key": pem,
            "client_email": "nexus@proj-1.iam.gserviceaccount.com",
            "token_uri": "https://oauth2.googleapis.com/token",
        }
    )


@pytest.mark.parametrize(
    ("options", "url"),
    [
        pytest.param(
            {"project": "proj-1", "location": "europe-west4"},
            "https://europe-west4-aiplatform.googleapis.com/v1/projects/proj-1/locations/europe-west4/"
            "publishers/google/models/gemini-2.5-pro:generateContent",
            id="regional",
        ),
        pytest.param(
            {"project": "proj-1", "location": "global"},
            "https://aiplatform.googleapis.com/v1/projects/proj-1/locations/global/"
            "publishers/google/models/gemini-2.5-pro:generateContent",
            id="global",
        ),
    ],
)
def test_url_and_auth(options: dict[str, str], url: str) -> None:
    t = target("vertex", "", "gemini-2.5-pro", **options)
    wire = CODEC.encode_chat(ChatRequest(model="x", messages=[Message(role="user", content="hi")]), t)
    assert wire.url == url
    assert wire.headers["authorization"] == "Bearer sk-test"
    assert body(wire.body) == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


def test_missing_project_is_a_clear_error() -> None:
    with pytest.raises(CodecError) as exc:
        CODEC.encode_chat(
            ChatRequest(model="x", messages=[Message(role="user", content="hi")]), target("vertex", "", "m")
        )
    assert "options.project" in exc.value.error.message


def test_predict_embeddings() -> None:
    t = target("vertex", "", "text-embedding-005", project="p", location="us-central1")
    wire = CODEC.encode_embeddings(EmbeddingRequest(model="x", input=["a", "b"], dimensions=64), t)
    assert wire.url.endswith("/models/text-embedding-005:predict")
    assert body(wire.body) == {
        "instances": [{"content": "a"}, {"content": "b"}],
        "parameters": {"outputDimensionality": 64},
    }
    assert plain(CODEC.decode_embeddings(fixture("vertex", "predict_embeddings.json"), t)) == {
        "data": [{"index": 0, "embedding": [0.0123, -0.0456]}, {"index": 1, "embedding": [0.0789, 0.0012]}],
        "model": "text-embedding-005",
        "usage": {"prompt_tokens": 10, "total_tokens": 10},
    }


def _b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def test_assertion_is_rs256_signed_with_the_right_claims(sa_json: bytes) -> None:
    sa = auth.parse_service_account(sa_json)
    jwt = auth.build_assertion(sa, now=1_700_000_000)
    head, claims, sig = jwt.split(".")
    assert msgspec.json.decode(_b64d(head)) == {"alg": "RS256", "typ": "JWT", "kid": "kid-1"}
    assert msgspec.json.decode(_b64d(claims)) == {
        "iss": "nexus@proj-1.iam.gserviceaccount.com",
        "scope": "https://www.googleapis.com/auth/cloud-platform",
        "aud": "https://oauth2.googleapis.com/token",
        "iat": 1_700_000_000,
        "exp": 1_700_003_600,
    }
    public = serialization.load_pem_public_key(auth.public_key_pem(sa))
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(_b64d(sig), f"{head}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())
    with pytest.raises(InvalidSignature):
        public.verify(_b64d(sig), f"{head}.{claims}x".encode(), padding.PKCS1v15(), hashes.SHA256())


def test_token_request_and_cache(sa_json: bytes) -> None:
    sa = auth.parse_service_account(sa_json)
    wire = auth.token_request(sa, now=100)
    assert wire.url == "https://oauth2.googleapis.com/token"
    form = urllib.parse.parse_qs(wire.body.decode())
    assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    assert form["assertion"][0].count(".") == 2
    tok = auth.parse_token_response(
        b'{"access_token":"ya29.abc","expires_in":3599,"token_type":"Bearer"}', now=100
    )
    cache = auth.TokenCache()
    assert cache.get(sa, now=100) is None
    cache.put(sa, tok)
    assert cache.get(sa, now=100) == "ya29.abc"
    assert cache.get(sa, now=100 + 3599 - 301) == "ya29.abc"
    assert cache.get(sa, now=100 + 3599 - 299) is None  # inside the refresh margin
    cache.invalidate(sa)
    assert cache.get(sa, now=100) is None


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        pytest.param(b'{"type":"service_account","client_email":"a"}', "private_key", id="no_key"),
        pytest.param(
            b'{"type":"authorized_user","client_email":"a","private_key":"x"}',
            "not a service account",
            id="user_cred",
        ),
        pytest.param(
            b'{"client_email":"a","private_key":"x","token_uri":"http://evil"}', "https", id="http_token_uri"
        ),
    ],
)
def test_bad_service_accounts(raw: bytes, needle: str) -> None:
    with pytest.raises(CodecError) as exc:
        auth.parse_service_account(raw)
    assert exc.value.error.code == "auth_failed" and needle in exc.value.error.message


def test_bad_pem_never_echoes_key_material() -> None:
    sa = auth.parse_service_account(b'{"client_email":"a","private_key":"SECRET-NOT-A-PEM"}')
    with pytest.raises(CodecError) as exc:
        auth.build_assertion(sa, now=0)
    assert "SECRET" not in str(exc.value)


CLAUDE = target(
    "vertex", "", "claude-sonnet-4@20250514", project="proj-1", location="us-east5", publisher="anthropic"
)


def test_claude_on_vertex_raw_predict() -> None:
    wire = CODEC.encode_chat(
        ChatRequest(model="x", messages=[Message(role="user", content="hi")], max_tokens=64), CLAUDE
    )
    assert wire.url == (
        "https://us-east5-aiplatform.googleapis.com/v1/projects/proj-1/locations/us-east5/"
        "publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict"
    )
    assert body(wire.body) == {
        "anthropic_version": "vertex-2023-10-16",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    }
    stream = CODEC.encode_chat(
        ChatRequest(model="x", messages=[Message(role="user", content="hi")], stream=True), CLAUDE
    )
    assert stream.url.endswith(":streamRawPredict") and body(stream.body)["stream"] is True
    resp = CODEC.decode_chat(fixture("anthropic", "response_text.json"), CLAUDE)
    assert resp.choices[0].message.content == "Hi! My name is Claude."
    chunks = CODEC.stream_decoder(CLAUDE).feed(fixture("anthropic", "stream_tool_use.sse"))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 89


def test_vertex_errors_in_either_shape() -> None:
    claude = CODEC.normalise_error(529, fixture("anthropic", "error_overloaded.json"), {})
    google = CODEC.normalise_error(429, fixture("gemini", "error_quota.json"), {})
    assert (claude.code, claude.message) == ("upstream_error", "anthropic: overloaded_error (HTTP 529)")
    assert (google.code, google.message) == ("rate_limited", "vertex: RESOURCE_EXHAUSTED (HTTP 429)")
