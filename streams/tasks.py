"""Stopping a task for sure.

On Python 3.11 ``asyncio.wait_for`` can swallow a cancellation: when the
future it waits on completes in the same loop pass as ``cancel()``, it
returns the result and the ``CancelledError`` is lost (CPython gh-86296;
3.12 rebuilt ``wait_for`` on ``asyncio.timeout``).  nats-py's request (a KV
put, a publish awaiting its ack, a consumer call) is built on ``wait_for``,
so a task looping on NATS under load can outlive one ``cancel()``, and the
usual ``task.cancel(); await task`` then waits forever: a shutdown that
hangs, or, as it did in CI, a test that spends its whole timeout there.
``stop_tasks`` cancels again until every task has ended.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

log = logging.getLogger(__name__)

_AGAIN_S = 0.2  # how long a cancelled task gets before it is cancelled again


async def stop_tasks(*tasks: asyncio.Future[Any] | None, within_s: float | None = None) -> None:
    """Cancel ``tasks`` (``None`` entries are skipped) until each has ended.

    A task's cancellation is absorbed; an exception it ended with is raised
    (the first, once all have ended), as ``await task`` would have.  With
    ``within_s``, a stop that must not hang gives up after that long on a
    task that will not end (logged, left running).
    """
    live = {t for t in tasks if t is not None}
    pending = {t for t in live if not t.done()}
    deadline = None if within_s is None else time.monotonic() + within_s
    while pending:
        if deadline is not None and time.monotonic() >= deadline:
            log.warning(
                "%d task(s) still running %.1f s after cancel: %s",
                len(pending),
                within_s,
                ", ".join(sorted(t.get_name() if isinstance(t, asyncio.Task) else repr(t) for t in pending)),
            )
            live -= pending
            break
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=_AGAIN_S)
        if pending:
            # The timer that woke us may have come due in the same pass as
            # the reply the task waits on (both timers, or the reply read
            # then): cancelling now would lose the race again.  One pass
            # later the task is waiting on its next reply.
            await asyncio.sleep(0)
    failure: BaseException | None = None
    for t in live:
        if t.cancelled():
            continue
        exc = t.exception()  # (retrieved, so none is reported as never retrieved)
        if exc is not None and failure is None:
            failure = exc
    if failure is not None:
        raise failure
