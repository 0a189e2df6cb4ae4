"""The semantic cache: a prompt whose meaning is close enough to one
answered before, in the same partition, gets that answer.

Shared across gateway nodes through Valkey, searched in process:

- ``{ns}e:<id>`` holds an entry (the bytes the caller received, as in the
  exact cache, plus its partition and scope), with the cache's TTL.  Every
  hit reads it, so an entry that was poisoned (deleted) or expired is never
  served by any node, whatever its local index still holds.
- ``{ns}log`` is a Valkey stream of index changes (``add`` with the vector,
  ``del``), capped at ``max_entries``.  Every node loads it on start and
  tails it, so a vector written by one node is searchable on all of them
  within a blocking read (about a millisecond on a LAN).

``ns`` carries the embedding model's version: vectors of another model live
in another namespace and are never compared with these (they expire).

The embedder runs in a small thread pool (onnxruntime releases the GIL),
behind a circuit breaker: when it is slow or failing, or every worker is
busy, the lookup is skipped and the request goes on as a miss.  Valkey
calls are bounded and fail open, as in the exact cache."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
from prometheus_client import Counter, Histogram

from ingress.cache.semantic.embedder import DIM, Embedder, PromptTooLong, Vector
from ingress.cache.semantic.guard import guard
from ingress.cache.semantic.index import VectorIndex
from ingress.cache.store import Entry
from ingress.routing.breaker import Breakers
from streams.config_routing import Breaker as BreakerConfig

log = logging.getLogger("nexus.cache.semantic")

LOOKUPS = Counter(
    "nexus_semantic_cache_lookups_total",
    "Semantic cache lookups by outcome (hit, miss, too_long, breaker_open, busy, embed_error, embed_timeout,"
    " store_error)",
    ["outcome"],
)
EMBED_SECONDS = Histogram(
    "nexus_semantic_cache_embed_seconds",
    "Time to embed one prompt",
    buckets=(0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64),
)
BREAKER_TARGET = "semantic-cache-embedder"
RECENT_VECTORS = 2048


class SemEntry(msgspec.Struct, frozen=True, kw_only=True):
    partition: str
    scope: str
    entry: Entry
    exact_key: str = ""  # the same answer in the exact cache: poisoned together


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(SemEntry)


def namespace(model_version: str) -> str:
    return hashlib.sha256(model_version.encode()).hexdigest()[:16]


def entry_id(partition: str, text: str) -> str:
    # Deterministic: the same prompt answered twice overwrites, not duplicates.
    return hashlib.sha256(f"{partition}\n{text}".encode()).hexdigest()[:32]


@dataclass
class Probe:
    """A lookup's result: the vector is kept for the fill on a miss."""

    partition: str
    scope: str
    text: str
    vector: Vector | None = None
    hit: SemEntry | None = None
    hit_id: str = ""
    similarity: float = 0.0
    outcome: str = "miss"


