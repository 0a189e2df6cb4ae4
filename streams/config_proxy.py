"""The ``proxy:`` config section: the compliance proxy on :3128 (CONNECT,
TLS bump, attestation passthrough, shadow-AI discovery).

Strict like the rest of the file; the validator names the field at fault.
Behaviour (matching, certificates, sockets) lives in ``ingress.proxy``; the
pattern syntax checked here is the one that runs there (RE2 for regex
hosts, fnmatch-style globs).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec

from streams.config_base import ConfigError, Strict
from streams.config_checks import check_re2

MatchKind = Literal["exact", "glob", "prefix", "regex"]
PathAction = Literal["process", "passthrough", "block"]

MAX_LEAF_DAYS = 397  # the CA/Browser Forum ceiling for server certificates


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class InterceptPath(Strict, frozen=True):
    """What to do with requests under ``prefix`` on a bumped host (the
    longest matching prefix wins; no match: the domain's ``action``)."""

    prefix: str
    action: PathAction = "process"


class InterceptDomain(Strict, frozen=True):
    """A host that is bumped.  ``match`` is how ``host`` is read: exact name,
    glob (``*.openai.com``), prefix (``api.``) or an RE2 regex; the lowest
    ``priority`` among matching entries decides."""

    host: str
    match: MatchKind = "exact"
    priority: int = 100
    action: PathAction = "process"
    paths: tuple[InterceptPath, ...] = ()
    # The traffic adapter that parses the flow (openai, anthropic, gemini,
    # ...; "" = none: requests are relayed and recorded as opaque HTTP).
    adapter: str = ""
    on_adapter_error: Literal["passthrough", "block"] = "passthrough"
    # Headers added to every request to this host (tenant restriction, e.g.
    # ChatGPT-Allowed-Workspace-Id).
    add_headers: Mapping[str, str] = {}


class CaSource(Strict, frozen=True):
    """One CA certificate and where its private key comes from: a file only
    the proxy's user can read (mode 0600), or a command whose standard
    output is the PEM key (a KMS unwrap, a secret manager)."""

    cert_file: str
    key_file: str = ""
    key_command: tuple[str, ...] = ()


class ProxyTls(Strict, frozen=True):
    # The first CA signs new leaves; a second one may stay published (the
    # CA bundle served for onboarding carries both) during a rotation.
    cas: tuple[CaSource, ...] = ()
    leaf_days: int = 30
    leaf_cache_size: int = 1024
    # Upstream certificates are verified against the system store plus
    # these PEM files (a corporate root, a test CA).
    upstream_ca_files: tuple[str, ...] = ()
    # A client that refuses our leaf (certificate pinning) makes the host
    # spliced for this long, so the application keeps working.
    pinning_fallback_s: float = 3600.0
    handshake_timeout_s: float = 10.0


class ProxyUser(Strict, frozen=True):
    """A proxy user for Basic authentication.  ``password_hash`` is
    ``scrypt$<n>$<r>$<p>$<salt hex>$<hash hex>`` (``nexus proxy hash-password``
    prints one); the password itself is never stored."""

    name: str
    password_hash: str
    org: str = ""
    project: str = ""


class ProxyAuth(Strict, frozen=True):
    required: bool = False
    realm: str = "Nexus"
    users: tuple[ProxyUser, ...] = ()
    # Virtual keys (nvk_...) as the password authenticate too, as the
    # key's user/org/project.
    virtual_keys: bool = True
    # A proxy following a Hub lets the Hub's users in with their own e-mail
    # and password (the Hub checks them; docs/proxy.md).
    hub_users: bool = True
    # How long a Hub user's sign-in is trusted before the Hub is asked
    # whether the user is still as they were (no password, no scrypt): a
    # disabled user or a changed password stops working within this (and a
    # trusted sign-in keeps working this long while the Hub is away).
    hub_remember_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 10.0


class ProxyLimits(Strict, frozen=True):
    max_tunnels: int = 10_000
    header_timeout_s: float = 10.0  # the CONNECT / request head (slowloris)
    idle_timeout_s: float = 300.0  # a tunnel with no byte either way
    connect_timeout_s: float = 10.0  # to the upstream (or the parent proxy)
    # New connections per source IP per second (token bucket); 0: no limit.
    per_source_rate: float = 0.0
    per_source_burst: int = 50
    max_header_bytes: int = 64 * 1024
    max_body_bytes: int = 32 * 1024 * 1024  # a bumped request body


class ProxyAttestation(Strict, frozen=True):
    enabled: bool = True
    # Until the Hub serves agent keys: a YAML file of agents (see
    # docs/proxy.md), re-read when it changes.
    keys_file: str = ""
    max_skew_s: float = 300.0


class ProxyBlockPage(Strict, frozen=True):
    """What a browser sees when a connection-stage hook blocks it: an HTML
    page naming the rule, served on a connection bumped for the purpose (a
    refused CONNECT only shows as a bare network error), optionally with a
    form to proceed with a justification.  Other clients still get the 403
    on the CONNECT."""

    enabled: bool = True
    # Hooks (ids; "*": any) a user may proceed past by writing why: the
    # justification is recorded (``proxy.justification``), then those hooks
    # run in monitor mode for that user (else source address) and host for
    # ``justification_ttl_s`` (recorded as ``enforcement: justified``).
    justify_hooks: tuple[str, ...] = ()
    justification_ttl_s: float = 3600.0
    min_justification_chars: int = 20
    # Printed on the page: who to ask.
    contact: str = ""


class ProxyConfig(Strict, frozen=True):
    # ``nexus up`` starts the proxy unless this is false.
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 3128
    # The address clients are told to use (``host`` or ``host:port``; no
    # port: the one bound), in the node's report to the Hub and so in the
    # Hub's PAC file.  Empty: ``host`` unless it is a wildcard (0.0.0.0,
    # ::), then the machine's hostname.  Set it when clients reach the node
    # by another name (a load balancer, NAT); ``nexus proxy --advertise``
    # sets it per node.
    advertise: str = ""
    # /healthz, /metrics and the node's break-glass endpoint; also the PAC
    # file, CA and onboarding text of this node alone (for a proxy run
    # without a Hub: the Hub serves them for the whole fleet).
    admin_host: str = "127.0.0.1"
    admin_port: int = 3129
    node_id: str = ""
    # Source CIDRs allowed to use the proxy; empty: any.
    allow_sources: tuple[str, ...] = ()
    # Targets that resolve to a private, loopback or link-local address are
    # refused (SSRF guard) unless inside one of these CIDRs.
    block_private_targets: bool = True
    allow_private_cidrs: tuple[str, ...] = ()
    # host:port -> address[:port]: split-horizon names and tests.
    resolve: Mapping[str, str] = {}
    # http://host:port of a parent (corporate) proxy every upstream
    # connection goes through.
    parent_proxy: str = ""
    # The environment variable holding ``user:password`` for the parent
    # proxy (Basic, sent on every CONNECT to it); empty: none.  A variable
    # name, never the secret: the config is shared with the Hub and nodes.
    parent_proxy_auth_env: str = ""
    # Ports a CONNECT may reach; empty: any.
    allow_ports: tuple[int, ...] = (443, 80, 8443)
    auth: ProxyAuth = ProxyAuth()
    tls: ProxyTls = ProxyTls()
    limits: ProxyLimits = ProxyLimits()
    attestation: ProxyAttestation = ProxyAttestation()
    interception: tuple[InterceptDomain, ...] = ()
    block_page: ProxyBlockPage = ProxyBlockPage()
    # Extra AI hosts for shadow-AI discovery, added to the shipped catalogue.
    ai_hosts: Mapping[str, str] = {}
    # The token of the node's break-glass endpoint comes from here.
    admin_token_env: str = "NEXUS_PROXY_ADMIN_TOKEN"  # noqa: S105 - a variable name


_SCRYPT = re.compile(r"^scrypt\$\d+\$\d+\$\d+\$[0-9a-f]{16,}\$[0-9a-f]{32,}$")
_GLOB = re.compile(r"^[A-Za-z0-9*?.\-\[\]!]+$")


def _check_cidrs(values: tuple[str, ...], where: str) -> None:
    for j, cidr in enumerate(values):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError(f"{where}[{j}]: {cidr!r} is not a valid CIDR") from None


def split_address(value: str) -> tuple[str, int | None] | None:
    """``10.0.0.5``, ``10.0.0.5:8443``, ``::1`` or ``[::1]:8443`` -> (address, port)."""
    text, port = value.strip(), None
    if text.startswith("["):
        addr, _, rest = text[1:].partition("]")
        text = addr
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                return None
            port = int(rest[1:])
    elif text.count(":") == 1:
        text, _, p = text.partition(":")
        if not p.isdigit():
            return None
        port = int(p)
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return None
    if port is not None and not 0 < port < 65536:
        return None
    return text, port


# A host clients can be told to use: DNS labels (underscores tolerated:
# some hostnames have them), or an IPv6 address in brackets.  Nothing else:
# the address is written into a PAC file's JavaScript string.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_ADDRESS_HOST = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")


def parse_proxy_address(value: str, *, where: str = "proxy.advertise") -> tuple[str, int | None]:
    """``proxy.example.com``, ``proxy.example.com:3128``, ``10.0.0.5``,
    ``[fd00::5]:3128`` -> (host, port or None); IPv6 without brackets is
    taken as an address with no port.  A ConfigError naming ``where``
    otherwise."""
    text = value.strip()
    port: int | None = None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise ConfigError(f"{where}: {value!r} is not host[:port]")
            port = int(rest[1:])
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"{where}: {host!r} is not an IPv6 address") from None
    elif text.count(":") > 1:
        try:
            host = str(ipaddress.IPv6Address(text))
        except ValueError:
            raise ConfigError(f"{where}: {value!r} is not host[:port]") from None
    else:
        host, sep, p = text.partition(":")
        if sep:
            if not p.isdigit():
                raise ConfigError(f"{where}: {value!r}: the port is not a number")
            port = int(p)
        if len(host) > 253 or not _ADDRESS_HOST.fullmatch(host):
            raise ConfigError(f"{where}: {host!r} is not a host name or IP address")
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"{where}: port {port} is not 1-65535")
    return host, port


