"""The thing sync protocol: what the Hub and a thing say to each other.

1. The thing opens ``GET /api/things/v1/ws`` (a WebSocket; bearer: its
   thing token).  The Hub sends ``Signal(kind="hello")`` at once and a
   ``Signal(kind="changed")`` whenever the thing's desired state moves or
   the Hub re-pushes it.  A signal carries no config: the version only.
   Where WebSockets do not pass (a proxy refusing the upgrade), the thing
   long-polls ``GET /api/things/v1/signal?version=V&push=P&wait=S``, which
   answers as soon as the Hub's signal differs from (V, P), else after S s.
2. The thing pulls ``GET /api/things/v1/desired`` (``Desired``).
3. It applies what it can and reports ``Report`` (on the WebSocket as a
   text frame, or ``POST /api/things/v1/report``): the version it acted on,
   one ``KeyOutcome`` per key (the digest of the value it now runs), and its
   posture.  A report, a WebSocket frame or a long poll is also its
   heartbeat (``Report(kind="heartbeat")`` when nothing else is due).

A key converges when its outcome is ``applied`` with the digest of the
desired value; the key ``config`` (the snapshot a node runs) converges when
the config digest the node says it serves is the desired one.

Nodes inside the NATS trust boundary (gateways, processors) need none of
the HTTP side: they watch their ``Pushed`` desired state in the sync
bucket and write their report to the node report bucket themselves
(``streams.snapshots.SnapshotFollower``).
"""

from __future__ import annotations

import hashlib
from typing import Any, Final, Literal

import msgspec

WS_PATH: Final = "/api/things/v1/ws"
SIGNAL_PATH: Final = "/api/things/v1/signal"
DESIRED_PATH: Final = "/api/things/v1/desired"
REPORT_PATH: Final = "/api/things/v1/report"
MAX_WAIT_S: Final = 30.0  # the longest a long poll is held

_canonical = msgspec.json.Encoder(order="deterministic")


def value_digest(value: Any) -> str:
    """sha256 of a config value's canonical JSON: what a thing reports it
    applied, compared with what the Hub wants."""
    return hashlib.sha256(_canonical.encode(value)).hexdigest()


class KeyOutcome(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    status: Literal["applied", "failed", "unsupported"]
    digest: str = ""  # value_digest of the value applied (applied only)
    error: str = ""  # why not (our words, never a secret)
    at_ms: int = 0


class Signal(msgspec.Struct, kw_only=True, frozen=True):
    kind: Literal["hello", "changed", "revoked"]
    thing: str
    version: int  # the desired version now
    push: int = 0  # re-pushes of this version so far (0: the change itself)


class Desired(msgspec.Struct, kw_only=True, frozen=True):
    thing: str
    type: str
    version: int
    digest: str  # value_digest(keys)
    keys: dict[str, Any]


class Pushed(msgspec.Struct, kw_only=True, frozen=True):
    """The desired state of a node inside the NATS trust boundary (a
    gateway, a processor), as the Hub keeps it for it in the sync bucket
    under ``desired_key(kind, node id)``: the node watches that key instead
    of holding a WebSocket; a re-push rewrites it with the next ``push``."""

    desired: Desired
    push: int = 0


def desired_key(report_key: str) -> str:
    """The sync bucket's key of a NATS node's desired state
    (``report_key``: ``streams.snapshots.report_key(kind, node id)``)."""
    return f"d.{report_key}"


Posture = dict[str, str | int | float | bool]


class Report(msgspec.Struct, kw_only=True, frozen=True):
    kind: Literal["report", "heartbeat"] = "report"
    version: int = 0  # the desired version acted on
    outcomes: dict[str, KeyOutcome] = {}
    # The snapshot the thing serves (things that run snapshots).
    revision: int = 0
    digest: str = ""
    posture: Posture = {}
    heartbeat_s: float = 15.0


signal_decoder = msgspec.json.Decoder(Signal)
desired_decoder = msgspec.json.Decoder(Desired)
pushed_decoder = msgspec.json.Decoder(Pushed)
report_decoder = msgspec.json.Decoder(Report)
encode = msgspec.json.Encoder().encode


def software_version() -> str:
    """This installation's version (what a thing's posture says it runs)."""
    from importlib import metadata

    try:
        return metadata.version("nexus-gateway")
    except metadata.PackageNotFoundError:
        return "0"
