"""One-time enrolment tokens and enrolment itself.

- A token (``enroll-<64 hex>``) is shown once, when an admin issues it; the
  enrolment bucket keeps its SHA-256 only (the key of its record), with its
  org, who issued it, and when it expires (at most 7 days; 24 h by
  default).  Revoked, used or expired, it enrols nothing.
- Enrolling spends the token by compare-and-set on the record's revision,
  so of two devices presenting it at once (on two Hub replicas) exactly
  one wins.  The device's signing requests are checked before the token is
  spent (a malformed request does not burn it).  Then the agent CA signs
  the device's mTLS key and its Ed25519 attestation key, and the agent's
  record goes into the agents bucket (``streams.agents``), where proxies
  find its attestation key.
- Revoking an agent marks its record revoked (compare-and-set); proxies
  see it within their directory's cache time (1 s).

Every step is an admin API request, audited with its outcome (the
enrolment request, which is public, under the token's id and the agent's
NRN).  Records expire from the enrolment bucket 8 days after their last
write (tokens last at most 7).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from hub.agents.ca import AgentCA, CsrError, parse_csr
from hub.signin.kv import Bucket
from streams.agents import AgentRecord, decode_record, encode_record
from streams.events import now_ms
from streams.topology import Topology

TOKEN_PREFIX = "enroll-"  # noqa: S105 - the token format, not a token
DEFAULT_TTL_S = 24 * 3600
MAX_TTL_S = 7 * 24 * 3600
_TOKEN = re.compile(r"^enroll-[0-9a-f]{64}$")
_CAS_ATTEMPTS = 10


class EnrolmentError(Exception):
    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


class TokenRecord(msgspec.Struct, kw_only=True):
    id: str
    org: str = ""
    description: str = ""
    created_by: str = ""
    created_at_ms: int = 0
    expires_at_ms: int = 0
    used_at_ms: int = 0
    used_by: str = ""  # the agent id it enrolled
    revoked_at_ms: int = 0
    revoked_by: str = ""

    def status(self, now: int) -> str:
        if self.revoked_at_ms:
            return "revoked"
        if self.used_at_ms:
            return "used"
        if now >= self.expires_at_ms:
            return "expired"
        return "active"


@dataclass(frozen=True)
class Enrolled:
    agent: AgentRecord
    certificate: str  # PEM, the mTLS client certificate
    attestation_certificate: str  # PEM ("" without an attestation request)
    ca_certificate: str


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _token_key(digest: str) -> str:
    return f"t.{digest}"


class Enrolment:
    def __init__(
        self, js: JetStreamContext, topology: Topology, ca: AgentCA, *, clock: Callable[[], int] = now_ms
    ) -> None:
        self.ca = ca
        self.tokens = Bucket(js, topology.enrolment_bucket, ttl_s=MAX_TTL_S + 24 * 3600)
        self.agents = Bucket(js, topology.agents_bucket, ttl_s=0)
        self.clock = clock

    # --- tokens ------------------------------------------------------------------------

    @staticmethod
    def new_token() -> tuple[str, str]:
        """A fresh token and its id (the id is what admins see and name)."""
        token = TOKEN_PREFIX + secrets.token_hex(32)
        return token, f"et_{token_hash(token)[:16]}"

    async def issue(self, token: str, *, org: str, description: str, ttl_s: int, actor: str) -> TokenRecord:
        """Store ``token``'s record (its hash, never the token)."""
        digest = token_hash(token)
        now = self.clock()
        record = TokenRecord(
            id=f"et_{digest[:16]}",
            org=org,
            description=description,
            created_by=actor,
            created_at_ms=now,
            expires_at_ms=now + ttl_s * 1000,
        )
        kv = await self.tokens.kv()
        await kv.create(_token_key(digest), msgspec.json.encode(record))
        return record

    async def list_tokens(self) -> list[TokenRecord]:
        records = [record for _, record in await self.tokens.scan(TokenRecord, prefix="t.")]
        return sorted(records, key=lambda r: r.created_at_ms)

    async def get_token(self, token_id: str) -> tuple[str, TokenRecord] | None:
        if not re.fullmatch(r"et_[0-9a-f]{16}", token_id):
            return None
        found = await self.tokens.scan(TokenRecord, prefix=f"t.{token_id[3:]}")
        return found[0] if found else None

    async def revoke_token(self, key: str, actor: str) -> TokenRecord | None:
        now = self.clock()

        def revoke(current: TokenRecord | None) -> TokenRecord | None:
            if current is None or current.revoked_at_ms or current.used_at_ms:
                return None
            return msgspec.structs.replace(current, revoked_at_ms=now, revoked_by=actor)

        return await self.tokens.change(key, TokenRecord, revoke)

    async def _spend(self, token: str, agent_id: str) -> TokenRecord:
        """Mark the token used by ``agent_id``; EnrolmentError when it may
        not be (the same answer whatever the reason: unknown, used, expired,
        revoked)."""
        refused = EnrolmentError(
            "invalid_credentials", "the enrolment token is not valid (unknown, used, expired or revoked)"
        )
        if not _TOKEN.match(token):
            raise refused
        key = _token_key(token_hash(token))
        kv = await self.tokens.kv()
        for _ in range(_CAS_ATTEMPTS):
            try:
                entry = await kv.get(key)
            except KeyNotFoundError:
                raise refused from None
            if not entry.value:
                raise refused
            record = msgspec.json.decode(entry.value, type=TokenRecord)
            now = self.clock()
            if record.status(now) != "active":
                raise refused
            spent = msgspec.structs.replace(record, used_at_ms=now, used_by=agent_id)
            try:
                await kv.update(key, msgspec.json.encode(spent), last=entry.revision)
            except KeyWrongLastSequenceError:
                continue  # someone else wrote it: read again (used, revoked...)
            return spent
        raise refused

    # --- enrolment ---------------------------------------------------------------------

    async def enrol(
        self, token: str, *, name: str, physical_id: str, csr: str, attestation_csr: str
    ) -> Enrolled:
        # The requests first: a malformed one does not spend the token.
        try:
            parse_csr(csr, "csr")
            if attestation_csr:
                parse_csr(attestation_csr, "attestation_csr")
        except CsrError as exc:
            field = str(exc).split(":", 1)[0]
            raise EnrolmentError("invalid_field", str(exc), field) from None
        agent_id = f"ag-{uuid.uuid4().hex}"
        spent = await self._spend(token, agent_id)
        try:
            mtls = self.ca.sign_mtls(csr, agent_id)
            attest_pem, attest_serial, key_b64 = "", "", ""
            if attestation_csr:
                issued, raw = self.ca.sign_attestation(attestation_csr, agent_id)
                attest_pem, attest_serial = issued.pem, issued.serial
                key_b64 = base64.b64encode(raw).decode()
        except CsrError as exc:  # checked above; a key type refused at signing
            field = str(exc).split(":", 1)[0]
            raise EnrolmentError("invalid_field", str(exc), field) from None
        record = AgentRecord(
            id=agent_id,
            org=spent.org,
            name=name,
            physical_id=physical_id,
            attestation_key=key_b64,
            mtls_serial=mtls.serial,
            attestation_serial=attest_serial,
            not_after_ms=int(mtls.not_after.timestamp() * 1000),
            enrolled_at_ms=self.clock(),
            enrolled_with=spent.id,
        )
        kv = await self.agents.kv()
        await kv.create(agent_id, encode_record(record))
        return Enrolled(record, mtls.pem, attest_pem, self.ca.pem)

    # --- agents ------------------------------------------------------------------------

    async def get_agent(self, agent_id: str) -> AgentRecord | None:
        if not re.fullmatch(r"ag-[0-9a-f]{32}", agent_id):
            return None
        kv = await self.agents.kv()
        try:
            entry = await kv.get(agent_id)
        except KeyNotFoundError:
            return None
        return decode_record(entry.value) if entry.value else None

    async def list_agents(self) -> list[AgentRecord]:
        agents = [record for _, record in await self.agents.scan(AgentRecord)]
        return sorted(agents, key=lambda a: a.enrolled_at_ms)

    async def revoke_agent(self, agent_id: str, *, actor: str, reason: str) -> AgentRecord | None:
        """The record, revoked (None: no such agent, or revoked already)."""
        if not re.fullmatch(r"ag-[0-9a-f]{32}", agent_id):
            return None  # not an enrolled agent's id (a thing an admin enrolled)
        now = self.clock()

        def revoke(current: AgentRecord | None) -> AgentRecord | None:
            if current is None or current.revoked:
                return None
            return msgspec.structs.replace(
                current, status="revoked", revoked_at_ms=now, revoked_by=actor, revoke_reason=reason
            )

        return await self.agents.change(agent_id, AgentRecord, revoke)
