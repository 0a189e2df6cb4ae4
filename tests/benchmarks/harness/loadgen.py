"""The two load tools, each run as its own pinned process: ``wrk`` (closed
loop, peak RPS) with a Lua script for the POST, and the open-loop client
(``openloop.py``, fixed rate, latency and time to first token)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.benchmarks.harness.procs import pinned

REPO = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Target:
    """Where and how to send the same chat request to one system."""

    url: str
    headers: dict[str, str]
    model: str

    def body(self, stream: bool) -> bytes:
        req: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": "Say hello to the benchmark in one short sentence."}],
            "max_tokens": 32,
        }
        if stream:
            req["stream"] = True
            req["stream_options"] = {"include_usage": True}
        return json.dumps(req).encode()


def ensure_wrk(allow_install: bool) -> str | None:
    """Path of wrk; installs Debian's package when missing and allowed."""
    found = shutil.which("wrk")
    if found or not allow_install:
        return found
    if shutil.which("apt-get") is None:
        return None
    print("wrk is missing: apt-get install -y wrk", flush=True)
    update = subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300, check=False)
    inst = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "wrk"], capture_output=True, timeout=300, check=False
    )
    if inst.returncode != 0:
        print(f"could not install wrk: {(update.stderr + inst.stderr).decode(errors='replace')[-500:]}")
    return shutil.which("wrk")


def _lua_string(value: str | bytes) -> str:
    # Lua long strings take everything verbatim; pick a level that does not
    # occur in the text.
    text = value.decode() if isinstance(value, bytes) else value
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    return f"[{eq}[{text}]{eq}]"


def wrk_script(target: Target, stream: bool) -> str:
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(target.body(stream))}"]
    headers = {"Content-Type": "application/json", **target.headers}
    lines += [f"wrk.headers[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in headers.items()]
    # done() prints one JSON line the harness parses (wrk's own text report
    # rounds and changes units).
    lines.append(
        """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,'
    .. '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
"""
    )
    return "\n".join(lines)


def run_wrk(
    wrk: str,
    target: Target,
    *,
    stream: bool,
    duration_s: float,
    connections: int,
    cpus: tuple[int, ...] | None,
    work_dir: Path,
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    script = work_dir / f"wrk-{'stream' if stream else 'unary'}-{uuid.uuid4().hex[:8]}.lua"
    script.write_text(wrk_script(target, stream))
    argv = pinned(
        [
            wrk,
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration_s))}s",
            f"--timeout={max(1, round(timeout_s))}s",
            "-s",
            str(script),
            target.url,
        ],
        cpus,
    )
    proc = subprocess.run(argv, capture_output=True, timeout=duration_s + timeout_s + 30, check=False)
    out = proc.stdout.decode(errors="replace")
    for line in out.splitlines():
        if line.startswith("WRKJSON "):
            raw = json.loads(line[len("WRKJSON ") :])
            secs = raw["duration_us"] / 1e6
            errors = raw["connect"] + raw["read"] + raw["write"] + raw["status"] + raw["timeout"]
            good = max(raw["requests"] - raw["status"], 0)
            return {
                "connections": connections,
                "requests": raw["requests"],
                "errors": errors,
                "error_detail": {
                    k: raw[k] for k in ("connect", "read", "write", "status", "timeout") if raw[k]
                },
                # Peak RPS counts only successful responses: an error page
                # served fast is not throughput.
                "rps": good / secs if secs > 0 else 0.0,
                # no response at all: wrk reports 0 percentiles, which would
                # read as "infinitely fast"
                "p50_ms": raw["p50_us"] / 1000 if raw["requests"] else None,
                "p90_ms": raw["p90_us"] / 1000 if raw["requests"] else None,
                "p99_ms": raw["p99_us"] / 1000 if raw["requests"] else None,
                "note": "" if raw["requests"] else "no response completed within the run",
            }
    raise RuntimeError(
        f"wrk produced no result (exit {proc.returncode}): {proc.stderr.decode()[-500:]}{out[-500:]}"
    )


def run_openloop(
    target: Target,
    *,
    stream: bool,
    rate: float,
    duration_s: float,
    warmup_s: float,
    cpus: tuple[int, ...] | None,
    work_dir: Path,
    timeout_s: float = 10.0,
    connections: int = 256,
) -> dict[str, Any]:
    body = work_dir / f"body-{'stream' if stream else 'unary'}-{uuid.uuid4().hex[:8]}.json"
    body.write_bytes(target.body(stream))
    argv = [
        sys.executable,
        "-m",
        "tests.benchmarks.harness.openloop",
        "--url",
        target.url,
        "--body-file",
        str(body),
        "--rate",
        str(rate),
        "--duration",
        str(duration_s),
        "--warmup",
        str(warmup_s),
        "--timeout",
        str(timeout_s),
        "--connections",
        str(connections),
    ]
    for k, v in {"Content-Type": "application/json", **target.headers}.items():
        argv += ["--header", f"{k}: {v}"]
    if stream:
        argv.append("--stream")
    proc = subprocess.run(
        pinned(argv, cpus),
        capture_output=True,
        cwd=REPO,
        timeout=warmup_s + duration_s + 2 * timeout_s + 30,
        check=False,
    )
    lines = [ln for ln in proc.stdout.decode(errors="replace").splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"open-loop client failed (exit {proc.returncode}): {proc.stderr.decode()[-800:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result
