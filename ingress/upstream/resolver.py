"""The DNS side of the SSRF guard: what a configured host name resolves to.

The config check (``streams.config_checks.check_outbound_url``, run by the
Hub and at load) judges a URL by its text; only a node can ask DNS, and DNS
can answer differently later (rebinding), so the addresses a connection
would actually use are checked again when it is made.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import ResolveResult
from aiohttp.resolver import ThreadedResolver

from streams.config_checks import check_address, check_outbound_url


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


def check_resolved_url(url: str, *, allow_private: bool, where: str) -> None:
    """The config check, then every address the host name resolves to now
    (blocking: call while building, not on the event loop).  A name that
    does not resolve yet passes: the connect-time resolver judges it."""
    check_outbound_url(url, allow_private=allow_private, where=where)
    host = urlsplit(url).hostname or ""
    if allow_private:
        return
    try:
        ipaddress.ip_address(host)
        return  # a literal was judged above
    except ValueError:
        pass
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except OSError:
        return
    for addr in sorted(addresses):
        check_address(addr, url, where)
