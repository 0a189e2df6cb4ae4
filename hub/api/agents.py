"""Agents over the admin API: enrolment tokens (issued, listed, revoked),
enrolment (public: the token is the credential), the enrolled agents and
their revocation (``hub.agents``)."""

from __future__ import annotations

import datetime as dt

import msgspec
from aiohttp import web

from hub.agents.enrolment import DEFAULT_TTL_S, MAX_TTL_S, Enrolment, EnrolmentError, TokenRecord
from hub.api.errors import ApiError
from hub.api.http import Call, json_response
from hub.authz import org_path
from hub.commands import DomainError
from hub.fleet.commands import RevokeThing
from hub.fleet.enrol import enrol_command
from hub.iam import resource_nrn
from hub.state import THING
from streams.agents import AgentRecord
from streams.config_fleet import ThingSpec

_MAX_TEXT = 200


class NewToken(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    org: str = ""  # the org the agents it enrols belong to
    description: str = ""
    ttl_s: int = DEFAULT_TTL_S


class TokenView(msgspec.Struct, kw_only=True):
    id: str
    org: str
    description: str
    status: str  # active, used, expired, revoked
    created_by: str
    created_at: dt.datetime
    expires_at: dt.datetime
    used_by: str = ""


class IssuedToken(msgspec.Struct, kw_only=True):
    """The token is in this answer only; the Hub keeps its SHA-256."""

    token: str
    item: TokenView


class TokenList(msgspec.Struct, kw_only=True):
    items: list[TokenView]


class Enrol(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    token: str
    name: str = ""  # the device's name, for people
    physical_id: str = ""  # its hardware fingerprint
    csr: str  # PEM: the mTLS client key's signing request
    attestation_csr: str = ""  # PEM: the Ed25519 attestation key's

    def __repr__(self) -> str:
        return f"Enrol(name={self.name!r})"


class EnrolResult(msgspec.Struct, kw_only=True):
    agent_id: str  # also its thing id in the fleet registry
    # The token the agent speaks the fleet's sync protocol with (bearer):
    # in this answer only, the Hub keeps its SHA-256.
    sync_token: str
    certificate: str
    attestation_certificate: str
    ca_certificate: str
    not_after: dt.datetime


class AgentView(msgspec.Struct, kw_only=True):
    id: str
    org: str
    name: str
    physical_id: str
    status: str
    has_attestation_key: bool
    mtls_serial: str
    attestation_serial: str
    not_after: dt.datetime
    enrolled_at: dt.datetime
    enrolled_with: str
    revoked_at: dt.datetime | None = None
    revoked_by: str = ""
    revoke_reason: str = ""


class AgentList(msgspec.Struct, kw_only=True):
    items: list[AgentView]


class Revocation(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    reason: str = ""


def _t(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def _enrolment(call: Call) -> Enrolment:
    e = call.hub.enrolment
    if e is None:
        raise ApiError("unavailable", "this Hub runs without the agent CA")
    return e


def token_view(r: TokenRecord, now: int) -> TokenView:
    return TokenView(
        id=r.id,
        org=r.org,
        description=r.description,
        status=r.status(now),
        created_by=r.created_by,
        created_at=_t(r.created_at_ms),
        expires_at=_t(r.expires_at_ms),
        used_by=r.used_by,
    )


def agent_view(a: AgentRecord) -> AgentView:
    return AgentView(
        id=a.id,
        org=a.org,
        name=a.name,
        physical_id=a.physical_id,
        status=a.status,
        has_attestation_key=bool(a.attestation_key),
        mtls_serial=a.mtls_serial,
        attestation_serial=a.attestation_serial,
        not_after=_t(a.not_after_ms),
        enrolled_at=_t(a.enrolled_at_ms),
        enrolled_with=a.enrolled_with,
        revoked_at=_t(a.revoked_at_ms) if a.revoked_at_ms else None,
        revoked_by=a.revoked_by,
        revoke_reason=a.revoke_reason,
    )


def _nrn(call: Call, rtype: str, org: str, rid: str) -> str:
    return resource_nrn(rtype, org_path(call.state, org), rid)


def _now(call: Call) -> int:
    return int(call.now().timestamp() * 1000)


# --- tokens --------------------------------------------------------------------------


async def issue_token(call: Call) -> web.Response:
    body = await call.body(NewToken)
    if body.org and call.state.get("org", body.org) is None:
        raise ApiError("invalid_field", f"org: unknown org {body.org!r}", field="org")
    if not 1 <= body.ttl_s <= MAX_TTL_S:
        raise ApiError("invalid_field", f"ttl_s: from 1 to {MAX_TTL_S}", field="ttl_s")
    if len(body.description) > _MAX_TEXT:
        raise ApiError("invalid_field", f"description: at most {_MAX_TEXT} characters", field="description")
    token, token_id = Enrolment.new_token()
    call.authorize(_nrn(call, "enrolment-token", body.org, token_id), org=body.org)
    assert call.principal is not None
    record = await _enrolment(call).issue(
        token, org=body.org, description=body.description, ttl_s=body.ttl_s, actor=call.principal.nrn
    )
    view = token_view(record, _now(call))
    call.after = view
    return json_response(IssuedToken(token=token, item=view), status=201)


async def list_tokens(call: Call) -> web.Response:
    call.self_service("filtered")
    now = _now(call)
    items = [
        token_view(r, now)
        for r in await _enrolment(call).list_tokens()
        if call.allowed(_nrn(call, "enrolment-token", r.org, r.id), action="admin:enrolment-token.read")
    ]
    return json_response(TokenList(items=items))


async def revoke_token(call: Call) -> web.Response:
    enrolment = _enrolment(call)
    found = await enrolment.get_token(call.request.match_info["id"])
    if found is None:
        raise ApiError("not_found", f"enrolment token {call.request.match_info['id']!r} does not exist")
    key, record = found
    call.authorize(_nrn(call, "enrolment-token", record.org, record.id), org=record.org)
    now = _now(call)
    if record.status(now) in ("used", "revoked"):
        raise ApiError("invalid_transition", f"the token is {record.status(now)} already")
    call.before = token_view(record, now)
    assert call.principal is not None
    revoked = await enrolment.revoke_token(key, call.principal.nrn)
    assert revoked is not None
    call.after = token_view(revoked, now)
    return json_response(call.after)


# --- enrolment (public: the token is the credential) -----------------------------------


async def enrol_agent(call: Call) -> web.Response:
    body = await call.body(Enrol)
    call.action = "agent:enrol"
    call.decision_label = "enrolment_token"
    for field, value in (("name", body.name), ("physical_id", body.physical_id)):
        if len(value) > _MAX_TEXT:
            raise ApiError("invalid_field", f"{field}: at most {_MAX_TEXT} characters", field=field)
    try:
        done = await _enrolment(call).enrol(
            body.token,
            name=body.name,
            physical_id=body.physical_id,
            csr=body.csr,
            attestation_csr=body.attestation_csr,
        )
    except EnrolmentError as exc:
        call.decision_label = "refused"
        raise ApiError(exc.code, exc.message, field=exc.field) from None
    agent = done.agent
    call.resource = _nrn(call, "agent", agent.org, agent.id)
    call.tenant_org = agent.org
    call.actor_name = f"enrolment token {agent.enrolled_with}"
    # The agent joins the fleet as a thing (its status, shadow, config sync).
    spec = ThingSpec(id=agent.id, type="agent", name=agent.name[:100], org=agent.org)
    cmd, sync_token = enrol_command(
        spec, actor=f"system:enrolment/{agent.enrolled_with}", how="token", request_id=call.request_id
    )
    call.command_id = cmd.id  # the audit record names the command it became
    try:
        await call.execute(cmd)
    except (DomainError, ApiError):
        # The org went away since the token was issued: undo the agent.
        await _enrolment(call).revoke_agent(agent.id, actor="system:enrolment", reason="thing refused")
        raise
    call.after = agent_view(agent)
    return json_response(
        EnrolResult(
            agent_id=agent.id,
            sync_token=sync_token,
            certificate=done.certificate,
            attestation_certificate=done.attestation_certificate,
            ca_certificate=done.ca_certificate,
            not_after=_t(agent.not_after_ms),
        ),
        status=201,
    )


# --- agents ------------------------------------------------------------------------------


async def list_agents(call: Call) -> web.Response:
    call.self_service("filtered")
    items = [
        agent_view(a)
        for a in await _enrolment(call).list_agents()
        if call.allowed(_nrn(call, "agent", a.org, a.id), action="admin:agent.read")
    ]
    return json_response(AgentList(items=items))


async def _agent(call: Call) -> AgentRecord:
    rid = call.request.match_info["id"]
    agent = await _enrolment(call).get_agent(rid)
    if agent is None:
        raise ApiError("not_found", f"agent {rid!r} does not exist")
    return agent


async def get_agent(call: Call) -> web.Response:
    agent = await _agent(call)
    call.authorize(_nrn(call, "agent", agent.org, agent.id), org=agent.org)
    return json_response(agent_view(agent))


async def revoke_agent(call: Call) -> web.Response:
    body = await call.body(Revocation)
    agent = await _agent(call)
    call.authorize(_nrn(call, "agent", agent.org, agent.id), org=agent.org)
    if agent.revoked:
        raise ApiError("invalid_transition", f"agent {agent.id} is revoked already")
    call.before = agent_view(agent)
    assert call.principal is not None
    revoked = await _enrolment(call).revoke_agent(
        agent.id, actor=call.principal.nrn, reason=body.reason[:500]
    )
    assert revoked is not None
    thing = call.state.get(THING, agent.id)
    if thing is not None and thing.thing is not None and thing.thing.status != "revoked":
        # Its thing too: its sync token stops working, its connections close.
        await call.execute(RevokeThing(**call.envelope(), rid=agent.id, reason=body.reason[:500]))
    call.after = agent_view(revoked)
    return json_response(call.after)
