"""A real gateway node (a ``nexus gateway --hub`` process fed by a Hub) is a
thing of the fleet: enrolled by its first report, online, its shadow shows
the snapshot it serves and its posture; a fleet key its type's template
sets (``log_level``) is applied and reported; a key it does not run is
reported unsupported and stays pending; its snapshot path keeps working."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streams.topology import Topology
from tests.hub.conftest import Client, RunningHub
from tests.hub.live import start_gateway_node, wait_listening

pytestmark = [pytest.mark.integration, pytest.mark.slow]

A = "/api/admin"


async def _until(admin: Client, path: str, ok: Callable[[Any], bool], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        ans = await admin.get(path)
        if ans.status == 200:
            last = ans.json
            if ok(last):
                return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}; last: {last}")


async def test_a_hub_fed_gateway_is_a_thing_that_reports_what_it_applied(
    hub: RunningHub,
    admin: Client,
    nats_url: str,
    topology: Topology,
    valkey_url: str,
    valkey_prefix: str,
    tmp_path: Path,
) -> None:
    node = start_gateway_node(
        "gw-f",
        nats_url=nats_url,
        prefix=topology.prefix,
        valkey_url=valkey_url,
        valkey_prefix=valkey_prefix,
        data_dir=tmp_path / "gw-f",
    )
    try:
        await wait_listening(node)
        path = f"{A}/things/gateway.gw-f"
        detail = await _until(
            admin, path, lambda d: d["shadow"]["converged"], 30, "the gateway enrolled and in sync"
        )
        assert detail["status"] == "online" and detail["item"]["thing"]["enrolled_how"] == "report"
        reported = detail["shadow"]["reported"]
        desired = detail["shadow"]["desired"]
        assert reported["digest"] == desired["keys"]["config"]["digest"]
        assert reported["outcomes"]["config"]["status"] == "applied"
        posture = reported["posture"]
        assert posture["software_version"] and posture["providers"] >= 1 and posture["revision"] >= 1
        assert posture["enabled.hooks"] is True and "config_age_s" in posture
        assert reported["transport"] == "nats"

        # A fleet key of its type's template: applied and reported.
        put = await admin.put(
            f"{A}/thing-templates/gateway", {"type": "gateway", "keys": {"log_level": "debug"}}
        )
        assert put.status == 200, put
        detail = await _until(
            admin,
            path,
            lambda d: d["shadow"]["converged"] and "log_level" in d["shadow"]["desired"]["keys"],
            30,
            "log_level applied",
        )
        reported = detail["shadow"]["reported"]
        assert reported["outcomes"]["log_level"]["status"] == "applied"
        assert reported["posture"]["log_level"] == "debug"

        # A key it does not run: reported unsupported, pending (what drift compares).
        put = await admin.put(f"{path}/overrides/feature.x", {"value": True, "reason": "try it on one node"})
        assert put.status == 200, put
        detail = await _until(
            admin,
            path,
            lambda d: (
                (d["shadow"]["reported"]["outcomes"].get("feature.x") or {}).get("status") == "unsupported"
            ),
            30,
            "feature.x reported",
        )
        assert detail["shadow"]["pending_keys"] == ["feature.x"] and not detail["shadow"]["converged"]
        assert (await admin.delete(f"{path}/overrides/feature.x")).status == 200
        await _until(admin, path, lambda d: d["shadow"]["converged"], 30, "in sync again")

        # The snapshot path still works: a config change reaches it and shows
        # in its shadow as the new config digest it serves.
        before = detail["shadow"]["reported"]["revision"]
        made = await admin.post(f"{A}/virtual-keys", {"org": "demo-org", "project": "demo-project"})
        assert made.status == 201, made
        detail = await _until(
            admin,
            path,
            lambda d: d["shadow"]["converged"] and d["shadow"]["reported"]["revision"] > before,
            30,
            "the new snapshot served",
        )
        assert (
            detail["shadow"]["desired"]["keys"]["config"]["revision"]
            == detail["shadow"]["reported"]["revision"]
        )
    finally:
        node.stop()
