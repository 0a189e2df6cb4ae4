"""The upstream transport: one pooled client per provider (the lean one by
default, aiohttp's by ``NEXUS_UPSTREAM_HTTP=aiohttp``)."""

from ingress.upstream.pool import Upstream, UpstreamPool

__all__ = ["Upstream", "UpstreamPool"]
