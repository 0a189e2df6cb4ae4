"""Give freed heap back to the OS after a start-up step that allocates a lot
of short-lived memory (compiling the Hyperscan pre-scans, loading a BPE
table).  glibc keeps such memory in its arenas, resident, unless asked to
trim: ~15 MB on the gateway's start-up.  A no-op where ``malloc_trim`` does
not exist (musl, macOS)."""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable


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
