"""The upstream HTTP transport: one pooled aiohttp session per provider."""

from ingress.upstream.pool import Upstream, UpstreamPool

__all__ = ["Upstream", "UpstreamPool"]
