"""Run a module under ``cProfile``, switched on and off by signals.

    python -m tests.benchmarks.harness.pyprofile STATS_FILE -m module [args...]

SIGUSR1 starts profiling the main thread, SIGUSR2 stops it and writes the
stats to STATS_FILE (``pstats`` format): the benchmark warms the process
up first and profiles only the requests it counts
(``instructions.py --py-calls``)."""

from __future__ import annotations

import cProfile
import runpy
import signal
import sys
from types import FrameType


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "-m":
        sys.exit("usage: python -m tests.benchmarks.harness.pyprofile STATS_FILE -m module [args...]")
    out, module = sys.argv[1], sys.argv[3]
    prof = cProfile.Profile()

    def start(_sig: int, _frame: FrameType | None) -> None:
        prof.enable()

    def stop(_sig: int, _frame: FrameType | None) -> None:
        prof.disable()
        prof.dump_stats(out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    sys.argv = [module, *sys.argv[4:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
