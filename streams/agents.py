"""Enrolled agents: the record the Hub keeps per device in the agents
bucket (``Topology.agents_bucket``), and the directory proxies read it
through to check an agent's attestation header.

The Hub writes a record when a device enrols (its Ed25519 attestation key,
the serials and expiry of the certificates its agent CA signed) and when
it is revoked; nothing else writes it.  A proxy asks ``AgentDirectory``
for an agent's record on each check; answers are cached for at most
``cache_s`` (1 s), so a revocation is seen by every proxy within that and
one KV read (well inside the 2 s the issue allows).
"""

from __future__ import annotations

import base64
import contextlib
import re
import time
from collections.abc import Callable

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from streams.topology import Topology

AGENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class AgentRecord(msgspec.Struct, kw_only=True):
    id: str
    org: str = ""
    name: str = ""
    physical_id: str = ""  # the device's hardware fingerprint, as it reported it
    status: str = "enrolled"  # enrolled | revoked
    attestation_key: str = ""  # base64 of the raw 32-byte Ed25519 public key ("": none)
    mtls_serial: str = ""  # hex
    attestation_serial: str = ""  # hex
    not_after_ms: int = 0  # the certificates' end
    enrolled_at_ms: int = 0
    enrolled_with: str = ""  # the enrolment token's id
    revoked_at_ms: int = 0
    revoked_by: str = ""
    revoke_reason: str = ""

    @property
    def revoked(self) -> bool:
        return self.status == "revoked"

    def public_key(self) -> bytes:
        return base64.b64decode(self.attestation_key) if self.attestation_key else b""


def encode_record(record: AgentRecord) -> bytes:
    return msgspec.json.encode(record)


def decode_record(data: bytes) -> AgentRecord:
    return msgspec.json.decode(data, type=AgentRecord)


class AgentDirectory:
    """Read-only access to the agents bucket, with a short cache."""

    def __init__(
        self,
        js: JetStreamContext,
        topology: Topology,
        *,
        cache_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._js = js
        self._bucket = topology.agents_bucket
        self._cache_s = cache_s
        self._clock = clock
        self._kv: KeyValue | None = None
        self._cache: dict[str, tuple[float, AgentRecord | None]] = {}

    async def _open(self) -> KeyValue | None:
        if self._kv is None:
            with contextlib.suppress(BucketNotFoundError, NotFoundError):
                self._kv = await self._js.key_value(self._bucket)
        return self._kv

    async def get(self, agent_id: str) -> AgentRecord | None:
        """The agent's record (None: unknown); at most ``cache_s`` old."""
        if not AGENT_ID.match(agent_id):
            return None  # not an id the Hub gives (and not a valid KV key)
        now = self._clock()
        hit = self._cache.get(agent_id)
        if hit is not None and now - hit[0] < self._cache_s:
            return hit[1]
        kv = await self._open()
        record: AgentRecord | None = None
        if kv is not None:
            try:
                entry = await kv.get(agent_id)
                if entry.value:
                    record = decode_record(entry.value)
            except KeyNotFoundError:
                record = None
            except (msgspec.ValidationError, msgspec.DecodeError):
                record = None  # unreadable: trusted as nothing
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[agent_id] = (now, record)
        return record
