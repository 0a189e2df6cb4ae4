"""The connect-time half of the SSRF guard for alert channels.

The config check (``streams.config_checks.check_outbound_url``, run by the
Hub and at load) judges a URL by its text; DNS can answer differently
later (rebinding), so every connection checks the addresses the name
resolves to now, with the same rule (``check_address``).  A channel with
``allow_private_network`` skips both.
"""

from __future__ import annotations

import socket

from aiohttp.abc import ResolveResult
from aiohttp.resolver import ThreadedResolver

from streams.config_base import ConfigError
from streams.config_checks import check_address, check_outbound_url


class PrivateAddressRefused(OSError):
    """A target that resolves to a private, loopback or link-local address."""


def check_addresses(host: str, addresses: list[str]) -> None:
    for addr in addresses:
        try:
            check_address(addr.split("%", 1)[0], host, "target")
        except ConfigError as exc:
            raise PrivateAddressRefused(str(exc)) from None


class PublicOnlyResolver(ThreadedResolver):
    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await super().resolve(host, port, family)
        check_addresses(host, [r["host"] for r in results])
        return results


def check_url(url: str, *, allow_private: bool, where: str) -> None:
    """The text check for a URL that came from the environment or a file
    (the config check only saw its variable's name).  The URL may carry a
    credential (Slack's do), so the error never quotes it."""
    try:
        check_outbound_url(url, allow_private=allow_private, where=where)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace(repr(url), "<the URL>").replace(url, "<the URL>")) from None
