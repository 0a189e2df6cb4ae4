"""The spill store: bodies over the inline limit live in a JetStream object
store bucket, addressed by their sha256, and events carry a ``BodyRef``.

Content addressing makes a put idempotent (the same body twice is one
object) and lets a reader verify it got the exact bytes.
"""

from __future__ import annotations

import hashlib

from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.object_store import ObjectStore

from streams.events import INLINE_BODY_LIMIT, Body, BodyRef


class SpillIntegrityError(Exception):
    """The stored object does not match its reference."""


def body_of(
    data: bytes, *, content_type: str = "application/json", redacted: bool = False
) -> tuple[Body, bool]:
    """The Body to put on an event, and whether ``data`` must be spilled."""
    if len(data) <= INLINE_BODY_LIMIT:
        return Body(content_type=content_type, inline=data, size=len(data), redacted=redacted), False
    digest = hashlib.sha256(data).hexdigest()
    ref = BodyRef(key=f"sha256/{digest}", size=len(data), sha256=digest)
    return Body(content_type=content_type, ref=ref, size=len(data), redacted=redacted), True


class SpillStore:
    def __init__(self, js: JetStreamContext, bucket: str) -> None:
        self._js = js
        self._bucket = bucket
        self._store: ObjectStore | None = None

    async def _obs(self) -> ObjectStore:
        if self._store is None:
            try:
                self._store = await self._js.object_store(self._bucket)
            except (BucketNotFoundError, NotFoundError):
                self._store = await self._js.create_object_store(self._bucket)
        return self._store

    async def put(self, data: bytes) -> BodyRef:
        digest = hashlib.sha256(data).hexdigest()
        ref = BodyRef(key=f"sha256/{digest}", size=len(data), sha256=digest)
        obs = await self._obs()
        await obs.put(ref.key, data)
        return ref

    async def get(self, ref: BodyRef) -> bytes:
        obs = await self._obs()
        result = await obs.get(ref.key)
        data = result.data or b""
        if len(data) != ref.size or hashlib.sha256(data).hexdigest() != ref.sha256:
            raise SpillIntegrityError(f"spilled object {ref.key} does not match its reference")
        return data

    async def delete(self, ref: BodyRef) -> None:
        obs = await self._obs()
        await obs.delete(ref.key)
