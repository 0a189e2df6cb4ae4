"""The admin API's request cycle: one ``Route`` per endpoint (hub/api/routes
lists them all), one ``Call`` per request.

For every request: a request id; the caller (a bearer token or the session
cookie); the handler, which must ``authorize`` what it does before doing it
(deny by default: a handler that changes something without a decision is a
bug the audit record shows); one admin audit record, allowed or denied,
published before the answer leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import ipaddress
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

import msgspec
import nats.errors
from aiohttp import web
from prometheus_client import Counter, Histogram

from hub.agents.enrolment import Enrolment
from hub.api.errors import ApiError, from_domain, from_validation
from hub.authz import Principal, decide_access, principal_of, request_context, role_policy
from hub.commands import DomainError
from hub.control import ControlPlane, Outcome
from hub.fleet.registry import Registry
from hub.iam import Decision
from hub.signin import tokens
from hub.signin.federation import FlowStore
from hub.signin.guard import LoginGuard
from hub.signin.oidc import OidcClients
from hub.signin.sessions import Session, SessionStore
from hub.state import HubState, Resource
from hub.vault.service import VaultService
from streams.config_base import ConfigError
from streams.events import Node, Tenant, now_ms, uuid7
from streams.events_admin import AdminAction
from streams.probe import Prober

log = logging.getLogger("nexus.hub.api")

T = TypeVar("T")

REQUESTS = Counter(
    "nexus_hub_requests", "Admin API requests by route template and status", ["method", "route", "status"]
)
DECISIONS = Counter("nexus_hub_decisions", "Admin API requests by access decision", ["decision"])
LATENCY = Histogram(
    "nexus_hub_request_seconds",
    "Admin API request duration (audit record stored included)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

SESSION_COOKIE = "nexus_session"
# Readable by the console's script (not HttpOnly): it sends the value back
# as X-CSRF-Token.  The Hub checks the header against the token bound to the
# session, never against this cookie, so a cookie planted by a sibling site
# proves nothing.
CSRF_COOKIE = "nexus_csrf"
CSRF_HEADER = "X-CSRF-Token"
MAX_BODY = 4 * 1024 * 1024
_json = msgspec.json.Encoder()
_canonical = msgspec.json.Encoder(order="sorted")


class AuditSink(Protocol):
    def emit(self, event: msgspec.Struct) -> None: ...
    async def flush(self, timeout: float = 10.0) -> bool: ...  # noqa: ASYNC109


@dataclass
class Hub:
    """What the API's handlers reach: the control state, sign-in, audit."""

    control: ControlPlane
    sessions: SessionStore
    audit: AuditSink
    hmac_secret: Callable[[HubState], bytes]
    node: Node = field(default_factory=lambda: Node(kind="hub", id="hub"))
    postgres_dsn: str | None = None
    # Snapshots: the API can wait until a change reached the published
    # snapshot (None: no publisher in this process).
    wait_published: Callable[[int], Awaitable[Any]] | None = None
    secure_cookies: bool = False
    extras: dict[str, Any] = field(default_factory=dict)
    # Password sign-in throttling and lockout (None: no guard, e.g. a test
    # of something else).
    guard: LoginGuard | None = None
    # Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed.
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    # The credential vault (None: this Hub runs without one).
    vault: VaultService | None = None
    # The fleet registry (None: not running in this process); with it the
    # app also serves the things' sync endpoints (hub.fleet.sync).
    fleet: Registry | None = None
    # Admin API and SCIM tokens by their digest.
    token_index: tokens.TokenIndex = field(default_factory=tokens.TokenIndex)
    # OpenID Connect: the providers' clients, the flows in progress (None:
    # no sign-in bucket, e.g. a test of something else), the environment
    # client secrets are read from, and the Hub's public URL (redirect
    # URIs; "" = from the request's Host).
    oidc: OidcClients = field(default_factory=OidcClients)
    flows: FlowStore | None = None
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)
    public_url: str = ""
    # The provider probe (streams.probe) and the environment a provider's
    # api_key_env is read from when it is probed.
    prober: Prober | None = None
    # Agent enrolment and the agent CA (None: this Hub runs without them).
    enrolment: Enrolment | None = None
    provider_env: Mapping[str, str] = field(default_factory=dict)


HUB = web.AppKey("nexus_hub", Hub)

