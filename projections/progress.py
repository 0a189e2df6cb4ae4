"""A plain-text progress bar on stderr: redrawn in place on a terminal, a
line per 10 % otherwise (logs stay readable)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    def __init__(self, *, out: TextIO | None = None, width: int = 30) -> None:
        self.total = 0
        self.out = out if out is not None else sys.stderr
        self.width = width
        self._tty = self.out.isatty()
        self._started = time.monotonic()
        self._label = ""
        self._base = 0
        self._last_draw = 0.0
        self._last_decile = -1

    def begin(self, label: str, base: int = 0) -> None:
        """Start a new bar; ``base`` is the sequence progress counts from
        (0 for a replay, which always starts at the beginning)."""
        self._label = label
        self._base = base
        self._started = time.monotonic()
        self._last_decile = -1

    def __call__(self, label: str, position: int, total: int) -> None:
        self.total = total
        if label != self._label:
            self.begin(label)
        done = max(position - self._base, 0)
        span = max(self.total - self._base, 1)
        frac = min(done / span, 1.0)
        now = time.monotonic()
        rate = done / max(now - self._started, 1e-9)
        filled = int(frac * self.width)
        line = (
            f"replay {label:<8} [{'#' * filled}{'.' * (self.width - filled)}] "
            f"{frac * 100:5.1f}% {done}/{span} events {rate:,.0f}/s"
        )
        if self._tty:
            if now - self._last_draw >= 0.1 or frac >= 1.0:
                self.out.write("\r" + line)
                if frac >= 1.0:
                    self.out.write("\n")
                self.out.flush()
                self._last_draw = now
        else:
            decile = int(frac * 10)
            if decile != self._last_decile:
                self.out.write(line + "\n")
                self.out.flush()
                self._last_decile = decile
