"""One pooled client per provider, built once at start-up from the config
snapshot: connection limit from ``max_connections``, connect/read timeouts
from the provider, the credential read from the provider's ``api_key_env``
(never from the file, never logged).

The call stage's client is the lean one (``lean.py``) unless the process
setting ``upstream_http`` (``NEXUS_UPSTREAM_HTTP``) says ``aiohttp``.  The
calls outside it (the smart router's classification, a Vertex token's
minting) stay on an aiohttp session, made on first use."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping

import aiohttp

from ingress.upstream.lean import LeanClient
from ingress.upstream.resolver import PublicOnlyResolver
from ingress.upstream.transport import AiohttpTransport, Transport
from streams.config import Provider
from streams.config_checks import check_outbound_url
from streams.settings import load_settings

log = logging.getLogger("nexus.upstream")


def aiohttp_session(p: Provider) -> aiohttp.ClientSession:
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
    return aiohttp.ClientSession(
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


class Upstream:
    """A provider's pooled clients.  The credential and the URLs of each
    call come from the codec's ``Target`` (ingress.pipeline.call.targets),
    so a pool's pick, a minted token or a vault secret is one value in one
    place; ``api_key`` here only tells whether a new snapshot may keep the
    clients.  ``http``: the call stage's client; ``session``: an aiohttp
    session for the other calls (the same one when ``http`` is aiohttp's)."""

    __slots__ = ("_session", "api_key", "guarded", "http", "provider")

    def __init__(
        self,
        provider: Provider,
        session: aiohttp.ClientSession | None,
        api_key: str | None,
        http: Transport | None = None,
    ) -> None:
        self.provider = provider
        self._session = session
        self.api_key = api_key  # in memory only
        # URLs the SSRF guard passed (ingress.pipeline.call.unary.guard).
        self.guarded: set[str] = set()
        if http is None:
            assert session is not None
            http = AiohttpTransport(session)
        self.http = http

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp_session(self.provider)
        return self._session

    @property
    def closed(self) -> bool:
        return self.http.closed or (self._session is not None and self._session.closed)

    async def close(self) -> None:
        await self.http.close()
        if self._session is not None and not self._session.closed:
            await self._session.close()


class UpstreamPool:
    def __init__(
        self,
        providers: Iterable[Provider],
        env: Mapping[str, str] | None = None,
        sealed: Mapping[str, str] | None = None,
        client: str = "",
    ) -> None:
        # "lean" or "aiohttp"; "" = the process setting (NEXUS_UPSTREAM_HTTP).
        self._client = client
        self._providers = list(providers)
        self._env = os.environ if env is None else env
        # Vault credentials the node opened (streams.vault.opener), by id.
        self._sealed: Mapping[str, str] = sealed if sealed is not None else {}
        self._upstreams: dict[str, Upstream] = {}

    async def start(self, previous: UpstreamPool | None = None) -> None:
        """Create the sessions (they bind to the running event loop).  A
        provider that ``previous`` (the pool of the snapshot served so far)
        has with the same settings and credential keeps its session and the
        connections in it."""
        client = self._client or load_settings().upstream_http
        for p in self._providers:
            # The config loader checked this already; a snapshot can also be
            # built in code, so the guard runs again where the URL is used.
            check_outbound_url(p.base_url, allow_private=p.allow_private_network, where=f"provider {p.name}")
            if p.api_key_env:
                api_key = self._env.get(p.api_key_env)
            else:
                api_key = self._sealed.get(p.credential) if p.credential else None
            old = previous._upstreams.get(p.name) if previous is not None else None
            if old is not None and old.provider == p and old.api_key == api_key and not old.closed:
                self._upstreams[p.name] = old
                continue
            if p.api_key_env and not api_key:
                log.warning("provider %s: environment variable %s is not set", p.name, p.api_key_env)
            if client == "aiohttp":
                session = aiohttp_session(p)
                self._upstreams[p.name] = Upstream(p, session, api_key)
            else:
                lean = LeanClient(
                    max_connections=p.max_connections,
                    connect_timeout_s=p.connect_timeout_s,
                    read_timeout_s=p.read_timeout_s,
                    allow_private=p.allow_private_network,
                )
                self._upstreams[p.name] = Upstream(p, None, api_key, lean)

    def get(self, name: str) -> Upstream:
        return self._upstreams[name]

    async def close(self) -> None:
        for u in self._upstreams.values():
            await u.close()
        self._upstreams.clear()

    async def close_unshared(self, successor: UpstreamPool | None) -> None:
        """Close the clients ``successor`` did not take over."""
        kept = {id(u) for u in successor._upstreams.values()} if successor is not None else set()
        for u in self._upstreams.values():
            if id(u) not in kept:
                await u.close()
