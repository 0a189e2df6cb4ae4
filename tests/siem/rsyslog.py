"""A real syslog receiver for the SIEM tests: Debian's rsyslogd, started by
the test on loopback with a private configuration (plain TCP through
imptcp, TLS through imtcp with the GnuTLS driver, UDP through imudp, RELP
through imrelp), each input writing what it receives to its own file in RFC
5424 form.  It can be restarted on the same ports, as an operator's restart
would, while a forwarder writes to it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.services import free_port

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
# Its default: a longer message is cut (and, octet-counted, the rest is
# read as further bogus messages).
MAX_MESSAGE = 8192


def available() -> bool:
    return os.path.exists(RSYSLOGD)


class Rsyslog:
    def __init__(self, work: Path, cert: Path, key: Path) -> None:
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.tcp_port, self.tls_port, self.udp_port = free_port(), free_port(), free_port()
        self.relp_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.config = work / "rsyslog.conf"
        self.config.write_text(
            f"""
global(
    workDirectory="{work}"
    maxMessageSize="{MAX_MESSAGE}"
    defaultNetstreamDriverCAFile="{cert}"
    defaultNetstreamDriverCertFile="{cert}"
    defaultNetstreamDriverKeyFile="{key}"
)
module(load="imptcp")
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
module(load="imudp")
module(load="imrelp")
{_rulesets(work)}
input(type="imptcp" port="{self.tcp_port}" address="127.0.0.1" ruleset="tcp")
input(type="imtcp" port="{self.tls_port}" address="127.0.0.1" ruleset="tls")
input(type="imudp" port="{self.udp_port}" address="127.0.0.1" ruleset="udp")
input(type="imrelp" port="{self.relp_port}" address="127.0.0.1" ruleset="relp")
"""
        )

    def start(self) -> None:
        log = open(self.work / "rsyslogd.out", "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(self.config), "-i", str(self.work / "rsyslogd.pid")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.starts += 1
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rsyslogd exited: {(self.work / 'rsyslogd.out').read_text()[-2000:]}")
            if all(_listening(p) for p in (self.tcp_port, self.tls_port, self.relp_port)):
                return
            time.sleep(0.05)
        raise RuntimeError("rsyslogd did not start listening")

    def stop(self) -> None:
        """SIGTERM, as systemd stops it: rsyslogd closes its connections,
        works off what it has queued, and exits."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def lines(self, name: str) -> list[bytes]:
        path = self.work / f"{name}.log"
        if not path.exists():
            return []
        return [line for line in path.read_bytes().split(b"\n") if line]


def _rulesets(work: Path) -> str:
    """One ruleset per input, writing RFC 5424 lines to <input>.log."""
    return "\n".join(
        f'ruleset(name="{n}") {{ action(type="omfile" file="{work}/{n}.log"'
        ' template="RSYSLOG_SyslogProtocol23Format") }'
        for n in ("tcp", "tls", "udp", "relp")
    )


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        try:
            s.connect(("127.0.0.1", port))
            return True
        except OSError:
            return False