def proxy_address(host: str, port: int) -> str:
    """``host:port`` as a client writes it (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def validate_proxy(cfg: ProxyConfig, *, orgs: set[str], projects: dict[str, str]) -> None:
    for name, port in (("port", cfg.port), ("admin_port", cfg.admin_port)):
        if not 0 <= port < 65536:
            raise ConfigError(f"proxy.{name}: must be 0-65535")
    if cfg.advertise:
        parse_proxy_address(cfg.advertise)
    bp = cfg.block_page
    if not 0 < bp.justification_ttl_s <= 8 * 3600:
        raise ConfigError("proxy.block_page.justification_ttl_s: more than 0 and at most 8 hours (28800)")
    if not 1 <= bp.min_justification_chars <= 1000:
        raise ConfigError("proxy.block_page.min_justification_chars: 1-1000")
    _check_cidrs(cfg.allow_sources, "proxy.allow_sources")
    _check_cidrs(cfg.allow_private_cidrs, "proxy.allow_private_cidrs")
    for key, value in cfg.resolve.items():
        host, sep, port_text = key.rpartition(":")
        if not sep or not host or not port_text.isdigit():
            raise ConfigError(f"proxy.resolve: {key!r} must be host:port")
        if split_address(value) is None:
            raise ConfigError(f"proxy.resolve[{key!r}]: {value!r} is not an IP address (optionally :port)")
    if cfg.parent_proxy:
        parts = urlsplit(cfg.parent_proxy)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ConfigError("proxy.parent_proxy: must be http://host:port")
        if parts.username is not None or parts.password is not None:
            raise ConfigError(
                "proxy.parent_proxy: no credentials in the URL (the config is shared and logged); "
                "put user:password in an environment variable and name it in proxy.parent_proxy_auth_env"
            )
    if cfg.parent_proxy_auth_env and not _ENV_NAME.fullmatch(cfg.parent_proxy_auth_env):
        raise ConfigError("proxy.parent_proxy_auth_env: must be an environment variable name")
    for j, port in enumerate(cfg.allow_ports):
        if not 0 < port < 65536:
            raise ConfigError(f"proxy.allow_ports[{j}]: must be 1-65535")
    seen: set[str] = set()
    for i, u in enumerate(cfg.auth.users):
        if not u.name or ":" in u.name or u.name in seen:
            raise ConfigError(f"proxy.auth.users[{i}].name: missing, duplicate or contains ':'")
        seen.add(u.name)
        if not _SCRYPT.match(u.password_hash):
            raise ConfigError(
                f"proxy.auth.users[{i}].password_hash: must be scrypt$n$r$p$salt$hash "
                "(nexus proxy hash-password prints one)"
            )
        if u.org and u.org not in orgs:
            raise ConfigError(f"proxy.auth.users[{i}].org: unknown org {u.org!r}")
        if u.project and projects.get(u.project) != (u.org or projects.get(u.project)):
            raise ConfigError(f"proxy.auth.users[{i}].project: unknown project or not in the user's org")
    t = cfg.tls
    if not 1 <= t.leaf_days <= MAX_LEAF_DAYS:
        raise ConfigError(f"proxy.tls.leaf_days: must be 1-{MAX_LEAF_DAYS}")
    if t.leaf_cache_size < 1:
        raise ConfigError("proxy.tls.leaf_cache_size: must be at least 1")
    if len(t.cas) > 2:
        raise ConfigError("proxy.tls.cas: at most two CAs (the signing one and the one being rotated out)")
    for j, ca in enumerate(t.cas):
        if ca.key_file and ca.key_command:
            raise ConfigError(f"proxy.tls.cas[{j}]: key_file or key_command, not both")
        if j == 0 and not (ca.key_file or ca.key_command):
            # Only the first CA signs; the other is published (rotation).
            raise ConfigError("proxy.tls.cas[0]: the signing CA needs key_file or key_command")
    if t.pinning_fallback_s < 0 or t.handshake_timeout_s <= 0:
        raise ConfigError("proxy.tls: pinning_fallback_s must be >= 0 and handshake_timeout_s positive")
    lim = cfg.limits
    for name in ("header_timeout_s", "idle_timeout_s", "connect_timeout_s"):
        if getattr(lim, name) <= 0:
            raise ConfigError(f"proxy.limits.{name}: must be positive")
    if lim.max_tunnels < 1 or lim.per_source_rate < 0 or lim.per_source_burst < 1:
        raise ConfigError("proxy.limits: max_tunnels and per_source_burst >= 1, per_source_rate >= 0")
    if cfg.attestation.max_skew_s <= 0:
        raise ConfigError("proxy.attestation.max_skew_s: must be positive")
    for i, d in enumerate(cfg.interception):
        where = f"proxy.interception[{i}]"
        if not d.host:
            raise ConfigError(f"{where}.host: empty")
        if d.match == "regex":
            check_re2(d.host, case_insensitive=True, where=f"{where}.host")
        elif d.match == "glob" and not _GLOB.match(d.host):
            raise ConfigError(f"{where}.host: {d.host!r} is not a host glob")
        for j, p in enumerate(d.paths):
            if not p.prefix.startswith("/"):
                raise ConfigError(f"{where}.paths[{j}].prefix: must start with /")
        for name in d.add_headers:
            if not re.fullmatch(r"[A-Za-z0-9-]+", name):
                raise ConfigError(f"{where}.add_headers: {name!r} is not a header name")
    for host in cfg.ai_hosts:
        if not host or "/" in host:
            raise ConfigError(f"proxy.ai_hosts: {host!r} is not a host name")
