"""The gateway's listening socket, accepted in batches.

uvloop (libuv) accepts one connection per loop iteration.  On an idle loop
that is thousands a second; on a saturated one, where an iteration takes
tens of milliseconds, it is a few dozen a second, so new connections wait
in the kernel's accept queue for seconds, where no admission gate can see
them (measured: 800 connections queued there for the whole of a 2x-peak
run, while the loop lag stayed under 100 ms).  Here every readiness of the
socket accepts whatever is pending (up to ``batch``), so a new connection
reaches the gateway within one iteration, and its request is either served
or shed at once with a 429."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

log = logging.getLogger("nexus.gateway")


class Listener:
    def __init__(
        self,
        host: str,
        port: int,
        protocol_factory: Callable[[], asyncio.Protocol],
        *,
        backlog: int = 4096,
        batch: int = 1024,
        reuse_port: bool = False,
    ) -> None:
        self._factory = protocol_factory
        self._batch = batch
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[object]] = set()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # A burst of new connections must queue, not be reset.
        # reuse_port: one of the workers of `nexus gateway --workers N`,
        # which all bind this port; the kernel spreads connections over them.
        self.sock = socket.create_server((host, port), family=family, backlog=backlog, reuse_port=reuse_port)
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]
        self._loop.add_reader(self.sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(self._batch):
            try:
                conn, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE, ENOBUFS...: the next readiness retries
                log.warning("could not accept a connection: %s", exc)
                return
            conn.setblocking(False)
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = self._loop.create_task(self._loop.connect_accepted_socket(self._factory, conn))
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not set up an accepted connection: %s", task.exception())

    def close(self) -> None:
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()
