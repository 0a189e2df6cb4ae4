"""Semantic-cache figures (a script, not a pytest test).

- ``embed``: one prompt through the packaged all-MiniLM-L6-v2 int8 model on
  one thread (a short question, and a ~200-token prompt), p50/p99;
- ``index top-1``: ``VectorIndex.search`` over ``--entries`` vectors in one
  partition (faiss HNSW past 2048), p50/p99, and its recall@1 for queries
  that are slightly perturbed stored vectors;
- ``lookup``: index top-1 plus the Valkey GET of the entry a hit reads
  (``SemanticCache`` without the embedding), when Valkey answers.

The vectors are synthetic but shaped like prompt embeddings (clusters of
related prompts on the unit sphere, 384 dimensions); embedding 100k real
prompts would take over an hour on this machine.

    python tests/benchmarks/semantic_cache.py [--entries 100000] [--queries 2000] [--quick]

NEXUS_VALKEY_URL (default redis://127.0.0.1:6379/0); keys go under a
throwaway prefix, deleted afterwards.  The last line is the figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from ingress.cache.semantic.cache import SemanticCache  # noqa: E402
from ingress.cache.semantic.embedder import DIM, MiniLMEmbedder  # noqa: E402
from ingress.cache.semantic.index import VectorIndex  # noqa: E402
from ingress.cache.store import Entry  # noqa: E402

SHORT = "How do I undo the last git commit without losing my changes?"
LONG = " ".join(
    ["Our service logs show intermittent timeouts when the gateway talks to the upstream provider."] * 12
)[:1100]


def pct(xs: list[float], p: int) -> float:
    return statistics.quantiles(xs, n=100)[p - 1] if len(xs) > 1 else xs[0]


def vectors(n: int, rng: np.random.Generator) -> np.ndarray[Any, np.dtype[np.float32]]:
    centres = rng.standard_normal((max(n // 50, 1), DIM)).astype(np.float32)
    v = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def bench_embed(n: int) -> dict[str, Any]:
    t = time.perf_counter()
    emb = MiniLMEmbedder(threads=1)
    load_s = time.perf_counter() - t
    out: dict[str, Any] = {"model_load_s": round(load_s, 2)}
    for name, text in (("short", SHORT), ("long", LONG)):
        tokens = len(emb._tokenizer.encode(text).ids)
        for _ in range(3):
            emb.embed(text)
        times = []
        for _ in range(n):
            t = time.perf_counter()
            emb.embed(text)
            times.append((time.perf_counter() - t) * 1000)
        out[f"embed_{name}_tokens"] = tokens
        out[f"embed_{name}_p50_ms"] = round(pct(times, 50), 2)
        out[f"embed_{name}_p99_ms"] = round(pct(times, 99), 2)
        print(f"embed {name:>10} ({tokens} tokens): p50 {pct(times, 50):.2f} ms  p99 {pct(times, 99):.2f} ms")
    out.update(labelled(emb))
    return out


def labelled(emb: MiniLMEmbedder, threshold: float = 0.93) -> dict[str, Any]:
    """The labelled set of tests/semantic_cache, pair by pair, as the cache
    decides: the exact part (unknown text, numbers, negations) must match,
    then the cosine must reach the threshold."""
    from ingress.cache.semantic.guard import guard
    from tests.semantic_cache.labelled import DIFFERENT, LOOSE_PARAPHRASES, PARAPHRASES

    def hits(pairs: list[tuple[str, str]]) -> int:
        n = 0
        for a, b in pairs:
            same = (emb.residue(a), guard(a)) == (emb.residue(b), guard(b))
            n += same and float(emb.embed(a) @ emb.embed(b)) >= threshold
        return n

    para, loose, diff = hits(PARAPHRASES), hits(LOOSE_PARAPHRASES), hits(DIFFERENT)
    print(
        f"labelled set at {threshold}: {para}/{len(PARAPHRASES)} paraphrases hit, "
        f"{loose}/{len(LOOSE_PARAPHRASES)} loose paraphrases hit, "
        f"{diff}/{len(DIFFERENT)} different questions hit"
    )
    return {
        "labelled_paraphrase_hits": f"{para}/{len(PARAPHRASES)}",
        "labelled_loose_hits": f"{loose}/{len(LOOSE_PARAPHRASES)}",
        "labelled_false_hits": f"{diff}/{len(DIFFERENT)}",
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description="semantic cache: embed time and index top-1 latency")
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--quick", action="store_true", help="20k entries, 500 queries")
    args = ap.parse_args()
    if args.quick:
        args.entries, args.queries = 20_000, 500
    figures: dict[str, Any] = {"entries": args.entries}
    figures.update(bench_embed(50 if args.quick else 200))

    rng = np.random.default_rng(7)
    data = vectors(args.entries, rng)
    ids = [f"e{i}" for i in range(args.entries)]
    index = VectorIndex(max_entries=args.entries)
    t = time.perf_counter()
    index.add_many("p", [(ids[i], data[i], 1e12) for i in range(args.entries)])
    build_s = time.perf_counter() - t
    picks = rng.integers(0, args.entries, args.queries)
    queries = data[picks] + 0.01 * rng.standard_normal((args.queries, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    times, found = [], 0
    for q, want in zip(queries, picks, strict=True):
        t = time.perf_counter()
        best = index.search("p", q)
        times.append((time.perf_counter() - t) * 1000)
        found += bool(best) and best[0][0] == ids[want]
    figures.update(
        index_build_s=round(build_s, 1),
        index_top1_p50_ms=round(pct(times, 50), 3),
        index_top1_p99_ms=round(pct(times, 99), 3),
        index_recall_at_1=round(found / args.queries, 4),
    )
    print(
        f"index top-1 over {args.entries} x {DIM}: p50 {pct(times, 50):.3f} ms  p99 {pct(times, 99):.3f} ms  "
        f"recall@1 {found / args.queries:.3f}  (built in {build_s:.1f} s)"
    )

    figures.update(await bench_lookup(index, ids, queries, picks))
    print(json.dumps(figures))


async def bench_lookup(index: VectorIndex, ids: list[str], queries: Any, picks: Any) -> dict[str, Any]:
    import valkey.asyncio as avalkey

    client = avalkey.from_url(os.environ.get("NEXUS_VALKEY_URL", "redis://127.0.0.1:6379/0"))  # type: ignore[no-untyped-call]
    prefix = f"bench:{secrets.token_hex(4)}:"

    class Stub:  # the index is already built: no embedding in this figure
        version = "bench"

        def embed(self, text: str) -> Any:
            raise AssertionError

        def residue(self, text: str) -> str:
            raise AssertionError

    cache = SemanticCache(client, prefix, Stub(), threshold=0.9, ttl_s=300)
    cache.index = index
    try:
        entry = Entry(kind="response", content_type="application/json", body=b"x" * 800)
        from ingress.cache.semantic.cache import SemEntry, _enc

        wanted = sorted({ids[int(i)] for i in picks})
        pipe = client.pipeline(transaction=False)
        for eid in wanted:
            pipe.set(
                cache.ns + "e:" + eid, _enc.encode(SemEntry(partition="p", scope="s", entry=entry)), ex=300
            )
        await pipe.execute()
        times = []
        for q in queries:
            t = time.perf_counter()
            best = index.search("p", q)
            if best:
                await cache.get(best[0][0])
            times.append((time.perf_counter() - t) * 1000)
        print(f"lookup (index + Valkey GET): p50 {pct(times, 50):.3f} ms  p99 {pct(times, 99):.3f} ms")
        return {"lookup_p50_ms": round(pct(times, 50), 3), "lookup_p99_ms": round(pct(times, 99), 3)}
    except Exception as exc:
        print(f"lookup with Valkey: skipped ({type(exc).__name__})")
        return {}
    finally:
        keys = [k async for k in client.scan_iter(f"{prefix}*", count=1000)]
        for i in range(0, len(keys), 1000):
            await client.delete(*keys[i : i + 1000])
        await client.aclose()
        await cache.close()


if __name__ == "__main__":
    asyncio.run(main())
