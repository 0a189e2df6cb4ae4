"""The provider probe the Hub's admin API calls (``streams.probe``): one
request to a provider, built by the gateway's own codec
(``adapters.discovery``), sent with the gateway's SSRF guard (the URL
checked as configured, every address its name resolves to checked at
connect time unless the provider allows private networks), bounded by a
timeout, redirects not followed.

The answer names what happened in our words and a canonical code; the
provider's body is read only to list models or to classify a refusal, and
never returned or logged.
"""

from __future__ import annotations

import logging
import time

import aiohttp
import msgspec

from adapters.base import Target, WireRequest
from adapters.discovery import chat_request, decode_models, error_code, models_request
from adapters.registry import CODECS
from ingress.upstream.resolver import PrivateAddressRefused, PublicOnlyResolver
from streams.config import Provider
from streams.config_base import ConfigError
from streams.config_checks import check_outbound_url
from streams.probe import ProbeResult

log = logging.getLogger("nexus.probe")

MAX_TIMEOUT_S = 30.0
_MAX_BODY = 4 * 1024 * 1024


def _reason(status: int, code: str) -> str:
    if status in (401, 403):
        return f"the provider refused the credential (HTTP {status})"
    if status == 429:
        return "the provider rate limited the probe (HTTP 429): the credential was accepted"
    if status == 404:
        return "the provider has no such endpoint or model (HTTP 404)"
    return f"the provider answered HTTP {status} ({code})"


async def probe(
    provider: Provider, api_key: str | None, *, model: str = "", timeout_s: float = 10.0
) -> ProbeResult:
    codec = CODECS.get(provider.kind)
    if codec is None:
        return ProbeResult(
            ok=False, method="none", error="unsupported", reason=f"no codec for {provider.kind!r}"
        )
    try:
        check_outbound_url(provider.base_url, allow_private=provider.allow_private_network, where="base_url")
    except ConfigError as exc:
        return ProbeResult(ok=False, method="none", error="refused", reason=str(exc))
    target = Target(
        provider=provider.kind,
        base_url=provider.base_url,
        provider_model=model,
        api_key=api_key or None,
        headers=dict(provider.headers),
        options=dict(provider.options),
    )
    wire = models_request(codec, target)
    method = "models"
    if wire is None:
        if not model:
            return ProbeResult(
                ok=False,
                method="chat",
                error="invalid_request",
                reason=f"a {provider.kind} provider has no models listing: name a model to probe with",
            )
        wire, method = chat_request(codec, target), "chat"
    timeout_s = min(max(timeout_s, 0.1), MAX_TIMEOUT_S)
    started = time.perf_counter()
    try:
        status, body, headers = await _send(wire, provider, timeout_s)
    except TimeoutError:
        return ProbeResult(
            ok=False, method=method, error="timeout", reason=f"no answer within {timeout_s:g} s"
        )
    except (aiohttp.ClientError, OSError) as exc:
        if _private(exc):
            return ProbeResult(
                ok=False,
                method=method,
                error="refused",
                reason=f"{provider.base_url}: its host resolves to a non-public address "
                "(allow_private_network is off)",
            )
        return ProbeResult(
            ok=False,
            method=method,
            error="unreachable",
            reason=f"cannot reach the provider: {type(exc).__name__}",
        )
    latency = round((time.perf_counter() - started) * 1000, 1)
    if not 200 <= status < 300:
        code = error_code(codec, status, body, headers)
        return ProbeResult(
            ok=False,
            method=method,
            status=status,
            latency_ms=latency,
            error=code,
            reason=_reason(status, code),
        )
    models: list[str] = []
    if method == "models":
        try:
            models = decode_models(body)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return ProbeResult(
                ok=False,
                method=method,
                status=status,
                latency_ms=latency,
                error="upstream_error",
                reason="the provider's model listing could not be read",
            )
    return ProbeResult(ok=True, method=method, status=status, latency_ms=latency, models=models)


def _private(exc: BaseException) -> bool:
    """The SSRF guard refused the address (aiohttp wraps the resolver's error)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, PrivateAddressRefused):
            return True
        seen = getattr(seen, "os_error", None) or seen.__cause__ or seen.__context__
    return False


async def _send(wire: WireRequest, provider: Provider, timeout_s: float) -> tuple[int, bytes, dict[str, str]]:
    connector = aiohttp.TCPConnector(
        limit=1, resolver=None if provider.allow_private_network else PublicOnlyResolver()
    )
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
        session.request(
            wire.method, wire.url, headers=dict(wire.headers), data=wire.body or None, allow_redirects=False
        ) as resp,
    ):
        body = await resp.content.read(_MAX_BODY)
        return resp.status, body, dict(resp.headers)
