"""The config snapshot of a gateway that a test runs in its own process.

Such a gateway shares its event loop with the test's clients (SDKs, load
bursts, the simulated provider): their work shows up as loop lag, which on a
busy machine can reach the lag gate's threshold and get test requests a 429
that has nothing to do with what the test checks.  Every in-process stack
builds its snapshot here, so the loop-lag gate is off (the in-flight cap
stays) in one place rather than in a copy per stack.  A test of the gate
itself (tests/gateway/test_overload.py) asks for it with ``lag_shedding``.
"""

from __future__ import annotations

import msgspec

from streams.config import NexusConfig
from streams.config_snapshot import ConfigSnapshot


def in_process_snapshot(config: NexusConfig, secret: bytes, *, lag_shedding: bool = False) -> ConfigSnapshot:
    if lag_shedding:
        return ConfigSnapshot(config, secret)
    gateway = msgspec.structs.replace(config.gateway, shed_loop_lag_ms=0.0)
    return ConfigSnapshot(msgspec.structs.replace(config, gateway=gateway), secret)
