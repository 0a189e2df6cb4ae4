"""Processes the harness starts: CPU pinning, readiness, clean stop, and
resource accounting (RSS and CPU time of a process tree) from /proc."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class CorePlan:
    """Which CPUs the system under test, the load generator and the simulated
    upstream run on.  ``None`` means "not pinned" (a 1-core machine)."""

    sut: tuple[int, ...] | None
    load: tuple[int, ...] | None
    sim: tuple[int, ...] | None

    @classmethod
    def for_machine(cls) -> CorePlan:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 3:
            return cls((cpus[0],), (cpus[1],), (cpus[2],))
        if len(cpus) == 2:
            # The upstream shares the load generator's core: it is part of the
            # test rig, and the system under test must have its core alone.
            return cls((cpus[0],), (cpus[1],), (cpus[1],))
        return cls(None, None, None)

    def describe(self) -> str:
        if self.sut is None:
            return "not pinned: this machine has a single CPU, so every process shares it"
        return (
            f"taskset: system under test on CPU {_fmt(self.sut)}; load generator (wrk / open-loop client) "
            f"on CPU {_fmt(self.load)}; simulated upstream on CPU {_fmt(self.sim)} (for the 'direct' "
            f"rows the simulated upstream IS the system under test, on CPU {_fmt(self.sut)})"
        )


SHARED_SERVICES = ("nats-server", "redis-server", "valkey-server")


def pin_shared_services(cpus: tuple[int, ...] | None) -> tuple[str, list[tuple[int, set[int]]]]:
    """Move the machine's NATS and Valkey/Redis servers onto ``cpus`` (the
    load generator's) for the run, so the system under test has its core to
    itself: in a deployment they run on other hosts, and their CPU is not
    the gateway's.  Returns a description and what to restore."""
    if cpus is None:
        return "NATS and Valkey not pinned (single CPU)", []
    moved: list[tuple[int, set[int]]] = []
    names: list[str] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            if comm not in SHARED_SERVICES:
                continue
            pid = int(entry.name)
            before = os.sched_getaffinity(pid)
            os.sched_setaffinity(pid, cpus)
        except (OSError, ValueError):
            continue  # gone, or not ours to move
        moved.append((pid, before))
        names.append(f"{comm}[{pid}]")
    if not moved:
        return "NATS and Valkey not pinned (none found, or not permitted)", []
    return f"NATS and Valkey ({', '.join(sorted(names))}) pinned to CPU {_fmt(cpus)} for the run", moved


def restore_affinity(moved: list[tuple[int, set[int]]]) -> None:
    for pid, before in moved:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, before)


def _fmt(cpus: tuple[int, ...] | None) -> str:
    return "any" if cpus is None else ",".join(map(str, cpus))


# Scheduling priority of everything the harness starts (``--nice``).  On a
# machine shared with other work, a negative value (root only) keeps other
# processes from taking the pinned cores mid-measurement; 0 leaves it alone.
_NICE = 0


def set_nice(value: int) -> None:
    global _NICE
    if not -20 <= value <= 19:
        raise ValueError("nice must be between -20 and 19")
    _NICE = value
    if value:
        # wrk and the open-loop client run in the harness's own session
        set_autogroup_nice(os.getpid(), value)


def set_autogroup_nice(pid: int, value: int) -> None:
    """With autogroup scheduling (Linux's default for desktops and many
    VMs), CPU is shared between *sessions* first, and a process's nice only
    counts inside its session: the session's own nice has to be set too."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text(str(value))


def pinned(argv: Sequence[str], cpus: tuple[int, ...] | None) -> list[str]:
    out = list(argv)
    if cpus is not None:
        out = ["taskset", "-c", ",".join(map(str, cpus)), *out]
    if _NICE:
        out = ["nice", "-n", str(_NICE), *out]
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    """A child process with its log file; stopped by pid (and its own
    process group), never by name."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        if not self.alive():
            return
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            self.popen.wait(5)


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    log_dir: Path,
    cpus: tuple[int, ...] | None,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> Proc:
    log_path = log_dir / f"{name}.log"
    log = log_path.open("ab")
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    popen = subprocess.Popen(
        pinned(argv, cpus),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=full_env,
        cwd=cwd,
        # Its own process group: stop() signals the group, which reaches the
        # workers a peer may fork, and nothing else on the machine.
        start_new_session=True,
    )
    log.close()
    if _NICE:
        set_autogroup_nice(popen.pid, _NICE)  # its new session is its own autogroup
    return Proc(name, popen, log_path)


