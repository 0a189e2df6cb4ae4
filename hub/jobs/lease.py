"""The scheduler's leader lease: one record in the jobs KV bucket, written
only by compare-and-set on the revision the writer last saw.

- **Acquire**: a free record (none, or released) is taken by CAS.  A record
  someone else holds is taken over only once its revision has not moved for
  a whole ``ttl_s`` *on this replica's own clock* (counted from when this
  replica first saw that revision), so no wall clocks are compared between
  machines.
- **Renew**: the holder rewrites the record every ``ttl_s / 3`` with
  ``last=`` its own last revision; if anyone else wrote in between, the CAS
  fails and the holder knows at once that it lost the lease.
- **Held**: the holder counts itself leader only while its last successful
  renewal was *sent* less than ``SAFE * ttl_s`` ago.  A follower starts its
  ``ttl_s`` count after that write landed, so a holder cut off from NATS (or
  paused) stops scheduling before anyone can take over.
- **Fence**: the revision of the acquiring write.  Bucket revisions only
  grow, so a later leader always holds a larger fence; the scheduler writes
  it into every job slot it claims and refuses to claim a slot that a larger
  fence has claimed (a paused old leader that wakes up steps down instead of
  running the job again).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import msgspec
import nats.errors
from nats.js.errors import Error as JetStreamError
from nats.js.errors import KeyWrongLastSequenceError

from hub.signin.kv import Bucket
from streams.events import now_ms

log = logging.getLogger("nexus.hub.jobs")

KEY = "leader"
SAFE = 0.75  # the holder's own validity, as a share of the lease


class Holder(msgspec.Struct, frozen=True, kw_only=True):
    holder: str = ""  # the replica ("" : released)
    fence: int = 0  # the revision it acquired the lease at
    acquired_at_ms: int = 0
    renewed_at_ms: int = 0
    ttl_ms: int = 0


class Lease:
    def __init__(
        self,
        bucket: Bucket,
        holder: str,
        *,
        ttl_s: float = 6.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bucket = bucket
        self.holder = holder
        self.ttl_s = ttl_s
        self._clock = clock
        self.fence = 0  # > 0 while this replica holds the lease
        self._revision = 0  # of this replica's last write
        self._renewed = 0.0  # clock() when that write was sent
        self._acquired_ms = 0
        self._seen = (0, 0.0)  # (revision someone else holds, clock() it was first seen)
        self.current: Holder | None = None  # the record as last read

    @property
    def renew_every_s(self) -> float:
        return self.ttl_s / 3

    def held(self) -> bool:
        return self.fence > 0 and self._clock() - self._renewed < SAFE * self.ttl_s

    def lost(self, why: str) -> None:
        if self.fence:
            log.warning("jobs: %s lost the leader lease (fence %d): %s", self.holder, self.fence, why)
        self.fence = 0
        self._revision = 0

    def _record(self) -> bytes:
        return msgspec.json.encode(
            Holder(
                holder=self.holder,
                fence=self.fence,
                acquired_at_ms=self._acquired_ms,
                renewed_at_ms=now_ms(),
                ttl_ms=int(self.ttl_s * 1000),
            )
        )

    async def step(self) -> bool:
        """Renew the lease (holder) or take it when free or stale
        (follower); returns whether this replica holds it now."""
        try:
            return await self._step()
        except (nats.errors.Error, JetStreamError, OSError, TimeoutError) as exc:
            # NATS away: a holder keeps its lease until held() lapses by the
            # clock; a follower just tries again.
            log.warning("jobs: lease step failed (%s)", type(exc).__name__)
            return self.held()

    async def _step(self) -> bool:
        kv = await self.bucket.kv()
        record, revision = await self.bucket.read(KEY, Holder)
        self.current = record
        if self.fence:
            if revision != self._revision:
                self.lost(f"the record moved to {record.holder if record else 'nobody'}")
                return False
            sent = self._clock()
            try:
                self._revision = await kv.update(KEY, self._record(), last=revision)
            except KeyWrongLastSequenceError:
                self.lost("someone else wrote the record")
                return False
            self._renewed = sent
            return self.held()
        now = self._clock()
        if record is not None and record.holder:
            if self._seen[0] != revision:
                self._seen = (revision, now)
                return False
            if now - self._seen[1] < self.ttl_s:
                return False
            log.warning(
                "jobs: the lease of %s (fence %d) was not renewed for %.1f s; taking over",
                record.holder,
                record.fence,
                now - self._seen[1],
            )
        sent = self._clock()
        self._acquired_ms = now_ms()
        try:
            # The fence is the revision this write gets; the record names it
            # from the next renewal on (the revision is only known after).
            if revision:
                new = await kv.update(KEY, self._record(), last=revision)
            else:
                new = await kv.create(KEY, self._record())
        except KeyWrongLastSequenceError:
            return False  # another replica was quicker
        self.fence = self._revision = new
        self._renewed = sent
        log.info("jobs: %s holds the leader lease (fence %d)", self.holder, self.fence)
        return True

    async def release(self) -> None:
        """Give the lease up (a clean stop): a follower takes it at its next
        step instead of waiting out the lease."""
        if not self.fence:
            return
        revision, self.fence = self._revision, 0
        try:
            kv = await self.bucket.kv()
            await kv.update(KEY, msgspec.json.encode(Holder()), last=revision)
        except (nats.errors.Error, JetStreamError, OSError) as exc:
            log.info("jobs: the lease was not released (%s); it lapses by itself", type(exc).__name__)