Handler = Callable[["Call"], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # /api/admin/virtual-keys/{id}
    handler: Handler
    # The IAM action the handler authorizes; None: a public route
    # (auth/login) or one about the caller alone (auth/me, allowed-actions).
    action: str | None
    summary: str
    body: Any = None  # request body type (msgspec) for decoding and OpenAPI
    response: Any = None  # response type for OpenAPI
    status: int = 200
    public: bool = False
    query: tuple[tuple[str, str], ...] = ()  # (name, description) of query parameters
    tag: str = ""

    @property
    def mutating(self) -> bool:
        return self.method not in ("GET", "HEAD")


def canonical_sha256(value: Any) -> str:
    """The before/after digest of an audit record."""
    if value is None:
        return ""
    return hashlib.sha256(_canonical.encode(value)).hexdigest()


class Call:
    """One admin request on its way through a handler."""

    def __init__(self, request: web.Request, route: Route, hub: Hub) -> None:
        self.request = request
        self.route = route
        self.hub = hub
        self.request_id = request.headers.get("X-Request-Id", "")[:64] or uuid7()
        self.source_ip, self.secure = request_origin(request, hub.trusted_proxies)
        self.started = time.perf_counter()
        self.state: HubState = hub.control.state
        self.principal: Principal | None = None
        self.session_token = ""
        self.session: Session | None = None
        self.api_token: Resource | None = None  # when signed in with an admin API token
        self.via_cookie = False
        self.actor_name = ""
        # What the audit record says
        self.action = route.action or ""
        self.resource = ""
        self.decision: Decision | None = None
        self.decision_label = ""  # when no IAM decision applies (public, self)
        self.deciding_note = ""  # e.g. the grant ceiling's first violation
        self.before: Any = None
        self.after: Any = None
        self.config_seq = 0
        self.command_id = ""
        self.tenant_org = ""

    # --- who, and may they -------------------------------------------------

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def context(self, extra: Mapping[str, object] | None = None) -> dict[str, object]:
        assert self.principal is not None
        ctx = request_context(
            self.principal,
            source_ip=self.source_ip,
            secure=self.secure,
            user_agent=self.request.headers.get("User-Agent", ""),
            now=self.now(),
        )
        if extra:
            ctx.update(extra)
        return ctx

    def allowed(self, resource: str, extra: Mapping[str, object] | None = None, *, action: str = "") -> bool:
        """A question without consequence (filtering a list)."""
        assert self.principal is not None
        return decide_access(self.principal, action or self.action, resource, self.context(extra)).allowed

    def authorize(
        self, resource: str, extra: Mapping[str, object] | None = None, *, action: str = "", org: str = ""
    ) -> Decision:
        """Evaluate the route's action on ``resource``; raise 403 when denied.
        The decision goes in the audit record either way."""
        assert self.principal is not None, "authorize needs an authenticated caller"
        act = action or self.action
        self.action = act
        self.resource = resource
        self.tenant_org = org or self.tenant_org
        decision = decide_access(self.principal, act, resource, self.context(extra))
        self.decision = decision
        if not decision.allowed:
            why = "an explicit deny" if decision.outcome == "explicit_deny" else "no policy allows it"
            raise ApiError("access_denied", f"{act} on {resource} is not allowed ({why})")
        return decision

    def self_service(self, label: str = "self") -> None:
        """A route about the caller alone (no IAM question to ask)."""
        self.decision_label = label

    # --- the request ---------------------------------------------------------

    async def body(self, typ: type[T], *, prefix: str = "") -> T:
        raw = await self.raw_body()
        try:
            return msgspec.json.decode(raw, type=typ)
        except msgspec.ValidationError as exc:
            raise from_validation(exc, prefix) from None
        except msgspec.DecodeError as exc:
            raise ApiError("invalid_json", f"the body is not valid JSON: {exc}") from None

    async def raw_body(self) -> bytes:
        ctype = self.request.headers.get("Content-Type", "application/json").split(";")[0].strip().lower()
        if ctype not in ("application/json", "application/merge-patch+json", "application/yaml", "text/yaml"):
            raise ApiError("unsupported_media_type", f"send application/json, not {ctype}")
        if self.request.content_length is not None and self.request.content_length > MAX_BODY:
            raise ApiError("payload_too_large", f"the body is over {MAX_BODY} bytes")
        data = await self.request.content.read(MAX_BODY + 1)
        if len(data) > MAX_BODY:
            raise ApiError("payload_too_large", f"the body is over {MAX_BODY} bytes")
        return data

    def query(self, name: str, default: str = "") -> str:
        return self.request.query.get(name, default)

    def if_match(self) -> int | None:
        value = self.request.headers.get("If-Match", "").strip()
        if not value or value == "*":
            return None
        value = value.removeprefix("W/").strip('"')
        try:
            return int(value)
        except ValueError:
            raise ApiError(
                "invalid_field", "If-Match: give the version (ETag) you read", field="If-Match"
            ) from None

    def envelope(self, *, expected_version: int | None = None) -> dict[str, Any]:
        """The envelope of the command this request becomes."""
        assert self.principal is not None
        self.command_id = self.request.headers.get("Idempotency-Key", "")[:128] or uuid7()
        return {
            "id": self.command_id,
            "actor": self.principal.nrn,
            "request_id": self.request_id,
            "at_ms": now_ms(),
            "expected_version": expected_version,
        }

    async def execute(self, cmd: Any) -> Outcome:
        try:
            out = await self.hub.control.execute(cmd)
        except DomainError as exc:
            raise from_domain(exc) from None
        self.config_seq = out.seq
        self.state = out.state
        return out


Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def _trusted(ip: str, proxies: Networks) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in net for net in proxies)


