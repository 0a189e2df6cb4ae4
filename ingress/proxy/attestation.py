"""Agent attestation on CONNECT: a desktop agent proves which device a
connection comes from, and the proxy then relays it untouched (the agent
has already run the compliance pipeline on the device).

The header, read from the CONNECT request before any TLS::

    X-Nexus-Attestation: v2;ts=<unix seconds>;nonce=<32 hex>;hash=sha256:<64 hex>;
                         agent_id=<id>;target=<host:port>;sig=<base64url Ed25519>

The signature covers ``"v2\\nts=..\\nnonce=..\\nhash=..\\nagent_id=..\\ntarget=..\\n"``.
It is the original v1 format (``hash`` is the SHA-256 of the empty body:
it binds identity, not a body) plus ``target``, the CONNECT target in lower
case: a header captured on one connection is useless for another host.
Checks, in order: syntax, timestamp within the skew, target, the agent's
key (known, not revoked, certificate not expired), the signature, and last
the nonce (stored once, shared by every proxy node through Valkey), so a
forged header cannot burn a genuine nonce.  Any failure: the connection is
bumped as usual (fail to inspection, never to trust).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import msgspec
import msgspec.yaml
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from streams.agents import AgentDirectory

HEADER = "X-Nexus-Attestation"
VERSION = "v2"
EMPTY_HASH = "sha256:" + hashlib.sha256(b"").hexdigest()
_FIELDS = ("ts", "nonce", "hash", "agent_id", "target", "sig")


@dataclass(frozen=True, slots=True)
class AgentKey:
    agent_id: str
    public_key: bytes  # raw Ed25519, 32 bytes
    expires_at: dt.datetime | None = None
    revoked: bool = False


class AgentKeyLookup(Protocol):
    """Where an agent's attestation key comes from: the Hub (part 2)
    implements it over its agent CA; until then ``KeyFile``.  A revoked
    agent must stop verifying within 2 s of its revocation."""

    async def lookup(self, agent_id: str) -> AgentKey | None: ...


class NonceStore(Protocol):
    async def first_use(self, key: str, ttl_s: float) -> bool: ...


@dataclass(frozen=True, slots=True)
class Verdict:
    valid: bool
    agent_id: str = ""
    reason: str = ""  # "valid", or why not


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signed_string(ts: int, nonce: str, body_hash: str, agent_id: str, target: str) -> bytes:
    return (
        f"{VERSION}\nts={ts}\nnonce={nonce}\nhash={body_hash}\nagent_id={agent_id}\ntarget={target.lower()}\n"
    ).encode()


def sign(
    key: Ed25519PrivateKey, agent_id: str, target: str, *, ts: int | None = None, nonce: str | None = None
) -> str:
    """The header value an agent sends (the agent and the tests use it)."""
    ts = int(time.time()) if ts is None else ts
    nonce = nonce or secrets.token_hex(16)
    sig = key.sign(signed_string(ts, nonce, EMPTY_HASH, agent_id, target))
    return (
        f"{VERSION};ts={ts};nonce={nonce};hash={EMPTY_HASH};agent_id={agent_id};"
        f"target={target.lower()};sig={_b64url(sig)}"
    )


def parse(header: str) -> dict[str, str] | None:
    parts = [p.strip() for p in header.strip().split(";")]
    if not parts or parts[0] != VERSION:
        return None
    out: dict[str, str] = {}
    for part in parts[1:]:
        name, sep, value = part.partition("=")
        if not sep or name not in _FIELDS or name in out:
            return None
        out[name] = value
    return out if len(out) == len(_FIELDS) else None


class AttestationVerifier:
    def __init__(
        self,
        keys: AgentKeyLookup,
        nonces: NonceStore,
        *,
        max_skew_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._nonces = nonces
        self._skew = max_skew_s
        self._clock = clock

    async def check(self, header: str, target: str) -> Verdict:
        f = parse(header)
        if f is None:
            return Verdict(False, reason="malformed")
        agent = f["agent_id"]
        try:
            ts = int(f["ts"])
            sig = _unb64url(f["sig"])
        except ValueError:
            return Verdict(False, agent, "malformed")
        if len(f["nonce"]) != 32 or not all(c in "0123456789abcdef" for c in f["nonce"]):
            return Verdict(False, agent, "malformed")
        if f["hash"] != EMPTY_HASH:
            return Verdict(False, agent, "body_hash")
        if abs(self._clock() - ts) > self._skew:
            return Verdict(False, agent, "clock_skew")
        if f["target"] != target.lower():
            return Verdict(False, agent, "target_mismatch")
        key = await self._keys.lookup(agent)
        if key is None:
            return Verdict(False, agent, "unknown_agent")
        if key.revoked:
            return Verdict(False, agent, "revoked")
        if key.expires_at is not None and key.expires_at <= dt.datetime.fromtimestamp(self._clock(), dt.UTC):
            return Verdict(False, agent, "certificate_expired")
        try:
            Ed25519PublicKey.from_public_bytes(key.public_key).verify(
                sig, signed_string(ts, f["nonce"], f["hash"], agent, f["target"])
            )
        except (InvalidSignature, ValueError):
            return Verdict(False, agent, "bad_signature")
        try:
            fresh = await self._nonces.first_use(f"{agent}:{f['nonce']}", self._skew * 2)
        except Exception:  # the store is away: no proof it is fresh
            return Verdict(False, agent, "nonce_store_unavailable")
        if not fresh:
            return Verdict(False, agent, "replayed")
        return Verdict(True, agent, "valid")


# --- nonce stores -------------------------------------------------------------


class ValkeyNonces:
    """SET NX with a TTL: the first node to see a nonce wins, everywhere."""

    def __init__(self, client: Any, prefix: str = "nexus:") -> None:
        self._client = client
        self._prefix = f"{prefix}proxy:nonce:"

    async def first_use(self, key: str, ttl_s: float) -> bool:
        ok = await self._client.set(self._prefix + key, b"1", nx=True, px=max(int(ttl_s * 1000), 1))
        return bool(ok)


class LocalNonces:
    """A node-local store for a standalone proxy without Valkey (replays to
    another node are then not caught: configure Valkey for a fleet)."""

    def __init__(self, size: int = 200_000) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._size = size

    async def first_use(self, key: str, ttl_s: float) -> bool:
        now = time.monotonic()
        while self._seen:
            oldest, until = next(iter(self._seen.items()))
            if until > now and len(self._seen) < self._size:
                break
            del self._seen[oldest]
        if key in self._seen:
            return False
        self._seen[key] = now + ttl_s
        return True


# --- the key file (until the Hub serves keys) ---------------------------------------


class _AgentEntry(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    public_key: str  # base64 (standard or url-safe) of the raw 32-byte Ed25519 key
    expires_at: dt.datetime | None = None
    revoked: bool = False


class _KeyFileBody(msgspec.Struct, forbid_unknown_fields=True):
    agents: list[_AgentEntry] = []


class KeyFileError(ValueError):
    pass


class KeyFile:
    """Agents' keys from a YAML file, re-read when it changes (checked at
    most every ``recheck_s``): revoking an agent there takes effect within
    that time.  A file that no longer parses keeps the last good content
    out of use: every lookup fails (nothing is trusted on a broken file)."""

    def __init__(self, path: str | Path, *, recheck_s: float = 1.0) -> None:
        self._path = Path(path)
        self._recheck = recheck_s
        self._checked = 0.0
        self._stamp: tuple[int, int] | None = None
        self._keys: dict[str, AgentKey] = {}
        self._lock = asyncio.Lock()

    def _load(self) -> dict[str, AgentKey]:
        try:
            body = msgspec.yaml.decode(self._path.read_bytes(), type=_KeyFileBody)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise KeyFileError(f"{self._path}: {exc}") from None
        out: dict[str, AgentKey] = {}
        for a in body.agents:
            try:
                raw = base64.b64decode(a.public_key.replace("-", "+").replace("_", "/") + "==")
            except ValueError:
                raise KeyFileError(f"{self._path}: agent {a.id}: public_key is not base64") from None
            if len(raw) != 32:
                raise KeyFileError(f"{self._path}: agent {a.id}: public_key must be 32 bytes")
            exp = a.expires_at
            if exp is not None and exp.tzinfo is None:
                exp = exp.replace(tzinfo=dt.UTC)
            out[a.id] = AgentKey(a.id, raw, exp, a.revoked)
        return out

    async def lookup(self, agent_id: str) -> AgentKey | None:
        now = time.monotonic()
        if now - self._checked >= self._recheck:
            async with self._lock:
                if now - self._checked >= self._recheck:
                    self._checked = now
                    try:
                        st = os.stat(self._path)
                        stamp = (st.st_mtime_ns, st.st_size)
                    except OSError:
                        stamp = None
                    if stamp != self._stamp:
                        self._stamp = stamp
                        try:
                            self._keys = await asyncio.to_thread(self._load)
                        except KeyFileError:
                            self._keys = {}
        return self._keys.get(agent_id)


class NoKeys:
    async def lookup(self, agent_id: str) -> AgentKey | None:
        return None


class HubAgentKeys:
    """The agents the Hub enrolled (``streams.agents``): their records in
    the agents bucket, cached at most 1 s, so a revocation stops verifying
    within 2 s.  The bucket unreachable: nothing is trusted (bumped)."""

    def __init__(self, directory: AgentDirectory) -> None:
        self._directory = directory

    async def lookup(self, agent_id: str) -> AgentKey | None:
        try:
            record = await self._directory.get(agent_id)
        except Exception:
            return None
        if record is None or not record.attestation_key:
            return None
        expires = (
            dt.datetime.fromtimestamp(record.not_after_ms / 1000, dt.UTC) if record.not_after_ms else None
        )
        return AgentKey(record.id, record.public_key(), expires, record.revoked)


def public_key_b64(key: Ed25519PrivateKey) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()
