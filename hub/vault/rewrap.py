"""The rewrap pass: every wrapped data key moves to the key version in
service, in place in the vault bucket.

One pass scans the bucket (an ordered consumer: the last value of each
key), and for each entry still on an older version unwraps the data key
and wraps it again (the data key is in plain text only inside that call),
then replaces the entry by compare and set on the revision it read: a
concurrent pass (another Hub replica, the jobs scheduler) or a purge in
between makes the replace fail, and the entry is read again.  Passes are
idempotent; running two at once wastes work, never loses any.

What it cannot move fails closed and is counted with its credential: a
data key on a retired version, or from a master key this Hub does not
hold.  Entries no credential references (a store that crashed between its
two writes, a purge that failed) are purged once they are older than
``orphan_grace_ms``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from streams.events import now_ms
from streams.vault.envelope import rewrap
from streams.vault.keyring import Keyring, VaultError
from streams.vault.keystore import Changed, KeyStore, Stored

log = logging.getLogger("nexus.hub.vault")

ORPHAN_GRACE_MS = 10 * 60 * 1000
_MAX_FAILURES_LISTED = 50


class Failure(msgspec.Struct, frozen=True):
    credential: str
    error: str


class Progress(msgspec.Struct, kw_only=True):
    """A pass as it goes (and as it ended): what a job's run history and the
    API show."""

    target_version: int = 0
    running: bool = False
    scanned: int = 0
    rewrapped: int = 0
    current: int = 0  # already on the target version
    failed: int = 0
    orphans_purged: int = 0
    failures: list[Failure] = msgspec.field(default_factory=list)
    started_at_ms: int = 0
    finished_at_ms: int = 0
    seconds: float = 0.0
    error: str = ""


@dataclass
class Rewrapper:
    keystore: KeyStore
    keyring: Callable[[], Keyring]
    referenced: Callable[[], dict[str, str]]  # dek -> credential
    concurrency: int = 64
    orphan_grace_ms: int = ORPHAN_GRACE_MS
    progress: Progress = field(default_factory=Progress)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def run(self) -> Progress:
        async with self._lock:  # one pass per process at a time
            started = time.monotonic()
            keyring = self.keyring()
            if not keyring.versions:
                # No credential was ever stored: nothing to rewrap.
                self.progress = Progress(started_at_ms=now_ms(), finished_at_ms=now_ms())
                return self.progress
            try:
                target = keyring.current.version
            except VaultError as exc:
                self.progress = Progress(error=str(exc), started_at_ms=now_ms(), finished_at_ms=now_ms())
                return self.progress
            p = self.progress = Progress(target_version=target, running=True, started_at_ms=now_ms())
            referenced = self.referenced()
            sem = asyncio.Semaphore(self.concurrency)
            tasks: set[asyncio.Task[None]] = set()
            try:
                async for stored in self.keystore.scan():
                    p.scanned += 1
                    if stored.dek not in referenced:
                        if now_ms() - (stored.key.created_at_ms or 0) > self.orphan_grace_ms:
                            await sem.acquire()
                            tasks.add(asyncio.create_task(self._purge(stored, sem, p)))
                        continue
                    if stored.key.kek == target:
                        p.current += 1
                        continue
                    await sem.acquire()
                    tasks.add(asyncio.create_task(self._one(stored, keyring, target, sem, p)))
                    if len(tasks) > 4 * self.concurrency:
                        tasks = {t for t in tasks if not t.done()}
                if tasks:
                    await asyncio.gather(*tasks)
            except Exception as exc:
                for t in tasks:
                    t.cancel()
                p.error = f"{type(exc).__name__}: {exc}"
                log.error("vault: the rewrap pass stopped: %s", p.error)
            finally:
                p.running = False
                p.finished_at_ms = now_ms()
                p.seconds = round(time.monotonic() - started, 3)
            log.info(
                "vault: rewrap to version %d: %d rewrapped, %d already there, %d failed, "
                "%d orphans purged in %.1f s",
                target,
                p.rewrapped,
                p.current,
                p.failed,
                p.orphans_purged,
                p.seconds,
            )
            return p

    async def _one(
        self, stored: Stored, keyring: Keyring, target: int, sem: asyncio.Semaphore, p: Progress
    ) -> None:
        try:
            for _ in range(5):
                try:
                    fresh = rewrap(stored.dek, stored.key, keyring, now_ms=now_ms())
                except VaultError as exc:
                    p.failed += 1
                    if len(p.failures) < _MAX_FAILURES_LISTED:
                        p.failures.append(Failure(stored.key.credential, str(exc)))
                    return
                try:
                    await self.keystore.replace(stored, fresh)
                    p.rewrapped += 1
                    return
                except Changed:
                    again = await self.keystore.get(stored.dek)
                    if again is None:
                        return  # purged meanwhile (the credential's secret was replaced)
                    if again.key.kek == target:
                        p.current += 1
                        return
                    stored = again
            p.failed += 1
            p.failures.append(
                Failure(stored.key.credential, "the entry kept changing; the next pass retries")
            )
        finally:
            sem.release()

    async def _purge(self, stored: Stored, sem: asyncio.Semaphore, p: Progress) -> None:
        try:
            # Only if it is still unreferenced now (a store may have finished).
            if stored.dek not in self.referenced():
                await self.keystore.purge(stored.dek)
                p.orphans_purged += 1
        finally:
            sem.release()
