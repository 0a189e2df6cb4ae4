"""The event contract: every fact an ingress node, processor or the hub emits.

Evolution rules (see DESIGN.md "Events"): new fields get defaults and go at
the end; fields are never reordered, renamed or retyped; unknown fields are
tolerated on decode so a newer producer never breaks an older consumer.  A
breaking change bumps the event's ``v`` and an upcaster in ``streams.codec``
lifts old payloads.
"""

from __future__ import annotations

import os
import time

import msgspec

# Body capture: at most this many bytes travel inside an event; anything
# larger goes to the spill store and the event carries a BodyRef.
INLINE_BODY_LIMIT = 256 * 1024


class _RandomPool:
    """Random hex text from os.urandom, fetched 4 KiB at a time, and the
    id prefix of the current millisecond: a request makes about ten ids,
    and a getrandom syscall plus byte twiddling each was a measurable share
    of its CPU."""

    __slots__ = ("hex", "ms", "pos", "prefix")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.hex = ""
        self.pos = 0
        self.ms = -1
        self.prefix = ""


_random = _RandomPool()
if hasattr(os, "register_at_fork"):  # a forked worker must not repeat its parent's ids
    os.register_at_fork(after_in_child=_random.reset)

# The variant field: the top two bits of the fourth group are 10, so its
# first hex digit is 8, 9, a or b (two random bits kept).
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def uuid7() -> str:
    """A time-ordered UUIDv7 (RFC 9562): ids sort by creation time, which
    keeps indexes append-mostly and makes logs readable.  48 bits of Unix
    milliseconds, the version 7, then 74 random bits (12 + 2 + 60)."""
    pool = _random
    ms = time.time_ns() // 1_000_000
    if ms != pool.ms:
        t = f"{ms & 0xFFFF_FFFF_FFFF:012x}"
        pool.ms, pool.prefix = ms, f"{t[:8]}-{t[8:]}-7"
    # take19, inlined: a request makes about ten ids.
    pos, h = pool.pos, pool.hex
    if pos + 19 > len(h):
        h = pool.hex = os.urandom(4096).hex()
        pos = 0
    pool.pos = pos + 19
    r = h[pos : pos + 19]
    return f"{pool.prefix}{r[:3]}-{_VARIANT[r[3]]}{r[4:7]}-{r[7:]}"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Node(msgspec.Struct, frozen=True, gc=False):
    kind: str  # gateway | proxy | agent | hub | processor
    id: str


class Tenant(msgspec.Struct, frozen=True, gc=False):
    org_id: str = ""
    project_id: str = ""
    key_id: str = ""
    user_id: str = ""


class BodyRef(msgspec.Struct, frozen=True, gc=False):
    """Where a spilled body lives: the spill store's object key, its size
    and sha256 (hex) so a reader can verify it got the exact bytes."""

    key: str
    size: int
    sha256: str


class Body(msgspec.Struct, frozen=True, gc=False):
    """A captured body: inline (<= INLINE_BODY_LIMIT) or a spill reference.
    ``redacted`` is true when what is stored is the redacted form."""

    content_type: str = "application/json"
    inline: bytes | None = None
    ref: BodyRef | None = None
    size: int = 0
    redacted: bool = False


class Usage(msgspec.Struct, frozen=True, gc=False):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0  # provider prompt-cache reads (a subset of prompt_tokens)
    cache_creation_tokens: int = 0  # provider prompt-cache writes (a subset of prompt_tokens)
    reasoning_tokens: int = 0  # a subset of completion_tokens


# gc=False, here and on the small structs events carry: events are plain data
# that never form reference cycles, so the cyclic GC need not track them (a
# projector holding batches of decoded events spent 10-20 % of its CPU in GC
# passes over them).  Subclasses inherit it.
class Event(msgspec.Struct, kw_only=True, tag_field="type", omit_defaults=True, gc=False):
    """The envelope.  Every event type subclasses it; the tag is ``type``."""

    id: str = msgspec.field(default_factory=uuid7)
    v: int = 1
    occurred_at_ms: int = msgspec.field(default_factory=now_ms)
    request_id: str = ""
    trace_id: str = ""
    node: Node = Node(kind="unknown", id="unknown")
    tenant: Tenant = Tenant()


# --- traffic events -------------------------------------------------------


