"""``nexus alerts`` as operators run it: a real process on a config file,
SIGHUP applying a changed file, SIGTERM stopping it; bad input is one clear
line and exit code 2."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from streams.events_alerts import AuditVerified
from streams.topology import Topology
from tests.alerts.receivers import HttpReceiver
from tests.alerts.support import publish, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _config(url: str, *, audit: bool, secret: str = "signing_secret_env: T_CLI_SECRET") -> str:
    rules = "  rules:\n    - {kind: budget, name: budgets, channels: [ops]}\n"
    if audit:
        rules += "    - {kind: audit_chain, name: chain, channels: [ops]}\n"
    return (
        "alerts:\n  channels:\n"
        f"    - {{kind: webhook, name: ops, url: '{url}', {secret},"
        " allow_private_network: true}\n" + rules
    )


async def _nexus(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nexus.cli",
        "alerts",
        *args,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    code, out = await _nexus(env={"NEXUS_CONFIG": ""})
    assert code == 2 and "--config FILE (or NEXUS_CONFIG) or --hub is required" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("alerts:\n  rules: [{kind: budget, name: b, channels: [nowhere]}]\n")
    code, out = await _nexus("--config", str(bad))
    assert (
        code == 2 and "alerts.rules[0].channels: unknown channel 'nowhere'" in out and "Traceback" not in out
    )
    good = tmp_path / "good.yaml"
    good.write_text(_config("https://hooks.example.com/x", audit=False))
    code, out = await _nexus("--config", str(good), "--nats", "nats://127.0.0.1:1")
    assert code == 2 and "T_CLI_SECRET is not set" in out and "Traceback" not in out
    code, out = await _nexus("replay", env={"NEXUS_POSTGRES_DSN": ""})
    assert code == 2 and "--dsn (or NEXUS_POSTGRES_DSN) is required" in out


async def test_the_worker_process_follows_its_file_and_secret_on_sighup_and_stops_on_sigterm(
    js: JetStreamContext, topology: Topology, nats_url: str, webhook: HttpReceiver, tmp_path: Path
) -> None:
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text("the-first-secret\n")
    secret_file.chmod(0o600)
    from_file = f"signing_secret_file: '{secret_file}'"
    path = tmp_path / "nexus.yaml"
    path.write_text(_config(webhook.url, audit=False, secret=from_file))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nexus.cli",
        "alerts",
        "--config",
        str(path),
        "--nats",
        nats_url,
        "--stream-prefix",
        topology.prefix,
        cwd=REPO,
        env={**os.environ, "NEXUS_POSTGRES_DSN": ""},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    lines: list[str] = []

    async def read() -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            lines.append(line.decode())

    reader = asyncio.create_task(read())
    try:
        await wait_for(lambda: any("nexus alerts: running" in line for line in lines))
        # A new rule and a rotated secret, both applied by SIGHUP.
        path.write_text(_config(webhook.url, audit=True, secret=from_file))
        secret_file.write_text("the-rotated-secret\n")
        webhook.secret = b"the-rotated-secret"
        proc.send_signal(signal.SIGHUP)
        await wait_for(lambda: any("configuration applied (2 rules" in line for line in lines))
        await publish(js, topology, AuditVerified(ok=False, broken_n=2, reason="record altered"))
        await wait_for(lambda: len(webhook.got) == 1)
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await reader
    assert code == 0, "".join(lines)
    assert webhook.got[0].error == "" and webhook.got[0].doc["rule"] == "chain"
    assert "the-first-secret" not in "".join(lines) and "the-rotated-secret" not in "".join(lines)


async def test_nexus_alerts_test_sends_one_alert_through_a_channel_and_says_what_happened(
    webhook: HttpReceiver, tmp_path: Path
) -> None:
    path = tmp_path / "nexus.yaml"
    path.write_text(_config(webhook.url, audit=False))
    env = {"T_CLI_SECRET": "s3cret-signing-key"}
    code, out = await _nexus("test", "--config", str(path), "--channel", "ops", env=env)
    assert code == 0 and "delivered to ops (200)" in out, out
    [got] = webhook.got
    assert got.error == "" and got.doc["rule"] == "test" and got.doc["severity"] == "info"
    code, out = await _nexus("test", "--config", str(path), "--channel", "nope", env=env)
    assert code == 2 and "no channel named 'nope'" in out and "(channels: ops)" in out
    webhook.fail_with = 503
    code, out = await _nexus("test", "--config", str(path), "--channel", "ops", env=env)
    assert code == 1 and "not delivered to ops (503): HTTP 503" in out
