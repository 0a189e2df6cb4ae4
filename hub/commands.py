"""Commands: what an admin (or an import, or the Hub's own bootstrap) asks
the control state to do.  ``hub.decide`` turns one into at most one event.

Everything a command needs that is not a pure function of the state (a new
key's hash, a password's scrypt hash, the clock) is computed at the edge and
carried in the command, so deciding stays pure and replayable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class Command:
    id: str  # the command id: Nats-Msg-Id of the event it produces
    actor: str  # principal NRN, or system:<what>
    at_ms: int
    request_id: str = ""
    # If-Match: the version the caller saw; None = the one the Hub holds.
    expected_version: int | None = None


@dataclass(frozen=True, kw_only=True)
class Create(Command):
    aggregate: str
    spec: Any


@dataclass(frozen=True, kw_only=True)
class Replace(Command):
    """The whole new spec of an existing item (PUT; PATCH is merged into a
    whole spec at the edge)."""

    aggregate: str
    rid: str
    spec: Any


@dataclass(frozen=True, kw_only=True)
class Upsert(Command):
    """Create or replace (imports and settings sections)."""

    aggregate: str
    rid: str
    spec: Any


@dataclass(frozen=True, kw_only=True)
class Delete(Command):
    aggregate: str
    rid: str


@dataclass(frozen=True, kw_only=True)
class IssueKey(Command):
    spec: Any  # KeySpec with its id assigned
    hash: str
    prefix: str
    status: str = "active"  # or pending (awaiting approval); imports may carry any


@dataclass(frozen=True, kw_only=True)
class RotateKey(Command):
    rid: str
    hash: str
    prefix: str
    grace_until_ms: int  # the old key works until then (<= at_ms: not at all)


@dataclass(frozen=True, kw_only=True)
class ChangeKeyStatus(Command):
    rid: str
    status: str  # approved | rejected | revoked
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class SetPassword(Command):
    rid: str
    password_hash: str


class DomainError(Exception):
    """A command the state refuses, with what the API answers."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        current_version: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.current_version = current_version


def not_found(aggregate: str, rid: str) -> DomainError:
    return DomainError(404, "not_found", f"{aggregate} {rid!r} does not exist")


def conflict(aggregate: str, rid: str, version: int) -> DomainError:
    return DomainError(
        409,
        "version_conflict",
        f"{aggregate} {rid!r} was changed by someone else (now at version {version}); "
        "fetch it again and re-apply your change",
        current_version=version,
    )


def invalid(field: str, message: str) -> DomainError:
    return DomainError(422, "invalid_field", f"{field}: {message}" if field else message, field=field)