def request_origin(request: web.Request, proxies: Networks) -> tuple[str, bool]:
    """The caller's IP and whether it reached us over TLS.  A peer that is a
    configured trusted proxy speaks for the caller: the address is the last
    X-Forwarded-For entry that is not itself a trusted proxy, and TLS is its
    X-Forwarded-Proto.  Anyone else's headers are ignored (they would let a
    caller pick the address its throttling and IAM conditions see)."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    ip = str(peer[0]) if isinstance(peer, tuple) and peer else ""
    secure = request.secure
    if proxies and ip and _trusted(ip, proxies):
        hops = [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")]
        for hop in reversed([h for h in hops if h]):
            if not _trusted(hop, proxies):
                # garbage in the header: keep the proxy's own address
                with contextlib.suppress(ValueError):
                    ip = str(ipaddress.ip_address(hop))
                break
        proto = request.headers.get("X-Forwarded-Proto", "").split(",")[-1].strip().lower()
        secure = secure or proto == "https"
    return ip, secure


def json_response(value: Any, *, status: int = 200, etag: int | None = None) -> web.Response:
    resp = web.Response(body=_json.encode(value), status=status, content_type="application/json")
    if etag is not None:
        resp.headers["ETag"] = f'"{etag}"'
    resp.headers["Cache-Control"] = "no-store"
    return resp


def error_response(err: ApiError, request_id: str) -> web.Response:
    resp = web.Response(
        body=_json.encode(err.body(request_id)), status=err.status, content_type="application/json"
    )
    resp.headers["Cache-Control"] = "no-store"
    if err.code == "unauthenticated":
        resp.headers["WWW-Authenticate"] = 'Bearer realm="nexus-hub"'
    if err.retry_after_s is not None:
        resp.headers["Retry-After"] = str(err.retry_after_s)
    return resp


async def _caller(call: Call) -> None:
    request = call.request
    token = ""
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        token = value.strip()
    elif SESSION_COOKIE in request.cookies:
        token = request.cookies[SESSION_COOKIE]
        call.via_cookie = True
    if not token:
        return
    if not call.via_cookie and tokens.well_formed(token):
        _token_caller(call, token)
        return
    session = await call.hub.sessions.get(token)
    if session is None:
        return
    user = call.state.get("user", session.user_id)
    if user is None or user.spec.disabled:
        # Deprovisioned (or deleted): refused by every replica as soon as
        # it folded the change in, whatever the session store still holds.
        return
    principal = principal_of(call.state, session.user_id)
    if principal is None:
        return
    call.principal = principal
    call.session_token = token
    call.session = session
    call.actor_name = principal.email


def _token_caller(call: Call, token: str) -> None:
    """An admin API token: its user's rights (as they are now), narrowed
    to the token's policy if it names one.  A SCIM token is not an admin
    credential (it is only good on /scim/v2)."""
    if tokens.kind_of(token) != "admin":
        return
    try:
        secret = call.hub.hmac_secret(call.state)
    except ConfigError:
        return
    res = call.hub.token_index.lookup(call.state, secret, token)
    if res is None or not tokens.usable(res, now_ms()) or res.spec.kind != "admin":
        return
    user = call.state.get("user", res.spec.user)
    if user is None or user.spec.disabled:
        return  # deprovisioned: its tokens die with it
    principal = principal_of(call.state, user.id)
    if principal is None:
        return
    if res.spec.policy:
        narrowed = role_policy(call.state, res.spec.policy, res.spec.policy_org)
        # A policy deleted since: the token keeps no rights at all.
        principal = replace(principal, boundary=(narrowed,) if narrowed is not None else ())
    call.principal = principal
    call.api_token = res
    call.actor_name = principal.email


def _csrf_ok(call: Call) -> bool:
    sent = call.request.headers.get(CSRF_HEADER, "")
    expected = call.session.csrf if call.session is not None else ""
    return bool(sent and expected) and hmac.compare_digest(sent.encode(), expected.encode())


def endpoint(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        hub = request.app[HUB]
        call = Call(request, route, hub)
        resp: web.StreamResponse
        try:
            if not route.public:
                await _caller(call)
                if call.principal is None:
                    call.decision_label = "unauthenticated"
                    raise ApiError("unauthenticated", "sign in first: POST /api/admin/auth/login")
                if call.via_cookie and route.mutating and not _csrf_ok(call):
                    # SameSite=Lax keeps the cookie off most cross-site
                    # writes; the token bound to the session (which another
                    # site cannot read) covers the rest.  Bearer calls carry
                    # their credential explicitly and need none.
                    raise ApiError(
                        "csrf_required",
                        f"a change made with the session cookie needs the {CSRF_HEADER} header "
                        "(the csrf_token the sign-in answered)",
                    )
            resp = await route.handler(call)
        except ApiError as err:
            resp = error_response(err, call.request_id)
        except DomainError as exc:
            resp = error_response(from_domain(exc), call.request_id)
        except (nats.errors.Error, TimeoutError, ConnectionError) as exc:
            # NATS (the CONFIG stream, the session store) is away: the caller
            # may retry.  A change is one event, stored or not (an ack lost
            # on the way is the one ambiguous case: a retry with the same
            # Idempotency-Key is applied at most once).
            log.warning("hub api: %s %s: NATS unavailable (%s)", route.method, route.path, type(exc).__name__)
            resp = error_response(
                ApiError("unavailable", "the configuration store is not reachable; retry"), call.request_id
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("hub api: %s %s failed (request %s)", route.method, route.path, call.request_id)
            resp = error_response(ApiError("internal", "the Hub failed; see its log"), call.request_id)
        resp.headers["X-Request-Id"] = call.request_id
        await _audit(call, resp)
        return resp

    return handle


def _outcome(resp: web.StreamResponse) -> str:
    if resp.status < 400:
        return "ok"
    body = getattr(resp, "body", None)
    if isinstance(body, bytes | bytearray):
        try:
            doc = msgspec.json.decode(body, type=ErrorShape)
            return doc.error.code
        except (msgspec.ValidationError, msgspec.DecodeError):
            pass
    return f"http_{resp.status}"


class _ErrorCode(msgspec.Struct):
    code: str = ""


class ErrorShape(msgspec.Struct):
    error: _ErrorCode


async def _audit(call: Call, resp: web.StreamResponse) -> None:
    d = call.decision
    decision = call.decision_label
    deciding_policy = deciding_statement = ""
    missing: list[str] = []
    if d is not None:
        decision = d.outcome
        if d.deciding is not None:
            deciding_policy = d.deciding.policy_id
            deciding_statement = d.deciding.sid or f"#{d.deciding.index}"
        missing = list(d.missing_context_keys)
    elif call.deciding_note:
        deciding_statement = call.deciding_note
    elif not decision:
        decision = "not_evaluated"  # refused before a question could be asked (a bad body, a missing item)
    event = AdminAction(
        request_id=call.request_id,
        node=call.hub.node,
        tenant=Tenant(org_id=call.tenant_org, user_id=call.principal.user_id if call.principal else ""),
        actor=call.principal.nrn if call.principal else "",
        actor_name=call.actor_name,
        action=call.action,
        resource=call.resource,
        decision=decision,
        deciding_policy=deciding_policy,
        deciding_statement=deciding_statement,
        missing_context_keys=missing,
        source_ip=call.source_ip,
        user_agent=call.request.headers.get("User-Agent", "")[:256],
        method=call.route.method,
        route=call.route.path,
        status=resp.status,
        outcome=_outcome(resp),
        command_id=call.command_id if call.config_seq else "",
        config_seq=call.config_seq,
        before_sha256=canonical_sha256(call.before),
        after_sha256=canonical_sha256(call.after),
    )
    call.hub.audit.emit(event)
    REQUESTS.labels(call.route.method, call.route.path, str(resp.status)).inc()
    DECISIONS.labels(decision).inc()
    # The record is stored before the answer leaves; if NATS is away it
    # waits in the publisher's outbox and is stored when it returns.
    if not await call.hub.audit.flush(5.0):
        log.warning(
            "hub api: audit record of request %s is in the outbox (NATS slow or away)", call.request_id
        )
    LATENCY.observe(time.perf_counter() - call.started)
