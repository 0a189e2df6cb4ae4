"""The fleet in the CONFIG stream: things (every node the Hub knows: a
gateway, a proxy, an agent, a processor, the Hub itself) and the config
template of each thing type.

A thing's config is the template of its type with the thing's own
overrides on top (each override with a reason and an optional expiry);
``hub.fleet.desired`` computes it.  Values are free JSON (what a key means
is the business of the node that applies it).  These are the specs the
admin API takes and the CONFIG events carry: strict, like every inbound
payload.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import msgspec

from streams.config_base import Strict

# The kinds of thing the fleet knows; agents and proxies enrol, the others
# register themselves through the reports they already write.
THING_TYPES: Final = ("gateway", "proxy", "agent", "processor", "hub")
# Types that run the config snapshots the Hub publishes: their desired state
# holds the key ``config`` (the snapshot's revision and digest).
SNAPSHOT_TYPES: Final = frozenset({"gateway", "proxy", "agent", "processor"})
CONFIG_KEY: Final = "config"


class ThingSpec(Strict, kw_only=True, frozen=True):
    """A thing as admins describe it (the ``thing`` aggregate)."""

    id: str
    type: str
    # The id the node reports under (its ``--node-id``); defaults to ``id``.
    node_id: str = ""
    name: str = ""
    # The org the thing belongs to ("" = the installation's): an agent is
    # administered by its org's admins.
    org: str = ""
    labels: Mapping[str, str] = {}

    @property
    def reports_as(self) -> str:
        return self.node_id or self.id


class ThingTemplate(Strict, kw_only=True, frozen=True):
    """The config every thing of one type starts from (``thing-template``
    aggregate, id = the type)."""

    type: str
    keys: Mapping[str, Any] = {}
    description: str = ""


class Override(msgspec.Struct, kw_only=True, frozen=True):
    """One thing's own value for a key, with why and until when."""

    value: Any
    reason: str
    set_by: str = ""
    set_at_ms: int = 0
    expires_at_ms: int = 0  # 0: does not expire


# Config keys: what nodes see in their desired state and report outcomes for.
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.-")


def key_problem(key: str) -> str:
    """Why ``key`` is not a config key ("" when it is one)."""
    if not key or len(key) > 64 or not set(key) <= _KEY_CHARS or key[0] in ".-":
        return "a config key is 1-64 lower-case letters, digits, '_', '.' or '-'"
    if key == CONFIG_KEY:
        return f"{CONFIG_KEY!r} is the snapshot the Hub publishes; it is not set per thing"
    return ""