class SemanticCache:
    def __init__(
        self,
        client: Any,
        prefix: str,
        embedder: Embedder,
        *,
        threshold: float,
        ttl_s: int,
        max_entries: int = 100_000,
        max_entry_bytes: int = 1024 * 1024,
        timeout_s: float = 0.05,
        embed_timeout_s: float = 0.25,
        workers: int = 2,
        breaker: BreakerConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.embedder = embedder
        self.ns = f"{prefix}cache:sem:{namespace(embedder.version)}:"
        self.log_key = self.ns + "log"
        self.threshold = threshold
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.max_entry_bytes = max_entry_bytes
        self.timeout_s = timeout_s
        self.embed_timeout_s = embed_timeout_s
        self.clock = clock
        self.index = VectorIndex(max_entries=max_entries, clock=clock)
        self.breakers = Breakers(breaker or BreakerConfig(failures=5, window_s=30.0, open_s=15.0))
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nexus-embed")
        self._slots = workers  # free workers: a busy pool is a skipped lookup, never a queue
        self._last_id = "0-0"
        self._sync: asyncio.Task[None] | None = None
        self._closed = False
        self._inflight: dict[bytes, asyncio.Future[tuple[Vector | None, str, str]]] = {}
        self._recent: OrderedDict[bytes, tuple[Vector, str]] = OrderedDict()

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Loads the shared log and tails it, in the background: a node
        with a large log serves at once (with fewer hits until it is in)."""
        self._sync = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        await self.catch_up()
        await self._tail()

    async def close(self) -> None:
        self._closed = True
        if self._sync is not None:
            # The Valkey client may turn a cancellation inside a blocking
            # XREAD into a connection error; the flag ends the loop then,
            # and the wait is bounded whatever happens.
            self._sync.cancel()
            await asyncio.wait({self._sync}, timeout=2.0)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- embedding ---------------------------------------------------------

    async def embed(self, text: str) -> tuple[Vector | None, str, str]:
        """(vector, residue, "") or (None, "", why it was skipped).  The
        residue is what the vector cannot tell apart (``Embedder.residue``).
        Identical prompts
        in flight share one embedding (a burst of the same request, which
        the coalescer then merges, costs one), and recent vectors are kept
        (by a digest of the prompt, not the prompt)."""
        key = hashlib.blake2b(text.encode(), digest_size=16).digest()
        recent = self._recent.get(key)
        if recent is not None:
            self._recent.move_to_end(key)
            return recent[0], recent[1], ""
        shared = self._inflight.get(key)
        if shared is None:
            shared = self._inflight[key] = asyncio.ensure_future(self._embed(text))
            shared.add_done_callback(lambda _: self._inflight.pop(key, None))
        vec, residue, why = await asyncio.shield(shared)
        if vec is not None:
            self._recent[key] = (vec, residue)
            if len(self._recent) > RECENT_VECTORS:
                self._recent.popitem(last=False)
        return vec, residue, why

    def _work(self, text: str) -> tuple[Vector, str]:
        return self.embedder.embed(text), self.embedder.residue(text)

    async def _embed(self, text: str) -> tuple[Vector | None, str, str]:
        if not self.breakers.allow(BREAKER_TARGET):
            return None, "", "breaker_open"
        if self._slots <= 0:
            self.breakers.release(BREAKER_TARGET)
            return None, "", "busy"
        self._slots -= 1
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        fut = loop.run_in_executor(self._pool, self._work, text)

        def done(_: Any) -> None:
            self._slots += 1  # only when the thread is really free again

        fut.add_done_callback(done)
        try:
            async with asyncio.timeout(self.embed_timeout_s):
                vec, residue = await asyncio.shield(fut)
        except TimeoutError:
            self.breakers.failure(BREAKER_TARGET)
            log.warning("semantic cache: the embedder took longer than %.0f ms", self.embed_timeout_s * 1000)
            return None, "", "embed_timeout"
        except PromptTooLong:
            self.breakers.success(BREAKER_TARGET)
            return None, "", "too_long"
        except Exception as exc:
            self.breakers.failure(BREAKER_TARGET)
            log.warning("semantic cache: the embedder failed (%s)", type(exc).__name__)
            return None, "", "embed_error"
        EMBED_SECONDS.observe(time.perf_counter() - started)
        self.breakers.success(BREAKER_TARGET)
        return np.asarray(vec, dtype=np.float32).reshape(DIM), residue, ""

    # -- lookup, fill, poison ------------------------------------------------

    async def lookup(self, partition: str, scope: str, text: str) -> Probe:
        probe = Probe(partition=partition, scope=scope, text=text)
        vec, residue, why = await self.embed(text)
        if vec is None:
            probe.outcome = why
            LOOKUPS.labels(why).inc()
            return probe
        probe.vector = vec
        # What the vector blurs must match exactly (the text the model reads
        # as unknown, numbers, negation): it joins the partition, and so
        # the stored entry's.
        exact = "|".join(filter(None, (residue, guard(text))))
        if exact:
            digest = hashlib.sha256(exact.encode()).hexdigest()[:16]
            partition = probe.partition = f"{partition}:{digest}"
        best = self.index.search(partition, vec, k=1)
        if best and best[0][1] >= self.threshold:
            eid, sim = best[0]
            try:
                found = await self._get(eid, strict=True)
            except Exception as exc:  # fail open: a miss, and the vector stays indexed
                log.warning("semantic cache lookup failed (%s): served as a miss", type(exc).__name__)
                probe.outcome = "store_error"
                found = None
            else:
                if found is None:
                    self.index.remove(eid)  # expired or poisoned on another node
            # The partition is checked again on the entry itself: an index
            # bug must never turn into an answer for another scope.
            if found is not None and found.partition == partition and found.scope == scope:
                probe.hit, probe.hit_id, probe.similarity, probe.outcome = found, eid, sim, "hit"
        LOOKUPS.labels(probe.outcome).inc()
        return probe

    async def fill(self, probe: Probe, entry: Entry, exact_key: str = "") -> str | None:
        """Store an answer under the probe's prompt; returns the entry id."""
        if probe.vector is None or len(entry.body) > self.max_entry_bytes:
            return None
        eid = entry_id(probe.partition, probe.text)
        now = self.clock()
        sem = SemEntry(
            partition=probe.partition,
            scope=probe.scope,
            entry=msgspec.structs.replace(entry, created_at=now),
            exact_key=exact_key,
        )
        expires = now + self.ttl_s
        try:
            async with asyncio.timeout(max(self.timeout_s, 1.0)):
                pipe = self.client.pipeline(transaction=False)
                pipe.set(self.ns + "e:" + eid, _enc.encode(sem), ex=self.ttl_s)
                pipe.xadd(
                    self.log_key,
                    {
                        "op": "add",
                        "id": eid,
                        "p": probe.partition,
                        "v": probe.vector.tobytes(),
                        "x": repr(expires),
                    },
                    maxlen=self.max_entries,
                    approximate=True,
                )
                await pipe.execute()
        except Exception as exc:
            log.warning("semantic cache write failed (%s)", type(exc).__name__)
            return None
        self.index.add(probe.partition, eid, probe.vector, expires)
        return eid

    async def get(self, eid: str) -> SemEntry | None:
        return await self._get(eid)

    async def poison(self, eid: str, exact_prefix: str = "") -> bool:
        """Evict an entry on every node: its Valkey key is deleted (every hit
        reads it, so no node serves it again) and a ``del`` on the log drops
        it from the other nodes' indexes.  The same answer in the exact cache
        goes too.  True when there was such an entry."""
        found = await self._get(eid, strict=True)
        async with asyncio.timeout(max(self.timeout_s, 1.0)):
            pipe = self.client.pipeline(transaction=False)
            pipe.delete(self.ns + "e:" + eid)
            if found is not None and found.exact_key and exact_prefix:
                pipe.delete(exact_prefix + found.exact_key)
            pipe.xadd(self.log_key, {"op": "del", "id": eid}, maxlen=self.max_entries, approximate=True)
            await pipe.execute()
        self.index.remove(eid)
        return found is not None

    async def _get(self, eid: str, strict: bool = False) -> SemEntry | None:
        try:
            async with asyncio.timeout(self.timeout_s):
                raw = await self.client.get(self.ns + "e:" + eid)
        except Exception as exc:
            if strict:
                raise
            log.warning("semantic cache lookup failed (%s): served as a miss", type(exc).__name__)
            return None
        if raw is None:
            return None
        try:
            return _dec.decode(raw)
        except msgspec.DecodeError:
            return None

    # -- the shared index log ---------------------------------------------

    def _apply(
        self, batch: list[tuple[Any, dict[bytes, bytes]]], bulk: bool, index: VectorIndex | None = None
    ) -> None:
        index = index if index is not None else self.index  # (an empty index is falsy)
        now = self.clock()
        adds: dict[str, list[tuple[str, Vector, float]]] = defaultdict(list)
        for msg_id, fields in batch:
            self._last_id = msg_id.decode() if isinstance(msg_id, bytes) else str(msg_id)
            op = fields.get(b"op")
            eid = fields.get(b"id", b"").decode()
            if op == b"del":
                for items in adds.values():
                    items[:] = [it for it in items if it[0] != eid]
                index.remove(eid)
            elif op == b"add":
                expires = float(fields.get(b"x", b"0"))
                raw = fields.get(b"v", b"")
                if expires <= now or len(raw) != DIM * 4:
                    continue
                vec = np.frombuffer(raw, dtype=np.float32)
                part = fields.get(b"p", b"").decode()
                if bulk:
                    adds[part].append((eid, vec, expires))
                else:
                    index.add(part, eid, vec, expires)
        for part, items in adds.items():
            index.add_many(part, items)

    async def catch_up(self) -> None:
        """Load the whole log into a fresh index, built in a worker thread
        (an HNSW graph over 100k vectors takes tens of seconds; faiss
        releases the GIL), then swapped in.  What this node wrote meanwhile
        is in the log after the point loaded, and the tail adds it back."""
        start, pages = "-", []
        try:
            while True:
                async with asyncio.timeout(5.0):
                    page = await self.client.xrange(self.log_key, min=start, count=5000)
                if not page:
                    break
                pages.extend(page)
                last = page[-1][0]
                start = "(" + (last.decode() if isinstance(last, bytes) else str(last))
        except Exception as exc:
            log.warning("semantic cache: loading the index log failed (%s)", type(exc).__name__)
        fresh = VectorIndex(max_entries=self.max_entries, clock=self.clock)
        if pages:
            await asyncio.get_running_loop().run_in_executor(None, self._apply, pages, True, fresh)
        self.index = fresh

    async def _tail(self) -> None:
        while not self._closed:
            try:
                res = await self.client.xread({self.log_key: self._last_id}, count=1000, block=1000)
                for _stream, batch in res or []:
                    self._apply(batch, bulk=False)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._closed:
                    return
                log.warning("semantic cache: tailing the index log failed (%s)", type(exc).__name__)
                await asyncio.sleep(1.0)
