"""Events of the compliance proxy: one per connection (how it was handled
and what crossed it, never what was said), one per request seen inside a
bumped connection, and the node's break-glass switch.

Metadata only: host names, byte counts, durations, statuses, the path
without its query, and provider keys as HMAC fingerprints.
"""

from __future__ import annotations

from streams.events import Event

# How a connection was handled (``bump_status``).
BUMP_STATUSES = (
    "bumped",  # TLS terminated with our leaf, requests seen
    "spliced",  # bytes relayed untouched (host not listed, or not TLS)
    "attested",  # a valid agent attestation: relayed untouched
    "pinning_fallback",  # the client refused our leaf earlier: relayed untouched
    "kill_switch",  # bumping turned off (fleet or node break-glass)
    "blocked",  # refused before any byte reached the target
    "upstream_cert_error",  # the upstream's certificate failed verification (502)
)


class ProxyConnection(Event, tag="proxy.connection"):
    """A client connection through the proxy, emitted when it ends.
    ``request_id`` is the connection id; ``tenant.user_id`` the proxy user
    (or the virtual key's user)."""

    bump_status: str = ""
    reason: str = ""  # why it was blocked / failed, in our words
    method: str = "CONNECT"  # CONNECT, or GET/POST/... for a plain http:// request
    target_host: str = ""
    target_port: int = 0
    sni: str = ""
    client_ip: str = ""
    user_agent: str = ""
    ai_service: str = ""  # the catalogue's name for the host ("" = not an AI host)
    device_id: str = ""  # the attested agent id
    attestation: str = ""  # "" (none sent) | valid | the reason it was refused
    auth: str = ""  # "" (anonymous) | user | virtual_key | hub_user (a Hub user's own password)
    status: int = 0  # what the proxy answered to the CONNECT / request line
    bytes_up: int = 0  # client -> upstream (application bytes, after TLS when bumped)
    bytes_down: int = 0
    duration_ms: float = 0.0
    requests: int = 0  # HTTP requests seen inside a bumped connection
    handshake_error: str = ""  # why the client's TLS handshake with us failed


class ProxyRequest(Event, tag="proxy.request"):
    """One HTTP request inside a bumped connection (phase 1: relayed as is;
    LLM API traffic later runs the gateway's pipeline and emits its events)."""

    connection_id: str = ""
    method: str = ""
    host: str = ""
    path: str = ""  # without the query string
    action: str = ""  # process | passthrough | block
    adapter: str = ""
    adapter_error: str = ""
    model: str = ""
    stream: bool = False
    status: int = 0
    bytes_up: int = 0  # request body
    bytes_down: int = 0  # response body
    latency_ms: float = 0.0
    client_ip: str = ""
    user_agent: str = ""
    ai_service: str = ""
    bump_status: str = "bumped"
    # A provider key seen in Authorization / x-api-key: its HMAC-SHA256
    # fingerprint (16 hex) and whether it is a corporate credential.
    credential_fingerprint: str = ""
    credential_class: str = ""  # corporate | unknown


class ProxyBreakGlass(Event, tag="proxy.break_glass"):
    """The node's kill switch changed: engaged by an operator, released, or
    reverted by itself when its time ran out."""

    action: str = ""  # engaged | released | expired
    reason: str = ""
    until_ms: int = 0
    actor: str = ""  # the admin caller's address


class ProxyJustification(Event, tag="proxy.justification"):
    """A user proceeded past a block page with a written justification: for
    ``until_ms`` the hooks named run in monitor mode for that user (or
    source address) and host; their verdicts are still recorded, as
    ``enforcement: justified``.  ``request_id`` is the connection id of the
    block page; ``tenant.user_id`` the proxy user."""

    host: str = ""
    hooks: list[str] = []
    rule: str = ""
    justification: str = ""  # the user's words (at most 1,000 characters)
    client_ip: str = ""
    user_agent: str = ""
    until_ms: int = 0


ProxyEvent = ProxyConnection | ProxyRequest | ProxyBreakGlass | ProxyJustification
