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
import nats.errors
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
        """Every entry as it is now (an ordered consumer over the last
        value of each key); unreadable values are logged and skipped."""
        try:
            kv = await self.kv(create=False)
        except (BucketNotFoundError, NotFoundError):
            return
        watcher = await kv.watch(">", ignore_deletes=True)
        try:
            while True:
                try:
                    entry = await watcher.updates(timeout=30.0)  # type: ignore[no-untyped-call]
                except nats.errors.TimeoutError:
                    raise TimeoutError("the vault bucket did not finish listing within 30 s") from None
                if entry is None:
                    return  # the end of what existed when the scan began
                if not entry.value:
                    continue
                try:
                    key = decode_wrapped(entry.value)
                except (msgspec.ValidationError, msgspec.DecodeError):
                    log.warning("vault: entry %s is not a wrapped key; skipped", entry.key)
                    continue
                yield Stored(entry.key, key, int(entry.revision or 0))
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]
