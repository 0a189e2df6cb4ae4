"""A plain-text progress bar on stderr: redrawn in place on a terminal, a
line per 10 % otherwise (logs stay readable).  A replay reports every store
it rebuilds after each batch (they share one reader); each label keeps its
own start time and deciles."""

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
        self._last_draw = 0.0
        # label -> [started, base, last decile printed]
        self._bars: dict[str, list[float]] = {}

    def begin(self, label: str, base: int = 0) -> None:
        """Start a new bar; ``base`` is the sequence progress counts from
        (0 for a replay, which always starts at the beginning)."""
        self._bars[label] = [time.monotonic(), float(base), -1.0]

    def __call__(self, label: str, position: int, total: int) -> None:
        self.total = total
        if label not in self._bars:
            self.begin(label)
        bar = self._bars[label]
        started, base = bar[0], int(bar[1])
        done = max(position - base, 0)
        span = max(self.total - base, 1)
        frac = min(done / span, 1.0)
        now = time.monotonic()
        rate = done / max(now - started, 1e-9)
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
            if decile != bar[2]:
                self.out.write(line + "\n")
                self.out.flush()
                bar[2] = decile
