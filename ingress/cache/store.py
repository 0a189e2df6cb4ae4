"""Exact-cache entries in Valkey: the bytes the caller received (a JSON
answer, or the whole SSE stream) with what is needed to replay and account
for them.  Every Valkey call is bounded and fails open: a cache that is
down or slow is a miss, never an error."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Literal

import msgspec

log = logging.getLogger("nexus.cache")


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    kind: Literal["response", "stream"]
    content_type: str
    body: bytes
    cost_usd: float = 0.0  # what the answer cost when it was made: a hit saves it
    provider: str = ""
    provider_model: str = ""
    model: str = ""
    created_at: float = 0.0


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Entry)


class ExactCache:
    def __init__(self, client: Any, prefix: str, ttl_s: int, max_entry_bytes: int, timeout_s: float) -> None:
        self.client = client
        self.prefix = prefix + "cache:exact:"
        self.ttl_s = ttl_s
        self.max_entry_bytes = max_entry_bytes
        self.timeout_s = timeout_s

    async def get(self, key: str) -> Entry | None:
        try:
            async with asyncio.timeout(self.timeout_s):
                raw = await self.client.get(self.prefix + key)
        except Exception as exc:  # fail open: down, slow or refusing
            log.warning("exact cache lookup failed (%s): served as a miss", type(exc).__name__)
            return None
        if raw is None:
            return None
        try:
            return _decoder.decode(raw)
        except msgspec.DecodeError:
            return None  # an entry of another version: a miss, overwritten on fill

    async def put(self, key: str, entry: Entry) -> bool:
        if len(entry.body) > self.max_entry_bytes:
            return False
        data = _encoder.encode(msgspec.structs.replace(entry, created_at=time.time()))
        try:
            async with asyncio.timeout(max(self.timeout_s, 1.0)):
                await self.client.set(self.prefix + key, data, ex=self.ttl_s)
        except Exception as exc:
            log.warning("exact cache write failed (%s)", type(exc).__name__)
            return False
        return True
