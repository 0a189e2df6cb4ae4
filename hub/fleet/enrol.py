"""Enrolling a thing: the one way into the fleet.

    enrolled = await enrol_thing(control.execute, ThingSpec(id="laptop-42", type="agent", org="acme"),
                                 actor="system:enrolment", how="token")
    enrolled.token   # give it to the thing, once: only its sha256 is kept

The admin API (``POST /api/admin/things``) and agent enrolment (a one-time
enrolment token exchanged for a thing) both come here; nodes inside the
NATS trust boundary are enrolled by their first report (hub.fleet.registry).
The token is what the thing speaks the sync protocol with (bearer); it is
never stored, logged or put in an event, only its hash.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from hub.commands import Command, DomainError
from hub.control import Outcome
from hub.fleet.commands import EnrolThing
from hub.fleet.registry import token_hash
from hub.state import THING, Resource
from streams.config_fleet import ThingSpec
from streams.events import now_ms, uuid7

TOKEN_PREFIX = "nxt_"  # noqa: S105 - the prefix of generated tokens, not a secret

Execute = Callable[[Command], Awaitable[Outcome]]


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Enrolled:
    thing: Resource
    token: str  # shown once
    outcome: Outcome


def enrol_command(
    spec: ThingSpec,
    *,
    actor: str,
    how: str = "token",
    command_id: str = "",
    request_id: str = "",
    at_ms: int | None = None,
) -> tuple[EnrolThing, str]:
    """The command that enrols ``spec``, and the token it enrols it with."""
    token = new_token()
    cmd = EnrolThing(
        id=command_id or uuid7(),
        actor=actor,
        at_ms=now_ms() if at_ms is None else at_ms,
        request_id=request_id,
        spec=spec,
        token_hash=token_hash(token),
        how=how,
    )
    return cmd, token


async def enrol_thing(
    execute: Execute, spec: ThingSpec, *, actor: str, how: str = "token", request_id: str = ""
) -> Enrolled:
    """Enrol ``spec`` (raises DomainError when refused: a bad id or type, an
    unknown org, an id already used)."""
    cmd, token = enrol_command(spec, actor=actor, how=how, request_id=request_id)
    outcome = await execute(cmd)
    thing = outcome.state.get(THING, spec.id)
    if thing is None or outcome.replayed:
        raise DomainError(409, "already_exists", f"thing {spec.id!r} is enrolled already")
    return Enrolled(thing, token, outcome)
