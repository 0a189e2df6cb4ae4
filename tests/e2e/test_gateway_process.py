"""How ``nexus up`` says why its gateway did not come up."""

from __future__ import annotations

import asyncio
import sys

import pytest

from nexus.startup import StartupError
from nexus.wiring import GatewayProcess

SNAPSHOT_ERROR = (
    "snapshots: revision 2 not applied, keeping 0: auth: no HMAC secret; set the "
    "NEXUS_KEY_HMAC_SECRET environment variable (nexus keys secret prints a fresh one)"
)


async def _gateway_saying(*lines: str) -> GatewayProcess:
    script = (
        "import sys, time\n"
        + "".join(f"print({line!r}, flush=True)\n" for line in lines)
        + "time.sleep(30)\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    return GatewayProcess(proc)


async def test_a_gateway_that_logged_why_it_waits_is_reported_with_that_reason() -> None:
    """CI saw `nexus up` end with "the gateway did not listen within 120 s:
    is the NATS that NEXUS_NATS_URL names running and reachable?" while the
    gateway had said why: the Hub's snapshot carried no HMAC secret."""
    gw = await _gateway_saying(
        "2026-12-07 18:13:43,500 INFO nexus.gateway waiting for the Hub's first configuration snapshot",
        f"2026-12-07 18:13:43,568 ERROR nexus.snapshots {SNAPSHOT_ERROR}",
    )
    try:
        with pytest.raises(StartupError) as err:
            await gw.listening(timeout_s=1.5)
        assert str(err.value) == f"the gateway did not listen within 2 s; its last error: {SNAPSHOT_ERROR}"
    finally:
        await gw.stop(timeout_s=5)


async def test_a_silent_gateway_is_a_plain_timeout() -> None:
    gw = await _gateway_saying(
        "2026-12-07 18:13:43,500 INFO nexus.gateway waiting for the Hub's first snapshot"
    )
    try:
        with pytest.raises(RuntimeError, match=r"did not listen within 1 s$"):
            await gw.listening(timeout_s=1.0)
    finally:
        await gw.stop(timeout_s=5)
