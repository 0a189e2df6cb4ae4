"""``nexus project`` as an operator runs it: a process, env configuration,
/healthz and /metrics, Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from projections.settings import ProjectorSettings
from streams.topology import Topology
from tests.projections.helpers import ok_request, publish
from tests.projections.test_projector import _free_port, _rows

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_nexus_project_runs_serves_metrics_and_stops_on_sigint(
    js: JetStreamContext, topology: Topology, settings: ProjectorSettings
) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "NEXUS_NATS_URL": settings.nats_url,
        "NEXUS_POSTGRES_DSN": settings.postgres_dsn or "",
        "NEXUS_DUCKDB_PATH": settings.duckdb_path or "",
        "NEXUS_STREAM_PREFIX": topology.prefix,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "nexus.cli", "project", "--metrics-port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        status = 0
        while time.monotonic() < deadline and status != 200:
            try:
                status, _ = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/healthz")
            except OSError:
                await asyncio.sleep(0.1)
        assert status == 200, proc.stderr.read() if proc.poll() is not None else "no /healthz"
        last = await publish(js, topology, [ev for i in range(20) for ev in ok_request(i)])
        deadline = time.monotonic() + 10
        body = ""
        while time.monotonic() < deadline:
            _, body = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/healthz")
            if f'"postgres": {last}' in body and f'"duckdb": {last}' in body:
                break
            await asyncio.sleep(0.1)
        assert f'"duckdb": {last}' in body and f'"postgres": {last}' in body, body
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the lag gauge settles at the next idle fetch
            _, metrics = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
            if 'nexus_projection_lag_events{store="duckdb"} 0.0' in metrics:
                break
            await asyncio.sleep(0.1)
        assert 'nexus_projection_lag_events{store="duckdb"} 0.0' in metrics
        assert f'nexus_projection_events_applied_total{{store="postgres"}} {float(last)}' in metrics
        assert "nexus_projection_batch_seconds_bucket" in metrics
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.to_thread(proc.communicate, timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    for table in (await _rows(settings)).values():  # DuckDB file released on exit
        assert len(table) == 20


async def test_nexus_project_reports_a_bad_config_in_one_line(tmp_path: Path) -> None:
    bad_cfg = tmp_path / "nexus.yaml"
    bad_cfg.write_text("projections:\n  batch_sise: 10\n")
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "nexus.cli", "project", "--config", str(bad_cfg)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("nexus project: ") and "batch_sise" in done.stderr
    assert "Traceback" not in done.stderr


async def test_nexus_project_waits_for_nats_and_stops_on_sigint(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "NEXUS_NATS_URL": f"nats://127.0.0.1:{_free_port()}"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nexus.cli",
            "project",
            "--metrics-port",
            "0",
            "--duckdb",
            str(tmp_path / "a.db"),
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Interrupt it once it is in its wait for NATS (it says so), not at a
    # fixed time: on a loaded machine the imports alone can take seconds.
    assert proc.stderr is not None
    first = await asyncio.wait_for(asyncio.to_thread(proc.stderr.readline), timeout=90)
    assert proc.poll() is None, first  # still waiting for NATS, not crashed
    proc.send_signal(signal.SIGINT)
    _, rest = await asyncio.to_thread(proc.communicate, timeout=20)
    err = first + rest
    assert proc.returncode == 0, err
    assert "Connect call failed" in err and "Traceback" not in err
    assert err.count("Connect call failed") <= 2  # rate-limited, not one line per attempt
