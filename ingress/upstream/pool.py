"""One pooled ``aiohttp.ClientSession`` per provider, built once at start-up
from the config snapshot: connection limit from ``max_connections``,
connect/read timeouts from the provider, the credential read from the
provider's ``api_key_env`` (never from the file, never logged)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping

import aiohttp

from adapters.openai.codec import chat_url, embeddings_url
from ingress.upstream.resolver import PublicOnlyResolver
from streams.config import Provider, check_outbound_url

log = logging.getLogger("nexus.upstream")


class Upstream:
    """A provider's session and its precomputed request headers."""

    __slots__ = ("chat_url", "embeddings_url", "has_credential", "headers", "provider", "session")

    def __init__(self, provider: Provider, session: aiohttp.ClientSession, api_key: str | None) -> None:
        self.provider = provider
        self.session = session
        self.chat_url = chat_url(provider.base_url)
        self.embeddings_url = embeddings_url(provider.base_url)
        headers = {"Content-Type": "application/json"}
        headers.update(provider.headers)
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.headers = headers
        self.has_credential = bool(api_key)

    def with_credential(self, api_key: str) -> Upstream:
        """The same session and URLs, with another credential (a pool's pick)
        in the headers the OpenAI-shaped relays send as they are."""
        other = Upstream.__new__(Upstream)
        other.provider = self.provider
        other.session = self.session
        other.chat_url = self.chat_url
        other.embeddings_url = self.embeddings_url
        other.headers = {**self.headers, "Authorization": f"Bearer {api_key}"}
        other.has_credential = True
        return other


class UpstreamPool:
    def __init__(self, providers: Iterable[Provider], env: Mapping[str, str] | None = None) -> None:
        self._providers = list(providers)
        self._env = os.environ if env is None else env
        self._upstreams: dict[str, Upstream] = {}

    async def start(self) -> None:
        """Create the sessions (they bind to the running event loop)."""
        for p in self._providers:
            # The config loader checked this already; a snapshot can also be
            # built in code, so the guard runs again where the URL is used.
            check_outbound_url(p.base_url, allow_private=p.allow_private_network, where=f"provider {p.name}")
            api_key = self._env.get(p.api_key_env) if p.api_key_env else None
            if p.api_key_env and not api_key:
                log.warning("provider %s: environment variable %s is not set", p.name, p.api_key_env)
            connector = aiohttp.TCPConnector(
                limit=p.max_connections,
                limit_per_host=0,
                ttl_dns_cache=60,
                resolver=None if p.allow_private_network else PublicOnlyResolver(),
            )
            timeout = aiohttp.ClientTimeout(
                total=None,
                connect=p.connect_timeout_s,
                sock_connect=p.connect_timeout_s,
                sock_read=p.read_timeout_s,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                timeout=timeout,
                trust_env=False,  # no proxy from the environment: routes are explicit
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
                # A provider's Set-Cookie (a CDN's bot-management cookie, a
                # session) must not ride along on other callers' requests,
                # which share this session; keeping no jar also saves a
                # cookie filter per request and a parse per response.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            self._upstreams[p.name] = Upstream(p, session, api_key)

    def get(self, name: str) -> Upstream:
        return self._upstreams[name]

    async def close(self) -> None:
        for u in self._upstreams.values():
            await u.session.close()
        self._upstreams.clear()
