"""Response caching: the exact cache (Valkey) and in-process request
coalescing, both keyed by ``exact_key``."""

from ingress.cache.coalesce import Coalescer, Flight
from ingress.cache.key import exact_key, time_sensitive
from ingress.cache.store import Entry, ExactCache

__all__ = ["Coalescer", "Entry", "ExactCache", "Flight", "exact_key", "time_sensitive"]
