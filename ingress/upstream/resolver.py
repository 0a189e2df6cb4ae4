"""A resolver that refuses private addresses at connect time.

The config check (``streams.config.check_outbound_url``) sees the host name
once; DNS can answer differently later (rebinding), so the addresses a
connection would actually use are checked again here.
"""

from __future__ import annotations

import ipaddress
import socket

from aiohttp.abc import ResolveResult
from aiohttp.resolver import ThreadedResolver


class PrivateAddressRefused(OSError):
    pass


class PublicOnlyResolver(ThreadedResolver):
    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await super().resolve(host, port, family)
        for r in results:
            ip = ipaddress.ip_address(r["host"])
            if not ip.is_global or ip.is_multicast:
                raise PrivateAddressRefused(f"{host} resolves to a non-public address; refused")
        return results