def wait_port(proc: Proc, port: int, timeout: float) -> None:
    """Wait until something accepts on 127.0.0.1:port, or fail with the
    process's own last log lines."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(
                f"{proc.name} exited with status {proc.popen.returncode} before listening:\n{proc.log_tail()}"
            )
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(
        f"{proc.name} did not listen on 127.0.0.1:{port} within {timeout:.0f}s:\n{proc.log_tail()}"
    )


# --- resource accounting from /proc ----------------------------------------


def _children(pid: int) -> list[int]:
    out: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    try:
        tasks = list(task_dir.iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += _children(p)
    return pids


def _rss_bytes(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/statm").read_text().split()
    except OSError:
        return 0
    return int(fields[1]) * _PAGE


def _cpu_seconds(pid: int) -> float:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # the command name (field 2) may contain spaces: split after its ')'
    rest = raw[raw.rindex(")") + 2 :].split()
    utime, stime = int(rest[11]), int(rest[12])
    return (utime + stime) / _CLK_TCK


@dataclass
class TreeUsage:
    rss_bytes: int
    cpu_seconds: float


def usage(root_pids: Sequence[int]) -> TreeUsage:
    rss, cpu = 0, 0.0
    for root in root_pids:
        for p in tree(root):
            rss += _rss_bytes(p)
            cpu += _cpu_seconds(p)
    return TreeUsage(rss, cpu)


@dataclass
class Meter:
    """Samples the RSS of process trees every ``interval`` seconds in a
    thread; ``phase()`` brackets one measurement (peak RSS, CPU cores used)."""

    root_pids: list[int]
    interval: float = 0.1
    _peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Meter:
        self._thread = threading.Thread(target=self._run, name="rss-meter", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            rss = usage(self.root_pids).rss_bytes
            with self._lock:
                self._peak = max(self._peak, rss)

    def reset_peak(self) -> None:
        with self._lock:
            self._peak = usage(self.root_pids).rss_bytes

    def peak(self) -> int:
        with self._lock:
            return max(self._peak, usage(self.root_pids).rss_bytes)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)


def cores_busy_seconds(cpus: tuple[int, ...] | None) -> float:
    """Busy (non-idle, non-iowait) CPU seconds of the given CPUs so far."""
    if not cpus:
        return 0.0
    wanted = {f"cpu{c}" for c in cpus}
    total = 0.0
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return 0.0
    for line in lines:
        cols = line.split()
        if cols and cols[0] in wanted:
            vals = [int(v) for v in cols[1:9]]
            total += (sum(vals) - vals[3] - vals[4]) / _CLK_TCK
    return total


@dataclass
class PhaseUsage:
    peak_rss_bytes: int
    cpu_cores: float
    # CPU the system under test's core spent on anything else during the
    # phase: on a shared machine this is the noise in the figures.
    foreign_cores: float | None = None


class Phase:
    """``with Phase(meter, sut_cpus) as ph: ...`` then ``ph.result``."""

    def __init__(self, meter: Meter, sut_cpus: tuple[int, ...] | None = None) -> None:
        self.meter = meter
        self.sut_cpus = sut_cpus
        self.result = PhaseUsage(0, 0.0)

    def __enter__(self) -> Phase:
        self.meter.reset_peak()
        self._cpu0 = usage(self.meter.root_pids).cpu_seconds
        self._busy0 = cores_busy_seconds(self.sut_cpus)
        self._t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = max(time.monotonic() - self._t0, 1e-9)
        cpu = max(usage(self.meter.root_pids).cpu_seconds - self._cpu0, 0.0)
        foreign = None
        if self.sut_cpus:
            busy = cores_busy_seconds(self.sut_cpus) - self._busy0
            foreign = max(busy - cpu, 0.0) / wall
        self.result = PhaseUsage(self.meter.peak(), cpu / wall, foreign)


def settle(meter: Meter, *, idle_cores: float = 0.05, timeout: float = 15.0) -> float:
    """Wait until the system under test has gone quiet (a peer may still be
    working off the queue a closed-loop run left behind), so one phase does
    not bleed into the next.  Returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        c0 = usage(meter.root_pids).cpu_seconds
        time.sleep(0.3)
        if (usage(meter.root_pids).cpu_seconds - c0) / 0.3 < idle_cores:
            break
    return time.monotonic() - t0
