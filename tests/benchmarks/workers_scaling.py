"""Benchmark: ``nexus gateway --workers 2`` against one worker, side by side
in one run (issue 12, must-show 4).

    python tests/benchmarks/workers_scaling.py [--seconds 15] [--rounds 3] [--connections 64] [--bare]

Two gateways with the production features (``nexus-production.yaml``:
hooks, a quota reservation on Valkey for every request, events to
JetStream; ``--bare``: none), routed to the simulated upstream (no delay):
one started with ``--workers 1``, one with ``--workers 2``.  Nothing is
pinned: the workers share the machine's cores with wrk, the sim, NATS and
Valkey, as on a small deployment.  wrk (closed loop, one thread) drives
each in turn for ``--seconds``; rounds alternate the two so a change in the
machine's load hits both.  Printed: each round's peak (successful
responses a second), p99 and the CPU the gateway's processes used per
request, the cores the gateway's processes and the sim kept busy and the
machine's idle cores (when the gateway does not get more cores with two
workers, the machine had none to give); then the medians and the ratio of
two workers to one.

The ideal ratio is min(cores, 2); what the other processes on the same
cores take (wrk, the sim, NATS, Valkey, and on a shared machine everybody
else) comes off it, for the two-worker gateway more than for the other.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import msgspec

from tests.benchmarks.harness import systems
from tests.benchmarks.harness.loadgen import REPO, ensure_wrk, run_wrk
from tests.benchmarks.harness.procs import spawn, wait_port

PRODUCTION = Path(__file__).with_name("nexus-production.yaml")
_TICKS = os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a supervisor and its workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(") ", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime
    return total


def idle_seconds() -> float:
    """The machine's idle CPU time so far (all cores, /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    return (int(fields[3]) + int(fields[4])) / _TICKS  # idle + iowait


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=15.0, help="each wrk run")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--bare", action="store_true", help="no hooks, quotas or caches: the bare gateway")
    args = p.parse_args()
    wrk = ensure_wrk(allow_install=False)
    if wrk is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="nexus-workers-"))
    sim, sim_url = systems.start_sim("sim", "zero", None, work)
    extra: dict[str, Any] | None = None if args.bare else msgspec.yaml.decode(PRODUCTION.read_bytes())
    gateways: dict[int, tuple[Any, Any]] = {}
    print(
        f"cores available: {len(os.sched_getaffinity(0))}; load average {os.getloadavg()[0]:.1f}", flush=True
    )
    try:
        for workers in (1, 2):
            run_dir = Path(tempfile.mkdtemp(prefix=f"gw{workers}-", dir=work))
            launch = systems.nexus_launch(
                {"zero": sim_url}, run_dir, f"WRK{workers}{secrets.token_hex(4).upper()}", extra
            )
            argv = [*launch.argv[:-1], str(workers)]  # nexus_launch ends with --workers 1
            proc = spawn(
                f"gateway-{workers}w",
                argv,
                log_dir=run_dir,
                cpus=None,
                env={**os.environ, **launch.env},
                cwd=REPO,
            )
            wait_port(proc, launch.port, 120)
            gateways[workers] = (proc, launch)
        for _proc, launch in gateways.values():  # warm: imports, pools, first compiles
            run_wrk(wrk, launch.target("zero"), stream=False, duration_s=3, connections=args.connections,
                    cpus=None, work_dir=work)  # fmt: skip
        peaks: dict[int, list[float]] = {1: [], 2: []}
        for r in range(args.rounds):
            order = (1, 2) if r % 2 == 0 else (2, 1)
            for workers in order:
                proc, launch = gateways[workers]
                pids = _tree(proc.pid)
                before, t0 = cpu_seconds(pids), time.monotonic()
                sim_before, idle_before = cpu_seconds([sim.pid]), idle_seconds()
                res = run_wrk(wrk, launch.target("zero"), stream=False, duration_s=args.seconds,
                              connections=args.connections, cpus=None, work_dir=work)  # fmt: skip
                used = cpu_seconds(pids) - before
                wall = time.monotonic() - t0
                sim_used, idle = cpu_seconds([sim.pid]) - sim_before, idle_seconds() - idle_before
                served = res["rps"] * wall
                peaks[workers].append(res["rps"])
                label = f"{workers} worker{'s' if workers > 1 else ' '}"
                print(
                    f"  round {r + 1}  {label}  {res['rps']:8,.0f} req/s  "
                    f"p99 {res['p99_ms'] or 0:6.1f} ms  errors {res['errors']}  "
                    f"CPU {used / max(served, 1) * 1000:.3f} ms/request; cores used: gateway "
                    f"{used / wall:.2f} ({len(pids)} processes), sim {sim_used / wall:.2f}, "
                    f"idle {idle / wall:.2f}",
                    flush=True,
                )
        one, two = median(peaks[1]), median(peaks[2])
        print(f"\n{'gateway':<12} {'peak req/s (median)':>20}")
        print(f"{'1 worker':<12} {one:>20,.0f}")
        print(f"{'2 workers':<12} {two:>20,.0f}")
        print(f"2 workers / 1 worker: {two / one:.2f}x  ({'bare' if args.bare else 'production features'})")
    finally:
        for proc, launch in gateways.values():
            proc.stop()
            systems.delete_streams(os.environ.get("NEXUS_NATS_URL", "nats://127.0.0.1:4222"), launch.prefix)
        sim.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
