"""The in-process vector index: top-1 by cosine similarity (inner product
of L2-normalised vectors) within one partition.

A partition is everything that must match exactly before two prompts may
share an answer (model namespace, scope, model, endpoint, the rest of the
request); a query only ever looks inside its own, so isolation does not
depend on a filter being applied right.  A small partition is a flat
matrix (exact, a few microseconds); past ``hnsw_from`` vectors it becomes
a faiss HNSW graph (top-1 over 100k x 384 in well under a millisecond).

Removal is a tombstone (HNSW cannot delete): searches skip tombstoned and
expired ids, and a partition is rebuilt once a quarter of it is dead."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from ingress.cache.semantic.embedder import DIM, Vector

_Matrix = npt.NDArray[np.float32]


class _Partition:
    __slots__ = ("dead", "expires", "hnsw", "ids", "rows", "size")

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.rows: _Matrix = np.empty((16, DIM), dtype=np.float32)
        self.size = 0
        self.expires: dict[str, float] = {}
        self.dead: set[str] = set()
        self.hnsw: Any = None


class VectorIndex:
    def __init__(
        self,
        *,
        max_entries: int = 100_000,
        hnsw_from: int = 2048,
        hnsw_m: int = 16,
        ef_search: int = 128,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_entries = max_entries
        self.hnsw_from = hnsw_from
        self.hnsw_m = hnsw_m
        self.ef_search = ef_search
        self.clock = clock
        self._parts: dict[str, _Partition] = {}
        self._where: dict[str, str] = {}  # entry id -> partition
        self.live = 0

    def __len__(self) -> int:
        return self.live

    def __contains__(self, entry_id: str) -> bool:
        part = self._parts.get(self._where.get(entry_id, ""))
        return part is not None and entry_id not in part.dead

    def add(self, partition: str, entry_id: str, vec: Vector, expires_at: float) -> bool:
        """False when the index is full (the entry stays in Valkey; another
        node, or this one after a rebuild, may still index it)."""
        if entry_id in self:
            self._parts[self._where[entry_id]].expires[entry_id] = expires_at
            return True
        if self.live >= self.max_entries:
            return False
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = _Partition()
        part.dead.discard(entry_id)
        if part.size == len(part.rows):
            part.rows = np.concatenate([part.rows, np.empty_like(part.rows)])
        part.rows[part.size] = vec
        part.size += 1
        part.ids.append(entry_id)
        part.expires[entry_id] = expires_at
        self._where[entry_id] = partition
        self.live += 1
        if part.hnsw is False:
            pass  # bulk load: built at the end
        elif part.hnsw is not None:
            part.hnsw.add(part.rows[part.size - 1 : part.size])
        elif part.size >= self.hnsw_from:
            self._build_hnsw(part)
        return True

    def add_many(self, partition: str, items: list[tuple[str, Vector, float]]) -> int:
        """Bulk load (a node catching up from the log): the HNSW graph, if
        any, is built once at the end rather than grown one vector at a time."""
        part = self._parts.get(partition)
        graph = part is not None and part.hnsw is not None
        if part is not None and not graph:
            part.hnsw = False  # no graph while loading
        added = 0
        for eid, vec, exp in items:
            if part is None:
                part = self._parts[partition] = _Partition()
                part.hnsw = False
            added += self.add(partition, eid, vec, exp)
        if part is not None and not graph:
            part.hnsw = None
            if part.size >= self.hnsw_from:
                self._build_hnsw(part)
        return added

    def remove(self, entry_id: str) -> bool:
        partition = self._where.get(entry_id)
        part = self._parts.get(partition or "")
        if part is None or entry_id in part.dead:
            return False
        part.dead.add(entry_id)
        part.expires.pop(entry_id, None)
        self.live -= 1
        if len(part.dead) * 4 >= part.size:
            self._compact(partition or "", part)
        return True

    def search(self, partition: str, vec: Vector, k: int = 1) -> list[tuple[str, float]]:
        """The ``k`` most similar live entries of ``partition``, best first.
        Expired entries met on the way are tombstoned; when the nearest
        ones were all dead, the search widens."""
        part = self._parts.get(partition)
        if part is None or part.size == 0:
            return []
        now = self.clock()
        want = k + min(len(part.dead), 16)
        q = vec.reshape(1, DIM).astype(np.float32, copy=False)
        while True:
            out: list[tuple[str, float]] = []
            expired: list[str] = []
            pairs = self._nearest(part, q, want)
            for row, score in pairs:
                eid = part.ids[row]
                if eid in part.dead:
                    continue
                if part.expires.get(eid, 0.0) <= now:
                    expired.append(eid)
                    continue
                out.append((eid, score))
                if len(out) == k:
                    break
            for eid in expired:
                self.remove(eid)
            if len(out) == k or len(pairs) < want or want >= part.size or partition not in self._parts:
                return out
            part = self._parts[partition]  # (a removal may have compacted it)
            want *= 4

    def _nearest(self, part: _Partition, q: Vector, want: int) -> list[tuple[int, float]]:
        if part.hnsw is not None and part.hnsw is not False:
            scores, rows = part.hnsw.search(q, want)
            return [(int(r), float(s)) for r, s in zip(rows[0], scores[0], strict=True) if r >= 0]
        sims = part.rows[: part.size] @ q[0]
        if part.size > want:
            top = np.argpartition(-sims, want - 1)[:want]
            top = top[np.argsort(-sims[top])]
        else:
            top = np.argsort(-sims)
        return [(int(r), float(sims[r])) for r in top]

    def clear(self) -> None:
        self._parts.clear()
        self._where.clear()
        self.live = 0

    def _build_hnsw(self, part: _Partition) -> None:
        import faiss

        index = faiss.IndexHNSWFlat(DIM, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 40
        index.hnsw.efSearch = self.ef_search
        index.add(part.rows[: part.size])
        part.hnsw = index

    def _compact(self, name: str, part: _Partition) -> None:
        keep = [i for i, eid in enumerate(part.ids) if eid not in part.dead]
        fresh = _Partition()
        for eid in part.dead:
            self._where.pop(eid, None)
        if not keep:
            del self._parts[name]
            return
        fresh.ids = [part.ids[i] for i in keep]
        fresh.rows = np.ascontiguousarray(part.rows[keep])
        fresh.size = len(keep)
        fresh.expires = part.expires
        self._parts[name] = fresh
        if fresh.size >= self.hnsw_from:
            self._build_hnsw(fresh)
