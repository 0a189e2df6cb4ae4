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

- **event backlog** (``MAX_EVENT_BACKLOG`` events waiting in the
  publisher's memory): every answered request is several events, held in
  memory until JetStream acknowledges them.  When the publisher falls
  behind (a loop too saturated to give its flusher turns, a NATS that acks
  slowly but does ack, so nothing goes to the outbox) the backlog grew
  without bound: ~1.4 KB of RSS an event, 137,575 events and 311 MB at
  peak in one 2x-peak run.  Sampled at each probe, past the bound new
  requests are shed (a shed is one compact event, an answered request
  ~9) until the publisher has caught up, so the gateway's memory under
  overload is bounded whatever NATS does.

A shed request is counted (``nexus_gateway_shed_total{reason}``) and is an
event like every other request: one compact RequestFailed (429
``overloaded``, stage ``admission``, the reason), since it was never
authenticated nor parsed and there is nothing more to say.  Its cost,
counted with callgrind (tests/benchmarks/instructions.py --features shed,
1,000 requests): 0.279 M instructions per shed request without the event,
0.335 M with it (+20 %, its encoding and publishing included), against
1.156 M for the cheapest request served (bare, no hooks or quotas),
measured alongside.  Summarising sheds per interval would have saved the
+0.056 M but lost the one row per request answered that the read models
promise (967 of 2,000 sheds left no trace in one run); a shed stays about
3.5x cheaper than the cheapest request served.  Shedding starting and stopping is
logged (at most once per 10 s).

New connections must reach the gate quickly too: see listener.py (the
loop's own accept takes one connection per iteration).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from ingress.pipeline.metrics import LOOP_LAG
from ingress.translate.anthropic_messages import ANTHROPIC_MESSAGES
from ingress.translate.gemini_generate import GEMINI_GENERATE
from ingress.translate.grammar import Failure, Grammar
from ingress.translate.openai_chat import OPENAI_CHAT

log = logging.getLogger("nexus.gateway")

INFLIGHT = "inflight"
LOOP_LAG_REASON = "event_loop_lag"
BACKLOG_REASON = "event_backlog"
# ~14 MB of events at ~1.4 KB each: far above what a publisher that keeps
# up holds (under 2,200 at twice the peak since the catch-up batches).
MAX_EVENT_BACKLOG = 10_000

RETRY_AFTER_S = 1
_LOG_EVERY_S = 10.0
_MIN_LIMIT = 8.0
_DECREASE = 0.9
_INCREASE = 1.0
FAILURE = Failure(429, "rate_limit_error", "overloaded", "The gateway is at capacity; retry shortly.")
# Built once: shedding must be the cheapest answer the gateway gives.
OPENAI_BODY = OPENAI_CHAT.error_body(FAILURE)
ANTHROPIC_BODY = ANTHROPIC_MESSAGES.error_body(FAILURE)
GEMINI_BODY = GEMINI_GENERATE.error_body(FAILURE)


def shed_body(grammar: Grammar) -> bytes:
    """The prebuilt 429 of a shed request, in the caller's grammar."""
    if grammar is ANTHROPIC_MESSAGES:
        return ANTHROPIC_BODY
    return GEMINI_BODY if grammar is GEMINI_GENERATE else OPENAI_BODY


class Admission:
    """The admission decision of one gateway.  ``clock`` is injectable
    (tests); it must be a live clock (``time.perf_counter``), not the loop's
    time, which uvloop caches for a whole iteration."""

    __slots__ = (
        "_backlog",
        "_backlog_said",
        "_backlog_warned_at",
        "_clock",
        "_due",
        "_handle",
        "_inflight",
        "_loop",
        "_warned",
        "_warned_at",
        "backlogged",
        "interval_s",
        "last_lag_s",
        "limit",
        "max_backlog",
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
        backlog: Callable[[], int] = lambda: 0,
        max_backlog: int = MAX_EVENT_BACKLOG,
    ) -> None:
        self.max_inflight = max_inflight
        self._backlog = backlog  # events waiting in the publisher's memory now
        self.max_backlog = max_backlog  # <= 0: the backlog gate is off
        self.backlogged = False  # over max_backlog at the last probe
        self._backlog_warned_at = -math.inf  # when the backlog gate last said it sheds
        self._backlog_said = False  # ...and has not yet said it stopped
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

    def configure(self, *, max_inflight: int, lag_threshold_s: float, probe_interval_s: float) -> None:
        """New limits from a new snapshot, taking effect at once; the
        adaptive limit keeps what it learnt, within the new maximum."""
        running = self._handle is not None
        if running and (
            (lag_threshold_s <= 0 and self.max_backlog <= 0) or probe_interval_s != self.interval_s
        ):
            self.stop()
        self.max_inflight = max_inflight
        self.limit = min(self.limit, float(max_inflight)) if running else float(max_inflight)
        self.threshold_s = lag_threshold_s
        self.interval_s = max(probe_interval_s, 0.001)
        if self._loop is not None and self._handle is None and self._probing():
            self.start()

    # --- the decision -----------------------------------------------------

    def check(self, inflight: int) -> str | None:
        """None: admit.  Else why the request is shed."""
        if inflight >= self.max_inflight:
            return INFLIGHT
        if inflight >= self.limit:
            return LOOP_LAG_REASON
        if self.backlogged:
            return BACKLOG_REASON
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
        """Start the probe on the running loop (no-op when both gates it serves are off)."""
        self._loop = asyncio.get_running_loop()
        if not self._probing() or self._handle is not None:
            return
        self._schedule(self._clock())

    def _probing(self) -> bool:
        # The probe serves both the lag gate and the backlog gate.
        return self.threshold_s > 0 or self.max_backlog > 0

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
        backlog = self._backlog()
        backlogged = 0 < self.max_backlog <= backlog
        if backlogged != self.backlogged:
            self._say_backlog(backlogged, backlog, now)
        self.backlogged = backlogged
        self._schedule(now)

    def _say_backlog(self, backlogged: bool, backlog: int, now: float) -> None:
        # As for the lag gate: a start at most every 10 s, and its end.
        if backlogged:
            if now - self._backlog_warned_at >= _LOG_EVERY_S:
                self._backlog_warned_at, self._backlog_said = now, True
                log.warning(
                    "%d events wait for NATS (bound %d): shedding new requests with 429 until "
                    "the publisher catches up (is NATS slow or away?)",
                    backlog,
                    self.max_backlog,
                )
        elif self._backlog_said:
            self._backlog_said = False
            log.warning("event backlog down to %d: admitting again", backlog)