class Interception(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """How a request reached an ingress that intercepts traffic never
    pointed at the gateway (the compliance proxy, the desktop agent): the
    connection it came in on and what that connection was.  Metadata only:
    a provider key appears as its HMAC fingerprint, never as itself."""

    bump_status: str = ""  # bumped (decrypted and seen), ... (streams.events_proxy.BUMP_STATUSES)
    connection_id: str = ""
    target_host: str = ""  # the host the client addressed (the provider's)
    ai_service: str = ""  # the AI-host catalogue's name for it
    device_id: str = ""  # the attested agent, if any
    credential_fingerprint: str = ""  # HMAC-SHA256 of the caller's provider key (16 hex)
    credential_class: str = ""  # corporate | nexus | unknown


class RequestReceived(Event, tag="request.received"):
    """A request as the ingress node received it: what arrived (path,
    method, client) whether or not it got further, and, once known, its
    tenant, endpoint, model and body."""

    ingress: str = "gateway"  # gateway | proxy | agent
    # chat | messages | count_tokens | responses | embeddings | generate_content
    # | stream_generate_content | gemini_count_tokens | embed_content
    # | batch_embed_contents; the proxy's own: cached_contents (a Gemini prompt
    # stored), vertex_predict, vertex_embed_content, vertex_batch_embed_contents
    # (Vertex AI embeddings)
    endpoint: str = ""
    ingress_format: str = "openai"  # the caller's wire grammar
    method: str = "POST"
    path: str = ""
    requested_model: str = ""
    stream: bool = False
    client_ip: str = ""
    user_agent: str = ""
    body: Body | None = None
    passthrough_flags: list[str] = []
    passthrough_reason: str = ""
    # Set by an intercepting ingress (the proxy): the connection's facts.
    interception: Interception | None = None


class UpstreamResult(Event, tag="upstream.result"):
    """What the provider did with one attempt."""

    provider: str = ""
    provider_model: str = ""
    attempt: int = 1
    status: int = 0
    upstream_ms: float = 0.0  # request sent -> last byte received
    ttft_ms: float | None = None  # request sent -> first token (streams)
    error_code: str = ""
    routing_rule: str = ""
    body: Body | None = None
    credential_id: str = ""  # which credential of the provider's pool was used ("" = no pool)


class UsageRecorded(Event, tag="usage.recorded"):
    """The usage delta of one request, priced once, here, from the config
    snapshot the request was served under."""

    provider: str = ""
    provider_model: str = ""
    model: str = ""  # the public model name
    usage: Usage = Usage()
    cost_usd: float = 0.0
    priced: bool = True  # false when the model has no price
    config_version: str = ""
    estimated: bool = False  # true when the provider reported no usage


class RequestCompleted(Event, tag="request.completed"):
    """The response as the caller saw it."""

    status: int = 200
    latency_ms: float = 0.0  # request received -> last byte sent
    ttft_ms: float | None = None  # request received -> first byte of the stream sent
    provider: str = ""
    provider_model: str = ""
    attempts: int = 1
    cache_status: str = ""
    routing_rule: str = ""  # the routing rule that chose the target ("" = the model was named)
    cache_saving_usd: float = 0.0  # a cache hit: what the cached answer cost when it was made
    model: str = ""  # the public model it was routed to ("" = not resolved)


class RequestFailed(Event, tag="request.failed"):
    """The request ended in an error the caller received."""

    status: int = 500
    error_code: str = ""
    error_type: str = ""
    # Our own words for what went wrong: never the prompt, never a key,
    # never a provider body (those may quote the prompt).
    reason: str = ""
    stage: str = ""  # auth | validate | route | upstream | stream | internal
    latency_ms: float = 0.0
    provider: str = ""
    provider_model: str = ""
    attempts: int = 1  # upstream attempts made (retries and fallbacks)
    routing_rule: str = ""
    model: str = ""  # the public model it was routed to ("" = not resolved before it failed)


class RequestAborted(Event, tag="request.aborted"):
    """A request that will never have an outcome: the node serving it
    stopped (a crash cut its stream, say).  Emitted by the reconciler
    (``processors.reconcile``), never by the node itself; the quota
    processor releases its reservation, ``traffic_event`` records it as
    aborted unless a real outcome arrives after all (a node cut off from
    NATS that delivers its events later): that one wins."""

    # node_restarted: the node came back and this request is older than the
    # new process; node_lost: the node has not been seen for a while;
    # open_too_long: no outcome after the longest a request may take.
    cause: str = ""
    reason: str = ""  # our words
    received_at_ms: int = 0  # when the request was received (its node's clock)


TrafficEvent = (
    RequestReceived | UpstreamResult | UsageRecorded | RequestCompleted | RequestFailed | RequestAborted
)
