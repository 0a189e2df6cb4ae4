"""Give freed heap back to the OS after a start-up step that allocates a lot
of short-lived memory (compiling the Hyperscan pre-scans, loading a BPE
table).  glibc keeps such memory in its arenas, resident, unless asked to
trim: ~15 MB on the gateway's start-up.  A no-op where ``malloc_trim`` does
not exist (musl, macOS)."""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os
import sys
from collections.abc import Callable

from streams.tasks import stop_tasks


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None).malloc_trim  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    trim: Callable[[int], int] = fn
    return trim


def trim() -> bool:
    """Release free heap pages of every malloc arena; True if anything was."""
    fn = _malloc_trim()
    return bool(fn(0)) if fn is not None else False


def resident_bytes() -> int | None:
    """This process's resident set size (Linux), else None."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class IdleTrimmer:
    """Give the heap a burst left behind back to the OS once traffic calms.

    Under overload the gateway holds thousands of connections and their
    buffers; when they close, glibc keeps the freed pages resident, and an
    operator sees a gateway that grew 80 MB in a spike and never came back
    down (which reads as a leak, and counts against a container's memory
    limit).  Every ``interval_s`` this checks the resident set; when it has
    grown by ``grow_bytes`` since the last trim and fewer than
    ``idle_inflight`` requests are in flight, ``malloc_trim`` runs in a
    worker thread (it releases the GIL) and the new size becomes the base."""

    def __init__(
        self,
        inflight: Callable[[], int],
        *,
        interval_s: float = 30.0,
        grow_bytes: int = 16 << 20,
        idle_inflight: int = 16,
        rss: Callable[[], int | None] = resident_bytes,
        release: Callable[[], bool] = trim,
    ) -> None:
        self._inflight = inflight
        self._interval = interval_s
        self._grow = grow_bytes
        self._idle = idle_inflight
        self._rss = rss
        self._release = release
        self._base: int | None = None
        self._task: asyncio.Task[None] | None = None
        self.trims = 0

    def start(self) -> None:
        if self._task is None and _malloc_trim() is not None:
            self._base = self._rss()
            self._task = asyncio.create_task(self._run(), name="heap-idle-trim")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await stop_tasks(task)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.check()

    async def check(self) -> bool:
        """One check; True when it trimmed."""
        now = self._rss()
        if now is None:
            return False
        if self._base is None or now < self._base:
            self._base = now
            return False
        if now - self._base < self._grow or self._inflight() >= self._idle:
            return False
        await asyncio.to_thread(self._release)
        self.trims += 1
        self._base = self._rss()
        return True
