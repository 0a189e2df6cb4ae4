"""A py-spy profile of the Nexus gateway under peak load: a flame graph
(``profile.svg``) and the raw collapsed stacks (``profile.txt``) with a
summary of the hot spots (self and inclusive time per function)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tests.benchmarks.harness.procs import pinned

PY_SPY_VERSION = "0.4.3"
RATE_HZ = 200


def ensure_py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    found = shutil.which("py-spy") or (str(here) if here.exists() else None)
    if found:
        return found
    print(f"  py-spy is missing: pip install py-spy=={PY_SPY_VERSION}", flush=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", f"py-spy=={PY_SPY_VERSION}"],
        capture_output=True,
        timeout=300,
        check=False,
    )
    return str(here) if here.exists() else shutil.which("py-spy")


_LINE = re.compile(r"\s*\(([^()]*?):\d+\)$")


def _function(frame: str) -> str:
    # "handle (ingress/gateway/chat.py:123)" -> "handle (ingress/gateway/chat.py)"
    return _LINE.sub(lambda m: f" ({m.group(1)})", frame.strip())


def summarize(raw: str, top: int = 20) -> str:
    """Self and inclusive share of samples per function, from py-spy's raw
    (collapsed stack) output."""
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_function(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += n
        self_c[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    if not total:
        return "no samples"
    out = [f"{total} samples", "", "self time (where the CPU is):"]
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in self_c.most_common(top)]
    out += ["", "inclusive time (what it is spent under; the entry-point chain left out):"]
    # The frames every request runs under (runpy, the CLI, the event loop's
    # run) share the top count and say nothing: drop that chain.
    root = max(incl.values())
    useful = [(f, c) for f, c in incl.most_common() if c < root]
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in useful[:top]]
    return "\n".join(out)


def take_profile(
    pid: int, out_dir: Path, seconds: float, cpus: tuple[int, ...] | None, load: Callable[[], float]
) -> str:
    """Profile ``pid`` while ``load()`` drives it; returns a Markdown note."""
    spy = ensure_py_spy()
    if spy is None:
        return "not taken: py-spy could not be installed"
    out_dir.mkdir(parents=True, exist_ok=True)
    svg, raw = out_dir / "profile.svg", out_dir / "profile.txt"
    procs = []
    for fmt, path in (("flamegraph", svg), ("raw", raw)):
        # --nonblocking: py-spy reads the process's memory without pausing
        # it, so the gateway is not slowed by the sampling itself (the
        # samplers run on the load generator's CPU).
        argv = [spy, "record", "-o", str(path), "--pid", str(pid), "--duration", str(round(seconds))]
        argv += ["--rate", str(RATE_HZ), "--nonblocking", "--format", fmt]
        procs.append(subprocess.Popen(pinned(argv, cpus), stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    time.sleep(0.5)
    try:
        rps = load()
    except Exception as exc:
        rps = 0.0
        print(f"  load during profiling failed: {exc}", flush=True)
    logs = []
    for p in procs:
        try:
            log, _ = p.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            p.kill()
            log, _ = p.communicate()
        logs.append(log.decode(errors="replace")[-300:])
    if procs[0].returncode != 0 or not svg.exists():
        return f"py-spy failed (exit {procs[0].returncode}): {logs[0]}"
    summary = summarize(raw.read_text()) if raw.exists() else "raw stacks not written: " + logs[1]
    (out_dir / "profile-top.txt").write_text(summary + "\n")
    return (
        f"[profile.svg](profile.svg) (flame graph) and [profile.txt](profile.txt) (collapsed stacks): "
        f"py-spy {PY_SPY_VERSION} on the Nexus gateway for {seconds:.0f} s at {RATE_HZ} Hz under "
        f"wrk non-stream peak load ({rps:,.0f} RPS while sampled).\n\n```\n{summary}\n```"
    )
