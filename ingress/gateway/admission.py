"""Admission control: shed load fast (429 + Retry-After) instead of
queueing it, so that the requests the gateway does admit keep a bounded
latency however much is offered.

Three gates, checked in this order before anything else touches a ``/v1``
request (no body read, no auth, no hooks):

- **in-flight cap** (``gateway.max_inflight``): requests in progress.  It
  bounds what is *inside* the gateway (slow upstreams), but a saturated
  event loop queues requests where no counter sees them (socket buffers,
  the loop's ready queue), which is why the cap alone let admitted requests
  wait for seconds at twice the peak rate.
- **event-loop lag** (``gateway.shed_loop_lag_ms``): a probe timer fires
  every ``gateway.loop_probe_interval_ms``; how late it fires is how long
  anything ready on the loop (a request that has just arrived) waits for
  its turn.  That is the queue delay CoDel controls, measured where the
  queue really is.  As in CoDel, a *standing* queue sheds, a burst does
  not: the gateway sheds while two consecutive observations are over the
  threshold (the last two probes, or the last probe and the one due now
  and still waiting), so a single pause (a GC, one slow callback) costs
  latency, never a 429.  Once the loop keeps time again, the next probe
  clears it: recovery takes one probe interval.
- **adaptive in-flight limit**: shedding new arrivals is not enough when
  the requests already admitted fill the loop (each needs several loop
  passes; with 256 in progress on a saturated core each waited ~0.5 s).
  While the lag stands over the threshold, the limit drops to 90 % of what
  is in flight (at most once per probe, down to 8); each on-time probe
  raises it by one, back up to ``max_inflight`` (100 a second at a 10 ms
  probe).  Under normal load the lag never stands, so the limit stays at
  ``max_inflight``.

A shed request is a counter (``nexus_gateway_shed_total{reason}``) and no
event: it was never authenticated nor parsed, so a RequestFailed would
carry no tenant and no model (nothing the counter does not say), and
building, encoding and publishing one per shed request would add work on
the very loop that is saturated, when shedding must cost as little as
possible.  Shedding starting and stopping is logged (at most once per
10 s).

New connections must reach the gate quickly too: see listener.py (the
loop's own accept takes one connection per iteration).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from aiohttp import web

from ingress.gateway.metrics import LOOP_LAG, SHED
from ingress.translate.grammar import ANTHROPIC_MESSAGES, OPENAI_CHAT, Failure

log = logging.getLogger("nexus.gateway")

INFLIGHT = "inflight"
LOOP_LAG_REASON = "event_loop_lag"

RETRY_AFTER_S = 1
_LOG_EVERY_S = 10.0
_MIN_LIMIT = 8.0
_DECREASE = 0.9
_INCREASE = 1.0
_FAILURE = Failure(429, "rate_limit_error", "overloaded", "The gateway is at capacity; retry shortly.")
# Built once: shedding must be the cheapest answer the gateway gives.
_OPENAI_BODY = OPENAI_CHAT.error_body(_FAILURE)
_ANTHROPIC_BODY = ANTHROPIC_MESSAGES.error_body(_FAILURE)


class Admission:
    """The admission decision of one gateway.  ``clock`` is injectable
    (tests); it must be a live clock (``time.perf_counter``), not the loop's
    time, which uvloop caches for a whole iteration."""

    __slots__ = (
        "_clock",
        "_due",
        "_handle",
        "_inflight",
        "_loop",
        "_warned",
        "_warned_at",
        "interval_s",
        "last_lag_s",
        "limit",
        "max_inflight",
        "prev_lag_s",
        "shedding",
        "threshold_s",
    )

    def __init__(
        self,
        *,
        max_inflight: int,
        lag_threshold_s: float,
        probe_interval_s: float = 0.01,
        clock: Callable[[], float] = time.perf_counter,
        inflight: Callable[[], int] = lambda: 0,
    ) -> None:
        self.max_inflight = max_inflight
        # The adaptive in-flight limit (AIMD on the lag): cut while the lag
        # stands over the threshold, grown back one request per on-time probe.
        self.limit = float(max_inflight)
        self._inflight = inflight  # requests in progress now (the gateway's count)
        self.threshold_s = lag_threshold_s  # <= 0: the lag gate is off
        self.interval_s = max(probe_interval_s, 0.001)  # never a busy loop
        self._clock = clock
        self.last_lag_s = 0.0
        self.prev_lag_s = 0.0
        self.shedding = False  # the lag gate's state when the probe last fired (for the log)
        self._due = math.inf  # when the probe is due next (inf: not running)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._warned = False
        self._warned_at = -math.inf

    # --- the decision -----------------------------------------------------

    def check(self, inflight: int) -> str | None:
        """None: admit.  Else why the request is shed."""
        if inflight >= self.max_inflight:
            return INFLIGHT
        if inflight >= self.limit:
            return LOOP_LAG_REASON
        threshold = self.threshold_s
        # The last probe was late; a standing queue if the one before was
        # late too, or if the next one is already late as well.
        if self.last_lag_s > threshold > 0 and (
            self.prev_lag_s > threshold or self._clock() - self._due > threshold
        ):
            return LOOP_LAG_REASON
        return None

    def observe(self, lag_s: float) -> None:
        """One probe observation: how late the probe fired, in seconds."""
        self.prev_lag_s = self.last_lag_s
        self.last_lag_s = lag_s
        LOOP_LAG.set(lag_s)
        threshold = self.threshold_s
        shedding = 0 < threshold < min(lag_s, self.prev_lag_s)
        if shedding:
            # Fewer requests in progress, shorter loop iterations: what is
            # admitted moves faster.  From what is in flight (not a limit
            # nobody reaches), at most down to a floor.
            self.limit = max(_MIN_LIMIT, min(self.limit, self._inflight()) * _DECREASE)
        elif lag_s <= threshold and self.limit < self.max_inflight:
            self.limit = min(float(self.max_inflight), self.limit + _INCREASE)
        if shedding == self.shedding:
            return
        self.shedding = shedding
        # Under sustained overload the gate opens and closes several times a
        # second: one line per start at most every 10 s, and its end.
        if shedding:
            now = self._clock()
            if now - self._warned_at >= _LOG_EVERY_S:
                self._warned, self._warned_at = True, now
                log.warning(
                    "event loop lag %.0f ms over %.0f ms: shedding new requests with 429 "
                    "(nexus_gateway_shed_total counts them)",
                    lag_s * 1000,
                    self.threshold_s * 1000,
                )
        elif self._warned:
            self._warned = False
            log.warning("event loop lag back to %.0f ms: admitting again", lag_s * 1000)

    # --- the probe ----------------------------------------------------------

    def start(self) -> None:
        """Start the lag probe on the running loop (no-op when the lag gate is off)."""
        if self.threshold_s <= 0 or self._handle is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._schedule(self._clock())

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._due = math.inf

    def _schedule(self, now: float) -> None:
        assert self._loop is not None
        self._due = now + self.interval_s
        self._handle = self._loop.call_later(self.interval_s, self._tick)

    def _tick(self) -> None:
        now = self._clock()
        self.observe(max(0.0, now - self._due))
        self._schedule(now)


def shed_response(request: web.Request, reason: str) -> web.Response:
    """429 + Retry-After in the caller's format: Anthropic's on
    ``/v1/messages`` (and ``/v1/models`` asked with ``anthropic-version``),
    OpenAI's everywhere else."""
    SHED.labels(reason).inc()
    path = request.path
    anthropic = path == "/v1/messages" or (path == "/v1/models" and "anthropic-version" in request.headers)
    return web.Response(
        status=429,
        body=_ANTHROPIC_BODY if anthropic else _OPENAI_BODY,
        content_type="application/json",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )
