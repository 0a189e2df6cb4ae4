"""The keeper: a small process that ends what ``nexus up`` started when
``nexus up`` ends without stopping it (SIGKILL, the OOM killer, a crash).

A parent-death signal cannot cover those children: Postgres and Valkey
daemonize (their launchers fork the server and exit, so the server's parent
is init, not ``nexus up``), and nats-server is forked by a worker thread,
whose end, not the process's, would fire the signal.  So ``nexus up``
starts the keeper first, in a session of its own (a Ctrl-C or a kill of
the process group reaches ``nexus up`` only), and holds the one write end
of a pipe that is the keeper's stdin.  The kernel closes that end however
``nexus up`` ends; the keeper then reads EOF.

Each line ``nexus up`` writes names a process it started: ``keep <pid>
<start> <signal> <name>``, ``start`` being the process's start time (in
clock ticks since boot, ``/proc/<pid>/stat``), so a pid the kernel has
since given to another process is left alone.  At EOF the keeper signals
each that still runs, newest first (the gateway before the services it
uses), with the signal that stops it cleanly (Postgres: SIGINT, its fast
shutdown, which removes ``postmaster.pid``), and SIGKILLs one that is still
there after the grace period.  After a clean stop nothing it keeps is
left, and it exits at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

GRACE_S = 30.0


def start_time(pid: int) -> int:
    """The process's start time in clock ticks since boot (0 when it is
    gone, or on a system without ``/proc``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    # the command name (field 2) may hold spaces: split after its ")"
    fields = stat.rsplit(")", 1)[1].split()
    return 0 if fields[0] == "Z" else int(fields[19])


@dataclass(frozen=True)
class Kept:
    pid: int
    start: int
    signal: int
    name: str

    def running(self) -> bool:
        return start_time(self.pid) == self.start != 0

    def stop(self, grace_s: float) -> bool:
        """Signal it and wait for it to end; whether it had to be killed."""
        if not self.running():
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, self.signal)
        deadline = time.monotonic() + grace_s
        while self.running():
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                return True
            time.sleep(0.05)
        return False


class Keeper:
    """``nexus up``'s end of the keeper: the write end of its pipe."""

    def __init__(self, proc: subprocess.Popen[bytes], pipe: IO[bytes]) -> None:
        self.proc = proc
        self._pipe = pipe

    @classmethod
    def start(cls) -> Keeper:
        read, write = os.pipe()  # neither end is inherited by what nexus up starts later
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "nexus.keeper"],
                stdin=read,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
        except BaseException:
            os.close(write)
            raise
        finally:
            os.close(read)
        return cls(proc, os.fdopen(write, "wb", buffering=0))

    def keep(self, name: str, pid: int, sig: int = signal.SIGTERM) -> None:
        """Have the keeper stop ``pid`` with ``sig`` if nexus up dies first."""
        self._pipe.write(f"keep {pid} {start_time(pid)} {int(sig)} {name}\n".encode())

    def close(self, timeout_s: float = 2 * GRACE_S) -> None:
        """Nexus up stopped what it started: the keeper stops whatever did
        not stop (nothing, normally) and exits."""
        self._pipe.close()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def parse(line: str) -> Kept | None:
    parts = line.split(maxsplit=4)
    if len(parts) != 5 or parts[0] != "keep":
        return None
    return Kept(pid=int(parts[1]), start=int(parts[2]), signal=int(parts[3]), name=parts[4].strip())


def main() -> int:
    # In its own session already; a hangup or Ctrl-C meant for the terminal
    # must not end it before nexus up's pipe does.
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    kept = [k for k in map(parse, sys.stdin) if k is not None]  # until nexus up's end closes
    stopped = []
    for k in reversed(kept):
        if k.running():
            killed = k.stop(GRACE_S)
            stopped.append(f"{k.name} (pid {k.pid}{', killed' if killed else ''})")
    if stopped:
        with contextlib.suppress(OSError, ValueError):
            print(
                f"nexus up ended without stopping; the keeper stopped {', '.join(stopped)}", file=sys.stderr
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
