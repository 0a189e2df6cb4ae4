"""Admission control, the decision alone: an injected clock and injected
probe observations, then the probe on a real loop that the test blocks."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from ingress.pipeline.admission import BACKLOG_REASON, INFLIGHT, LOOP_LAG_REASON, Admission


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_the_inflight_cap_sheds_at_the_cap() -> None:
    a = Admission(max_inflight=2, lag_threshold_s=0.05, clock=Clock())
    assert a.check(0) is None
    assert a.check(1) is None
    assert a.check(2) == INFLIGHT


def test_one_pause_costs_latency_not_a_429_a_standing_queue_sheds() -> None:
    a = Admission(max_inflight=100, lag_threshold_s=0.05, clock=Clock())
    a.observe(0.004)
    assert a.check(0) is None
    a.observe(0.4)  # one long pause (a GC, one slow callback) ...
    assert a.check(0) is None
    a.observe(0.003)  # ... and the loop keeps time again
    assert a.check(0) is None
    a.observe(0.08)
    a.observe(0.07)  # late twice running: a standing queue
    assert a.check(0) == LOOP_LAG_REASON
    assert a.shedding
    a.observe(0.06)
    assert a.check(0) == LOOP_LAG_REASON
    a.observe(0.002)  # the next on-time probe ends it
    assert a.check(0) is None
    assert not a.shedding


def test_the_inflight_cap_comes_first() -> None:
    a = Admission(max_inflight=1, lag_threshold_s=0.05, clock=Clock())
    a.observe(0.1)
    a.observe(0.1)
    assert a.check(5) == INFLIGHT
    assert a.check(0) == LOOP_LAG_REASON


def test_a_zero_threshold_turns_the_lag_gate_off() -> None:
    a = Admission(max_inflight=100, lag_threshold_s=0, clock=Clock())
    for _ in range(5):
        a.observe(10.0)
    assert a.check(0) is None
    assert not a.shedding


async def test_a_late_probe_and_an_overdue_one_shed_at_once() -> None:
    """Within one long loop iteration: the last probe was late and the next
    one, due, has not fired yet; requests handled past the threshold shed
    without waiting for it."""
    clock = Clock()
    a = Admission(max_inflight=100, lag_threshold_s=0.05, probe_interval_s=0.01, clock=clock)
    a.start()  # due at t + 10 ms
    try:
        a.observe(0.2)  # the last probe was late
        assert a.check(0) is None  # the next is not overdue yet
        clock.t += 0.01 + 0.03
        assert a.check(0) is None  # overdue by 30 ms: under the threshold
        clock.t += 0.03
        assert a.check(0) == LOOP_LAG_REASON  # overdue by 60 ms
    finally:
        a.stop()


async def test_the_probe_sees_a_blocked_loop_and_its_recovery() -> None:
    a = Admission(max_inflight=100, lag_threshold_s=0.1, probe_interval_s=0.005)
    a.start()
    try:
        await asyncio.sleep(0.02)
        for _ in range(2):
            time.sleep(0.3)  # the loop runs nothing else: the probe will fire late
            await asyncio.sleep(0.001)  # its timer is due first: it fires before this one
        assert a.last_lag_s >= 0.2 and a.prev_lag_s >= 0.2
        assert a.check(0) == LOOP_LAG_REASON
        # Free again: the next probe on time ends it (however loaded the machine, within seconds).
        deadline = time.monotonic() + 10
        while a.check(0) is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert a.check(0) is None
    finally:
        a.stop()
    assert a._handle is None


def test_a_standing_lag_cuts_the_inflight_limit_and_on_time_probes_grow_it_back() -> None:
    inflight = [200]
    a = Admission(max_inflight=256, lag_threshold_s=0.05, clock=Clock(), inflight=lambda: inflight[0])
    assert a.check(200) is None  # under normal load the limit is max_inflight
    a.observe(0.001)
    assert a.limit == 256
    a.observe(0.09)
    assert a.limit == 256  # one late probe: no cut
    a.observe(0.08)  # standing: cut to 90 % of what is in flight
    assert a.limit == 0.9 * 200
    for _ in range(100):
        a.observe(0.08)
    assert a.limit == 8  # the floor
    a.observe(0.001)  # on time: admitting again, within the limit
    assert a.check(5) is None
    assert a.check(9) == LOOP_LAG_REASON
    for _ in range(1000):
        a.observe(0.001)
    assert a.limit == 256
    assert a.check(200) is None


async def test_an_event_backlog_over_the_bound_sheds_until_it_is_worked_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The probe samples the publisher's backlog (also with the lag gate
    off); past the bound every new request is shed, and the log says so
    (once) and when it ends."""
    backlog = [0]
    a = Admission(
        max_inflight=100,
        lag_threshold_s=0,
        probe_interval_s=0.005,
        backlog=lambda: backlog[0],
        max_backlog=1000,
    )
    a.start()
    try:
        await asyncio.sleep(0.03)
        assert a.check(0) is None
        with caplog.at_level(logging.WARNING, logger="nexus.gateway"):
            backlog[0] = 1000
            await asyncio.sleep(0.03)
            assert a.check(0) == BACKLOG_REASON
            backlog[0] = 999
            await asyncio.sleep(0.03)
            assert a.check(0) is None
            backlog[0] = 1200  # back over within 10 s: shed, not said again
            await asyncio.sleep(0.03)
            assert a.check(0) == BACKLOG_REASON
        said = [r.getMessage() for r in caplog.records]
        assert len(said) == 2, said
        assert said[0].startswith("1000 events wait for NATS (bound 1000): shedding")
        assert said[1] == "event backlog down to 999: admitting again"
    finally:
        a.stop()
