"""Benchmark: the gateway's CPU cost per request, counted in instructions.

    python tests/benchmarks/instructions.py [--requests 300] [--features bare,hooks,quota,production]

Time-based figures on a shared 2-core VM move by 10 % from run to run (what
else runs on the load generator's core changes how many requests each
event-loop turn serves).  Instructions do not: the gateway runs under
valgrind's callgrind with instrumentation off until it is warm, then
counts user-space instructions over a fixed number of requests (same
client, same concurrency), so two commits or two feature sets compare
exactly.  The figure leaves out the kernel (socket reads and writes),
which the time-based peak RPS in ``run.py`` includes.

Each feature set is the benchmark's production config
(``nexus-production.yaml``) with parts taken out:

- bare: key auth, routing, event publishing to JetStream (always on);
- hooks: + the compliance hooks (request-stage PII redaction and rule
  packs, the response-stage secret-leak pack on the stream in chunked mode);
- quota: + the quota reservation on Valkey (budgets and a rate limit), no hooks;
- production: both (what ``run.py`` measures).

Needs valgrind (Debian package ``valgrind``), NATS on 127.0.0.1:4222 and
Valkey/Redis on 127.0.0.1:6379.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import aiohttp
import msgspec

from tests.benchmarks.harness import systems
from tests.benchmarks.harness.loadgen import REPO, Target

PRODUCTION = Path(__file__).with_name("nexus-production.yaml")
FEATURES = ("bare", "hooks", "quota", "production")


def feature_config(feature: str) -> dict[str, Any] | None:
    full: dict[str, Any] = msgspec.yaml.decode(PRODUCTION.read_bytes())
    if feature == "bare":
        return None
    cfg = copy.deepcopy(full)
    if feature == "hooks":
        cfg.pop("quotas")
    elif feature == "quota":
        cfg.pop("hooks")
    return cfg


async def _drive(target: Target, stream: bool, n: int, concurrency: int) -> None:
    body = target.body(stream)
    headers = {**target.headers, "Content-Type": "application/json"}
    todo = iter(range(n))
    async with aiohttp.ClientSession() as http:

        async def worker() -> None:
            for _ in todo:
                async with http.post(target.url, data=body, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"status {r.status}: {(await r.read())[:200]!r}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def _wait_ready(target: Target, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            asyncio.run(_drive(target, False, 1, 1))
            return
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"the gateway under valgrind did not answer:\n{tail}") from None
            time.sleep(1)


def _total_instructions(out_dir: Path) -> int:
    total = 0
    for f in out_dir.glob("callgrind.out*"):
        for line in f.read_text(errors="replace").splitlines():
            if line.startswith("totals:"):
                total += int(line.split()[1])
    return total


def measure(feature: str, stream: bool, sim_url: str, requests: int, concurrency: int, work: Path) -> float:
    """Instructions per request (millions) of one gateway process."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"{feature}-", dir=work))
    launch = systems.nexus_launch(
        {"zero": sim_url}, run_dir, f"INSTR{secrets.token_hex(4).upper()}", feature_config(feature)
    )
    argv = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",  # start-up and warm-up are not counted
        f"--callgrind-out-file={run_dir}/callgrind.out",
        *launch.argv,  # sys.executable as the venv names it: resolved, the venv would be lost
    ]
    log = (run_dir / "gateway.log").open("wb")
    env = {**os.environ, **launch.env}
    proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    target = launch.target("zero")
    try:
        _wait_ready(target, proc, 180, run_dir / "gateway.log")
        asyncio.run(_drive(target, stream, 200, concurrency))  # warm: connections, caches, first-use imports
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True)
        asyncio.run(_drive(target, stream, requests, concurrency))
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True, capture_output=True)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        systems.delete_streams(launch.nats_url, launch.prefix)
    total = _total_instructions(run_dir)
    if total == 0:
        raise RuntimeError(f"callgrind counted nothing; see {run_dir}/gateway.log")
    return total / requests / 1e6


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=300, help="requests counted per measurement")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--features", default=",".join(FEATURES), help=f"a subset of {','.join(FEATURES)}")
    p.add_argument("--modes", default="non-stream,stream")
    args = p.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind is not installed (apt-get install valgrind): no instruction counts", flush=True)
        return 1
    features = [f for f in args.features.split(",") if f]
    unknown = set(features) - set(FEATURES)
    if unknown:
        p.error(f"unknown feature set(s): {', '.join(sorted(unknown))}")
    work = Path(tempfile.mkdtemp(prefix="nexus-instr-"))
    sim, sim_url = systems.start_sim("sim", "zero", None, work)
    print(f"{'features':<12} {'mode':<11} {'M instructions/request':>24}")
    figures: dict[str, float] = {}
    try:
        for feature in features:
            for mode in args.modes.split(","):
                m = measure(feature, mode == "stream", sim_url, args.requests, args.concurrency, work)
                figures[f"{feature}_{mode.replace('-', '_')}_minstr_per_request"] = round(m, 3)
                print(f"{feature:<12} {mode:<11} {m:>24.3f}", flush=True)
    finally:
        sim.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures))  # the last line: what the harness reads
    return 0


if __name__ == "__main__":
    sys.exit(main())
