"""Field checks more than one config section needs: ids, RE2 patterns,
time zones and the SSRF rule for outbound URLs.

They are part of the contract, not of any one node: the Hub runs them before
it publishes a snapshot and every node runs them when it loads one, so both
must agree on what is valid.  Nothing here does I/O; the DNS side of the
SSRF guard (what a host name resolves to now) belongs to the node that
connects (``ingress.upstream.resolver``).
"""

from __future__ import annotations

import ipaddress
import re
import zoneinfo
from urllib.parse import urlsplit

import re2

from streams.config_base import ConfigError

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def check_id(value: str, where: str) -> None:
    if not _ID.match(value):
        raise ConfigError(f"{where}: {value!r} is not a valid id (letters, digits, . _ : -)")


def check_re2(pattern: str, *, where: str, case_insensitive: bool = False) -> None:
    """Patterns operators write run under RE2 semantics (linear time, no
    backreferences or lookaround): one RE2 refuses is a config error, not a
    slow path on a node."""
    try:
        re2.compile(("(?i)" if case_insensitive else "") + pattern)
    except re2.error as exc:
        raise ConfigError(f"{where}: not a valid RE2 pattern: {exc}") from None
    except Exception as exc:  # the binding raises plain errors on some inputs
        raise ConfigError(f"{where}: not a valid RE2 pattern: {exc}") from None


def check_time_zone(name: str, where: str) -> None:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{where}: unknown time zone {name!r}") from None


def check_address(addr: str, url: str, where: str) -> None:
    """Refuse an address that is not public (private, loopback, link-local,
    multicast...)."""
    ip = ipaddress.ip_address(addr)
    if not ip.is_global or ip.is_multicast:
        raise ConfigError(
            f"{where}: {url!r} resolves to a non-public address ({ip}); set "
            "allow_private_network: true if that is intended"
        )


def check_outbound_url(url: str, *, allow_private: bool, where: str) -> None:
    """SSRF guard for every URL an operator configures: http(s) only, no
    credentials in it, and no private, loopback, link-local or otherwise
    internal target unless allowed.  A host name is judged by its name here;
    the nodes check the addresses it resolves to when they connect."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"{where}: {url!r} must be an http or https URL")
    host = parts.hostname
    if not host:
        raise ConfigError(f"{where}: {url!r} has no host")
    if parts.username or parts.password:
        raise ConfigError(f"{where}: credentials in the URL are not allowed; use api_key_env")
    if allow_private:
        return
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host == "localhost" or host.endswith(".localhost") or host.endswith(".internal"):
            raise ConfigError(
                f"{where}: {url!r} points at an internal host; set allow_private_network: true "
                "if that is intended"
            ) from None
        return
    check_address(host, url, where)
