"""README command 1, as a user runs it: `nexus up` on the demo config with
every service embedded, a request with the demo key, the row in Postgres,
Ctrl-C, and a second `nexus up` that finds the data where it left it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

from nexus.up import DEMO_KEY

pytestmark = [pytest.mark.integration, pytest.mark.slow]

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_curl() -> str:
    """The README's curl, exactly as a reader copies it."""
    found = re.search(r"^curl -s http://127\.0\.0\.1:3050/.*?-d '[^\n]*'$", README.read_text(), re.M | re.S)
    assert found, "README.md has no curl to the gateway on 127.0.0.1:3050"
    return found.group(0)


def _up(data: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
    env["NEXUS_LOG_LEVEL"] = "WARNING"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nexus.cli", "up", "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 90
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if "Ctrl-C stops everything" in line:
            assert any(DEMO_KEY in s for s in seen), "nexus up did not print the demo key:\n" + "".join(seen)
            return proc
    proc.kill()
    raise AssertionError("nexus up did not come up:\n" + "".join(seen))


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    return out


def _sql(data: Path, query: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
    result = subprocess.run(
        [sys.executable, "-m", "nexus.cli", "sql", "--data-dir", str(data), query],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_nexus_up_serves_the_demo_key_and_keeps_its_data(tmp_path: Path) -> None:
    data = tmp_path / "nexus-home"
    proc = _up(data)
    try:
        client = openai.OpenAI(base_url="http://127.0.0.1:3050/v1", api_key=DEMO_KEY, max_retries=0)
        resp = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello, Nexus!"}]
        )
        request_id = resp.headers["x-nexus-request-id"]
        assert resp.parse().choices[0].message.content
        # The README's curl, run as printed, with the demo key it shows.
        curl = _readme_curl()
        assert DEMO_KEY in curl
        done = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert answer["object"] == "chat.completion" and answer["choices"][0]["message"]["content"]
        assert answer["usage"]["total_tokens"] > 0
        deadline = time.monotonic() + 5
        while request_id not in _sql(data, "select request_id from traffic_event"):
            assert time.monotonic() < deadline, "the request never reached traffic_event"
            time.sleep(0.2)
    finally:
        out = _stop(proc)
    assert "nexus: stopped" in out
    # Everything it started has stopped.
    assert not (data / "run" / "endpoints.json").exists()

    proc = _up(data)
    try:
        assert request_id in _sql(data, "select request_id from traffic_event")
    finally:
        _stop(proc)
