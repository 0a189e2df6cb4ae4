"""The vault bucket: every credential's wrapped data key, by data key id.

A JetStream KV bucket (``Topology.vault_bucket``) keeping one revision per
key, file storage.  The Hub creates an entry before the CONFIG event that
references it (so a node that sees the event finds the key), replaces it
in place when it rewraps (compare and set on the entry's revision: two
rewrap runs, or two Hub replicas, cannot lose each other's work), and
purges it when the credential's secret is replaced or the credential
deleted: the ciphertext the CONFIG stream keeps can then never be opened
again.  Nodes only read it.

The values are ``WrappedKey`` JSON: ciphertext and who it belongs to,
never a key in the clear.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable

import msgspec
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import (
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)
from nats.js.errors import Error as JetStreamError
from nats.js.kv import KeyValue

from streams.kv_scan import scan as kv_scan
from streams.topology import Topology
from streams.vault.envelope import WrappedKey

log = logging.getLogger("nexus.vault")

_decoder = msgspec.json.Decoder(WrappedKey)
_encoder = msgspec.json.Encoder()


class Changed(Exception):
    """The entry moved since it was read (someone else rewrapped it, or it
    was purged)."""


class Stored(msgspec.Struct, frozen=True):
    dek: str
    key: WrappedKey
    revision: int  # the KV revision: what a replace must name


def decode_wrapped(data: bytes) -> WrappedKey:
    return _decoder.decode(data)


class KeyStore:
    def __init__(self, js: JetStreamContext, topology: Topology) -> None:
        self._js = js
        self.bucket = topology.vault_bucket
        self._kv_: KeyValue | None = None

    async def kv(self, *, create: bool = True) -> KeyValue:
        if self._kv_ is None:
            try:
                self._kv_ = await self._js.key_value(self.bucket)
            except (BucketNotFoundError, NotFoundError):
                if not create:
                    raise
                with contextlib.suppress(JetStreamError):
                    self._kv_ = await self._js.create_key_value(
                        KeyValueConfig(
                            bucket=self.bucket,
                            history=1,
                            storage=StorageType.FILE,
                            description="Nexus vault: wrapped data keys of provider credentials",
                        )
                    )
                if self._kv_ is None:
                    self._kv_ = await self._js.key_value(self.bucket)
        return self._kv_

    async def create(self, dek: str, key: WrappedKey) -> int:
        kv = await self.kv()
        return int(await kv.create(dek, _encoder.encode(key)))

    async def get(self, dek: str) -> Stored | None:
        kv = await self.kv()
        try:
            entry = await kv.get(dek)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return Stored(dek, decode_wrapped(entry.value), int(entry.revision or 0))

    async def get_many(self, deks: Iterable[str]) -> dict[str, Stored]:
        """The entries of ``deks`` that exist (one request each, concurrently)."""
        wanted = list(dict.fromkeys(deks))
        out: dict[str, Stored] = {}
        sem = asyncio.Semaphore(64)

        async def one(dek: str) -> None:
            async with sem:
                stored = await self.get(dek)
            if stored is not None:
                out[dek] = stored

        await asyncio.gather(*(one(d) for d in wanted))
        return out

    async def replace(self, stored: Stored, key: WrappedKey) -> int:
        """Replace an entry read at ``stored.revision``; Changed if it moved."""
        kv = await self.kv()
        try:
            return int(await kv.update(stored.dek, _encoder.encode(key), last=stored.revision))
        except KeyWrongLastSequenceError:
            raise Changed(stored.dek) from None

    async def purge(self, dek: str) -> None:
        kv = await self.kv()
        await kv.purge(dek)

    async def scan(self) -> AsyncIterator[Stored]:
        """Every entry as it is now; unreadable values are logged and
        skipped.  Exact (streams.kv_scan): nats-py's watch could end its
        initial values before entries already pushed, and a rewrap that
        missed a data key would leave it wrapped under a retired master."""
        for item in await kv_scan(self._js, self.bucket, timeout_s=30.0):
            if not item.value:
                continue
            try:
                key = decode_wrapped(item.value)
            except (msgspec.ValidationError, msgspec.DecodeError):
                log.warning("vault: entry %s is not a wrapped key; skipped", item.key)
                continue
            yield Stored(item.key, key, item.revision)
