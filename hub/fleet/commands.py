"""The fleet's commands.  As every command, each carries what is not a pure
function of the state: an enrolled thing's token arrives hashed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hub.commands import Command


@dataclass(frozen=True, kw_only=True)
class EnrolThing(Command):
    spec: Any  # ThingSpec
    token_hash: str = ""  # sha256 hex of its sync token ("" : none, e.g. a NATS node)
    how: str = "admin"  # admin | token | report


@dataclass(frozen=True, kw_only=True)
class RevokeThing(Command):
    rid: str
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class SetOverride(Command):
    rid: str
    key: str
    value: Any
    reason: str
    expires_at_ms: int = 0


@dataclass(frozen=True, kw_only=True)
class ClearOverride(Command):
    rid: str
    key: str
    reason: str = ""


FLEET_COMMANDS = (EnrolThing, RevokeThing, SetOverride, ClearOverride)
