"""After a burst, the gateway gives freed heap back to the OS once traffic
calms (``ingress.heap.IdleTrimmer``)."""

from __future__ import annotations

import sys

import pytest

from ingress import heap

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")


async def test_trims_only_after_growth_and_when_idle() -> None:
    sizes = iter([100, 110, 140, 140, 125, 125, 150])  # MB, one reading per call
    inflight = [0]
    released: list[int] = []

    def rss() -> int:
        return next(sizes) << 20

    def release() -> bool:
        released.append(1)
        return True

    t = heap.IdleTrimmer(lambda: inflight[0], grow_bytes=16 << 20, idle_inflight=4, rss=rss, release=release)
    t._base = rss()  # 100: the size at start
    assert not await t.check()  # 110: grew by 10, under the threshold
    inflight[0] = 10
    assert not await t.check()  # 140: grew enough, but busy
    inflight[0] = 0
    assert await t.check()  # 140: idle now -> trim; the base is re-read (125)
    assert t._base == 125 << 20
    assert not await t.check()  # 125: nothing new
    assert released == [1] and t.trims == 1


@linux_only
async def test_a_fragmented_heap_is_given_back() -> None:
    """Real memory: blocks malloc serves (bigger than pymalloc's 512 bytes),
    every 20th kept alive so glibc cannot shrink its heap top by itself."""
    if heap.resident_bytes() is None or heap._malloc_trim() is None:
        pytest.skip("no /proc/self/statm or malloc_trim")
    blocks = [bytes(4000) + bytes([i % 251]) for i in range(40_000)]  # ~160 MB
    kept = blocks[::20]
    del blocks
    before = heap.resident_bytes()
    t = heap.IdleTrimmer(lambda: 0, grow_bytes=1 << 20)
    t._base = (before or 0) - (64 << 20)  # as if the burst grew the heap by 64 MB
    assert await t.check()
    after = heap.resident_bytes()
    assert before is not None and after is not None
    assert before - after > 50 << 20, (before >> 20, after >> 20)
    assert len(kept) == 2000
