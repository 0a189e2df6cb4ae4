"""``nexus gateway --workers N``: one gateway process per core.

A Python process serves on one core, so a machine with N cores runs N
gateway workers.  Each worker binds the same port with SO_REUSEPORT and
the kernel spreads new connections across them; nothing passes between
them.  The parent only supervises: it reserves the port (so a worker
restarted later binds the same one), starts the workers, restarts one
that dies, forwards SIGHUP (reload) and SIGTERM/SIGINT (stop) to all of
them, and exits when they have stopped.

A worker that dies takes its queued connections with it (reset) unless the
kernel hands them to another worker: set ``net.ipv4.tcp_migrate_req=1``
(Linux 5.14+) on gateway hosts.  New connections go to the live workers.

What is shared, and what is per worker:

- shared through Valkey: quota reservations and counters, rate limits
  (the hook's and the quota's), the exact and semantic response caches'
  entries — exact across workers, as across gateway nodes;
- per worker: its event publisher and outbox (``outbox-<node>-w<i>``),
  node id (``<node>-w<i>``, in every event), the admission gate
  (``gateway.max_inflight`` and load shedding apply to each worker),
  circuit breakers, credential-pool cool-downs, request coalescing
  (identical requests coalesce within a worker), smart-routing and
  token-count caches, the semantic cache's local index.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

log = logging.getLogger("nexus.gateway")

# A worker that dies sooner than this after its start is restarted after a
# growing pause (a config that crashes it must not spin the machine).
_STABLE_S = 10.0
_MAX_PAUSE_S = 30.0


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound (not listening) to ``host:port`` with SO_REUSEPORT:
    it fixes the port when 0 was asked for and holds it for the workers,
    who bind the same address; only listening sockets get connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


@dataclass
class _Worker:
    index: int
    argv: list[str]
    pass_fds: tuple[int, ...] = ()
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    failures: int = 0
    not_before: float = 0.0

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, pass_fds=self.pass_fds)
        self.started = time.monotonic()

    def restart(self) -> None:
        # The start-up pipe is gone by now: a restarted worker announces
        # itself on stdout instead.
        argv, skip = [], False
        for a in self.argv:
            if skip:
                skip = False
            elif a == "--ready-fd":
                skip = True
            else:
                argv.append(a)
        self.argv, self.pass_fds = argv, ()
        self.start()


@dataclass
class Supervisor:
    """Runs one process per command line until told to stop."""

    workers: list[_Worker] = field(default_factory=list)
    stopping: bool = False

    @classmethod
    def of(cls, argvs: Sequence[list[str]], pass_fds: tuple[int, ...] = ()) -> Supervisor:
        return cls([_Worker(i, list(a), pass_fds) for i, a in enumerate(argvs)])

    def start_all(self) -> None:
        for w in self.workers:
            w.start()

    def any_exited(self) -> bool:
        return any(w.proc is not None and w.proc.poll() is not None for w in self.workers)

    def signal_all(self, sig: int) -> None:
        for w in self.workers:
            if w.proc is not None and w.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(sig)

    def run(self) -> int:
        """Until SIGINT/SIGTERM: restart the workers that die (after a
        growing pause when they die young), forward SIGHUP; then stop them
        all and return 0."""

        def stop(_signum: int, _frame: object) -> None:
            self.stopping = True
            self.signal_all(signal.SIGTERM)

        def reload(_signum: int, _frame: object) -> None:
            self.signal_all(signal.SIGHUP)

        previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, reload)
        try:
            while not self.stopping:
                time.sleep(0.2)
                self._tend(time.monotonic())
            self.run_until_stopped()
            return 0
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _tend(self, now: float) -> None:
        for w in self.workers:
            if w.proc is None:
                if now >= w.not_before and not self.stopping:
                    w.restart()
                continue
            code = w.proc.poll()
            if code is None or self.stopping:
                continue
            lived = now - w.started
            w.failures = 0 if lived >= _STABLE_S else w.failures + 1
            pause = min(_MAX_PAUSE_S, 0.5 * 2**w.failures) if w.failures else 0.0
            log.warning(
                "gateway worker %d exited with %s after %.1f s; restarting in %.1f s",
                w.index,
                code,
                lived,
                pause,
            )
            w.proc, w.not_before = None, now + pause

    def run_until_stopped(self, timeout_s: float = 30.0) -> None:
        """Wait for every worker to exit (they were signalled), killing
        those that take longer than ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        for w in self.workers:
            if w.proc is None:
                continue
            try:
                w.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("gateway worker %d did not stop in time: killed", w.index)
                w.proc.kill()
                w.proc.wait()


def die_with_parent(parent: int) -> None:
    """A worker ends when its supervisor does, even killed outright (no
    orphan keeps the port): Linux sends it SIGTERM when the parent dies."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return
    if os.getppid() != parent:  # it died before the request above took effect
        os.kill(os.getpid(), signal.SIGTERM)


def worker_argv(argv: Sequence[str], index: int, port: int) -> list[str]:
    """The command line of worker ``index``: this command with
    ``--workers`` replaced by the worker's own index, the port fixed and
    this supervisor as its ``--parent``."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--workers", "--port", "--parent"):
            skip = True
            continue
        if a.startswith(("--workers=", "--port=", "--parent=")):
            continue
        out.append(a)
    command = [sys.executable, "-m", "nexus.cli", "gateway", *out]
    return [*command, "--port", str(port), "--worker-index", str(index), "--parent", str(os.getpid())]
