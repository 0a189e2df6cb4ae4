"""A live copy of a JetStream KV bucket in memory: every key's latest value,
kept current by a watcher instead of reading every key on every check (one
read per node per second was the cost before, at any fleet size).

A bucket that does not exist yet (the Hub has not made it) is looked for
again every few seconds; a watcher that fails (NATS away) is re-opened, and
the copy is rebuilt from what the bucket holds then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, NotFoundError

from streams.tasks import stop_tasks

log = logging.getLogger("nexus.alerts")

_RETRY_S = 2.0
_DELETED = ("DEL", "PURGE")


class KvMirror:
    def __init__(self, js: JetStreamContext, bucket: str) -> None:
        self._js = js
        self.bucket = bucket
        self.values: dict[str, bytes] = {}
        # Set once the bucket's contents at start have been read: before, an
        # absent key may only not have arrived yet.
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"kv-mirror-{self.bucket}")

    async def stop(self) -> None:
        if self._task is not None:
            await stop_tasks(self._task)
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except (BucketNotFoundError, NotFoundError):
                pass  # not made yet
            except Exception as exc:  # NATS away: open it again later
                log.debug("alerts: watching %s failed: %s", self.bucket, type(exc).__name__)
            await asyncio.sleep(_RETRY_S)

    async def _follow(self) -> None:
        kv = await self._js.key_value(self.bucket)
        watcher = await kv.watchall()
        fresh: dict[str, bytes] = {}
        initial = True
        try:
            async for entry in watcher:
                if entry is None:  # the bucket's contents at start are all in
                    self.values, initial = fresh, False
                    self.ready.set()
                    continue
                target = fresh if initial else self.values
                if entry.operation in _DELETED:
                    target.pop(entry.key, None)
                else:
                    target[entry.key] = entry.value or b""
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]
