from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import valkey.asyncio as valkey


@pytest.fixture
async def vk(valkey_url: str, valkey_prefix: str) -> AsyncIterator[Any]:
    pool = valkey.BlockingConnectionPool.from_url(valkey_url, max_connections=64, timeout=10)
    client = valkey.Valkey(connection_pool=pool)
    yield client
    keys = [k async for k in client.scan_iter(match=f"{valkey_prefix}*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()
    await pool.aclose()
