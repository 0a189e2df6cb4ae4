"""The JetStream KV buckets sign-in keeps its shared, short-lived state in
(sessions, the login guard, OIDC flows, token use), opened or created on
first use so a Hub replica starting beside another finds the same bucket."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from typing import TypeVar

import msgspec
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.errors import Error as JetStreamError
from nats.js.kv import KeyValue

from streams.kv_scan import KvItem, scan

T = TypeVar("T", bound=msgspec.Struct)

_CAS_ATTEMPTS = 8


class Bucket:
    def __init__(
        self, js: JetStreamContext, name: str, *, ttl_s: float, max_bytes: int = 256 * 1024 * 1024
    ) -> None:
        self._js = js
        self.name = name
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self._kv: KeyValue | None = None

    async def kv(self) -> KeyValue:
        if self._kv is None:
            try:
                self._kv = await self._js.key_value(self.name)
            except (BucketNotFoundError, NotFoundError):
                # Two replicas may race to create it: the loser opens it.
                with contextlib.suppress(JetStreamError):
                    await self._js.create_key_value(
                        KeyValueConfig(
                            bucket=self.name,
                            history=1,
                            ttl=self.ttl_s,
                            max_bytes=self.max_bytes,
                            storage=StorageType.FILE,
                        )
                    )
                self._kv = await self._js.key_value(self.name)
        return self._kv

    async def read(self, key: str, typ: type[T]) -> tuple[T | None, int]:
        """The value under ``key`` and its revision (None, 0 when absent or
        unreadable: a value this code cannot decode counts as none)."""
        kv = await self.kv()
        try:
            entry = await kv.get(key)
        except KeyNotFoundError as exc:
            # A deleted key's marker has a revision: an update names it.
            marker = getattr(exc, "entry", None)
            return None, (getattr(marker, "revision", 0) or 0) if marker is not None else 0
        if not entry.value:
            return None, entry.revision or 0
        try:
            return msgspec.json.decode(entry.value, type=typ), entry.revision or 0
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None, entry.revision or 0

    async def items(self, *, prefix: str = "") -> list[KvItem]:
        """Every live entry (under ``prefix``), as stored: exact (see
        streams.kv_scan)."""
        await self.kv()  # created on first use, as for every other call
        return await scan(self._js, self.name, prefix=prefix)

    async def scan(self, typ: type[T], *, prefix: str = "") -> list[tuple[str, T]]:
        """Every live entry (under ``prefix``), decoded; one that does not
        decode as ``typ`` counts as none, as in ``read``.  Exact, unlike
        nats-py's ``keys()`` (see streams.kv_scan)."""
        out: list[tuple[str, T]] = []
        for item in await self.items(prefix=prefix):
            if not item.value:
                continue
            with contextlib.suppress(msgspec.ValidationError, msgspec.DecodeError):
                out.append((item.key, msgspec.json.decode(item.value, type=typ)))
        return out

    async def change(self, key: str, typ: type[T], fn: Callable[[T | None], T | None]) -> T | None:
        """Compare-and-set: ``fn`` maps the current value to the new one
        (None: leave it); retried when another replica wrote in between, so
        two Hubs counting the same failure both count."""
        kv = await self.kv()
        for _ in range(_CAS_ATTEMPTS):
            current, revision = await self.read(key, typ)
            new = fn(current)
            if new is None:
                return current
            try:
                if revision:
                    await kv.update(key, msgspec.json.encode(new), last=revision)
                else:
                    await kv.create(key, msgspec.json.encode(new))
            except KeyWrongLastSequenceError:
                continue
            return new
        raise TimeoutError(f"sign-in state {key!r} changes too fast to update")

    async def delete(self, key: str) -> None:
        kv = await self.kv()
        with contextlib.suppress(KeyNotFoundError):
            await kv.delete(key)


def hashed(kind: str, value: str) -> str:
    """A KV key for a value that must not appear in the bucket as such (an
    e-mail address, an IP): ``kind.<sha256 prefix>``."""
    return f"{kind}.{hashlib.sha256(value.encode()).hexdigest()[:40]}"
