"""The call stage's SSRF guard on the URLs codecs build (a Replicate stream
URL comes from the provider's answer): a refused URL is refused every
time, a passed one is remembered per provider (its check is a function of
the text and the provider's setting)."""

from __future__ import annotations

import pytest

from ingress.pipeline.call.unary import guard
from ingress.pipeline.errors import GatewayError
from ingress.upstream import Upstream
from ingress.upstream.lean import LeanClient
from streams.config import Provider


def _upstream(allow_private: bool) -> Upstream:
    provider = Provider(
        name="p", kind="openai", base_url="https://api.example.com/v1", allow_private_network=allow_private
    )
    client = LeanClient(
        max_connections=1, connect_timeout_s=1, read_timeout_s=1, allow_private=allow_private
    )  # never connects here: the guard runs before any call
    return Upstream(provider, None, None, client)


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.7/v1/predictions/abc/stream",
        "http://169.254.169.254/latest/meta-data",
        "http://localhost:8080/x",
        "file:///etc/passwd",
    ],
)
async def test_a_private_or_odd_url_is_refused_every_time(url: str) -> None:
    up = _upstream(False)
    for _ in range(2):
        with pytest.raises(GatewayError) as caught:
            guard(up, url)
        assert caught.value.status == 502
    assert url not in up.guarded


async def test_a_public_url_passes_and_is_remembered_per_provider() -> None:
    up = _upstream(False)
    guard(up, "https://api.example.com/v1/chat/completions")
    assert up.guarded == {"https://api.example.com/v1/chat/completions"}
    # Allowed for a provider that allows private networks, not for another.
    private = _upstream(True)
    guard(private, "http://10.0.0.7/v1/chat/completions")
    with pytest.raises(GatewayError):
        guard(up, "http://10.0.0.7/v1/chat/completions")


async def test_what_is_remembered_is_bounded() -> None:
    up = _upstream(False)
    for i in range(300):
        guard(up, f"https://stream.example.com/v1/streams/{i}")
    assert 0 < len(up.guarded) <= 256
