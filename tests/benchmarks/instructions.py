"""Benchmark: the gateway's CPU cost per request, counted in instructions.

    python tests/benchmarks/instructions.py [--requests 300] [--features bare,hooks,quota,production]
    python tests/benchmarks/instructions.py --features bare,production --functions 25 [--keep DIR]

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
- production: both (what ``run.py`` measures);
- shed (only when asked for): bare with an in-flight cap of 0, so every
  request is refused at admission with a 429: what shedding costs.

``--functions N`` also prints where the instructions go: the top N
functions by exclusive and by inclusive count (``callgrind_annotate``), and
the count by shared object (the interpreter, uvloop, msgspec, aiohttp's
parsers, libc...), each in instructions per request.  Python 3.11 runs
Python-to-Python calls inside one ``_PyEval_EvalFrameDefault``, so Python
code shows up there as one block; ``--py-calls N`` adds the Python-level
view: the same requests under ``cProfile`` (no valgrind), with each
function's calls per request (deterministic: what runs more than once) and
its share of the profiled time (indicative only).  ``--keep DIR`` keeps the
callgrind files for ``callgrind_annotate`` / kcachegrind.

Needs valgrind (Debian package ``valgrind``), NATS on 127.0.0.1:4222 and
Valkey/Redis on 127.0.0.1:6379.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import re
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
from tests.benchmarks.harness.delay import DelayProxy
from tests.benchmarks.harness.loadgen import REPO, Target

PRODUCTION = Path(__file__).with_name("nexus-production.yaml")
FEATURES = ("bare", "hooks", "quota", "production")
EXTRA_FEATURES = ("shed",)


# Under valgrind the gateway runs ~50x slower: its event loop lags far past
# the shedding threshold and it would answer 429s (counted, but not the
# requests being measured).  Load shedding is a per-request comparison
# either way; its probe timer still runs.
UNDER_VALGRIND = {"gateway": {"shed_loop_lag_ms": 0}}


def feature_config(feature: str) -> dict[str, Any]:
    full: dict[str, Any] = msgspec.yaml.decode(PRODUCTION.read_bytes())
    if feature == "bare":
        return dict(UNDER_VALGRIND)
    if feature == "shed":
        return {"gateway": {**UNDER_VALGRIND["gateway"], "max_inflight": 0}}
    cfg = {**copy.deepcopy(full), **UNDER_VALGRIND}
    # Likewise the quota store's silence limit (250 ms): the slowed process
    # itself reads Valkey's answers late, and would refuse with 503s.
    cfg["quotas"].setdefault("store", {})["timeout_ms"] = 30_000
    if feature == "hooks":
        cfg.pop("quotas")
    elif feature == "quota":
        cfg.pop("hooks")
    return cfg


async def _drive(target: Target, stream: bool, n: int, concurrency: int, expect: int = 200) -> None:
    body = target.body(stream)
    headers = {**target.headers, "Content-Type": "application/json"}
    todo = iter(range(n))
    async with aiohttp.ClientSession() as http:

        async def worker() -> None:
            for _ in todo:
                async with http.post(target.url, data=body, headers=headers) as r:
                    await r.read()
                    if r.status != expect:
                        raise RuntimeError(f"status {r.status}: {(await r.read())[:200]!r}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def _wait_ready(
    target: Target, proc: subprocess.Popen[bytes], timeout: float, log: Path, expect: int = 200
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            asyncio.run(_drive(target, False, 1, 1, expect))
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


def measure(
    feature: str,
    stream: bool,
    sim_url: str,
    requests: int,
    concurrency: int,
    work: Path,
    deps: dict[str, str] | None = None,
    keep: Path | None = None,
) -> float:
    """Instructions per request (millions) of one gateway process;
    ``deps``: NEXUS_NATS_URL / NEXUS_VALKEY_URL to use instead (slowed);
    ``keep``: where to copy the callgrind file."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"{feature}-", dir=work))
    launch = systems.nexus_launch(
        {"zero": sim_url}, run_dir, f"INSTR{secrets.token_hex(4).upper()}", feature_config(feature)
    )
    if deps:
        launch.env.update(deps)
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
    expect = 429 if feature == "shed" else 200
    try:
        _wait_ready(target, proc, 180, run_dir / "gateway.log", expect)
        # warm: connections, caches, first-use imports
        asyncio.run(_drive(target, stream, 200, concurrency, expect))
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True)
        asyncio.run(_drive(target, stream, requests, concurrency, expect))
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
    if keep is not None:
        files = sorted(run_dir.glob("callgrind.out*"), key=lambda f: f.stat().st_size)
        shutil.copy(files[-1], keep)
    return total / requests / 1e6


# --- where the instructions go ----------------------------------------------------

# "1,234,567 (12.34%)  file:function [object]" (callgrind_annotate >= 3.21);
# the percentage column is absent with --show-percs=no.
_ANNOTATED = re.compile(r"^\s*([\d,]+)\s+(?:\([\d.]+%\)\s+)?(\S.*)$")


def annotate(callgrind_file: Path, inclusive: bool, top: int) -> list[tuple[int, str]]:
    """The top functions of one callgrind file: (instructions, name [object])."""
    out = subprocess.run(
        [
            "callgrind_annotate",
            f"--inclusive={'yes' if inclusive else 'no'}",
            "--threshold=100",
            "--show-percs=no",
            "--auto=no",
            str(callgrind_file),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows: list[tuple[int, str]] = []
    table = False
    for line in out.splitlines():
        if "file:function" in line:
            table = True
            continue
        m = _ANNOTATED.match(line) if table else None
        if m is None:
            continue
        rows.append((int(m.group(1).replace(",", "")), _short(m.group(2))))
        if len(rows) >= top:
            break
    return rows


def _short(name: str) -> str:
    # "/usr/src/.../Objects/dictobject.c:lookdict [/usr/bin/python3.11]" ->
    # "dictobject.c:lookdict [python3.11]"
    fn, _, obj = name.partition(" [")
    file, sep, func = fn.rpartition(":")
    where = f"{Path(file).name}:{func}" if sep and file != "???" else (func or fn)
    return f"{where} [{Path(obj.rstrip(']')).name}]" if obj else where


def by_object(callgrind_file: Path) -> list[tuple[int, str]]:
    """Exclusive instructions by shared object (the interpreter, uvloop,
    msgspec, libc...), summed from the file's cost lines; the line after a
    ``calls=`` line is a call's inclusive cost (counted where it runs)."""
    names: dict[str, str] = {}
    totals: dict[str, int] = {}
    current = "?"
    after_call = False
    for line in callgrind_file.read_text(errors="replace").splitlines():
        if line.startswith(("ob=", "cob=")):
            # "ob=(3) /usr/lib/libc.so.6" names object 3 the first time it
            # appears (as the running or the called object), "ob=(3)" after.
            ref, _, name = line.partition("=")[2].partition(" ")
            if name:
                names[ref] = name
            if line.startswith("ob="):
                current = names.get(ref, ref)
        elif line.startswith("calls="):
            after_call = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            if after_call:
                after_call = False
                continue
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                totals[current] = totals.get(current, 0) + int(parts[1])
    return sorted(((n, Path(o).name) for o, n in totals.items()), reverse=True)


def print_functions(label: str, callgrind_file: Path, requests: int, top: int) -> None:
    per = requests * 1e3  # thousands of instructions per request
    print(f"\n## {label}: where the instructions go (k instructions per request)")
    print("\nby shared object (exclusive):")
    for n, obj in by_object(callgrind_file)[:12]:
        print(f"  {n / per:>10.1f}  {obj}")
    print(f"\ntop {top} functions, exclusive:")
    for n, name in annotate(callgrind_file, False, top):
        print(f"  {n / per:>10.1f}  {name}")
    # Inclusive counts of the interpreter's own functions are meaningless
    # here (Python calls recurse through them: 'N marks a recursion depth);
    # those of the C libraries say what each library call costs in all.
    print(f"\ntop {top} library functions (not the interpreter), inclusive:")
    shown = 0
    for n, name in annotate(callgrind_file, True, 5000):
        if "'" in name or "[libpython" in name or "[???]" in name or "[" not in name:
            continue
        print(f"  {n / per:>10.1f}  {name}")
        shown += 1
        if shown >= top:
            break
    sys.stdout.flush()


def profile_calls(
    feature: str, stream: bool, sim_url: str, requests: int, concurrency: int, work: Path, top: int
) -> None:
    """The Python-level view: the same requests under cProfile (switched on
    after warm-up by a signal), calls per request and share of the time."""
    import pstats

    run_dir = Path(tempfile.mkdtemp(prefix=f"{feature}-py-", dir=work))
    launch = systems.nexus_launch(
        {"zero": sim_url}, run_dir, f"INSTR{secrets.token_hex(4).upper()}", feature_config(feature)
    )
    stats_file = run_dir / "gateway.pstats"
    python, _m, *rest = launch.argv
    # As a module from the repo (the harness folder has a profile.py of its own).
    argv = [python, "-m", "tests.benchmarks.harness.pyprofile", str(stats_file), "-m", *rest]
    log = (run_dir / "gateway.log").open("wb")
    proc = subprocess.Popen(
        argv, env={**os.environ, **launch.env}, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
    )
    target = launch.target("zero")
    try:
        _wait_ready(target, proc, 60, run_dir / "gateway.log")
        asyncio.run(_drive(target, stream, 200, concurrency))
        proc.send_signal(signal.SIGUSR1)
        time.sleep(0.5)
        asyncio.run(_drive(target, stream, requests, concurrency))
        proc.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while not stats_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)  # dump_stats writes the file whole, but give it a moment
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        systems.delete_streams(launch.nats_url, launch.prefix)
    st = pstats.Stats(str(stats_file))
    raw: dict[Any, Any] = st.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values()) or 1.0
    rows = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    mode = "stream" if stream else "non-stream"
    print(f"\n## {feature} {mode}: Python functions under cProfile ({requests} requests)")
    print(f"  {'calls/req':>9} {'self %':>7} {'cum %':>7}  function")
    for (file, line, func), (_cc, nc, tt, ct, _callers) in rows:
        where = f"{_rel(file)}:{line}({func})" if line else func
        print(f"  {nc / requests:>9.2f} {100 * tt / total:>7.2f} {100 * ct / total:>7.2f}  {where}")
    sys.stdout.flush()


def _rel(file: str) -> str:
    path = Path(file)
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        parts = path.parts
        return "/".join(parts[parts.index("site-packages") + 1 :]) if "site-packages" in parts else path.name


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=300, help="requests counted per measurement")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument(
        "--features",
        default=",".join(FEATURES),
        help=f"a subset of {','.join(FEATURES + EXTRA_FEATURES)}",
    )
    p.add_argument("--modes", default="non-stream,stream")
    p.add_argument(
        "--slow-deps-ms",
        type=float,
        default=0.0,
        help="also measure with NATS and Valkey behind this much added latency each way",
    )
    p.add_argument(
        "--functions",
        type=int,
        default=0,
        metavar="N",
        help="also print the top N functions (exclusive, inclusive) and the count by shared object",
    )
    p.add_argument(
        "--py-calls",
        type=int,
        default=0,
        metavar="N",
        help="also profile the same requests with cProfile: the top N Python functions, calls per request",
    )
    p.add_argument("--keep", metavar="DIR", help="keep the callgrind files in DIR")
    args = p.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind is not installed (apt-get install valgrind): no instruction counts", flush=True)
        return 1
    features = [f for f in args.features.split(",") if f]
    unknown = set(features) - set(FEATURES + EXTRA_FEATURES)
    if unknown:
        p.error(f"unknown feature set(s): {', '.join(sorted(unknown))}")
    work = Path(tempfile.mkdtemp(prefix="nexus-instr-"))
    sim, sim_url = systems.start_sim("sim", "zero", None, work)
    print(f"{'features':<12} {'mode':<24} {'M instr/request':>12}")
    figures: dict[str, float] = {}
    proxies: list[DelayProxy] = []
    variants: list[tuple[str, dict[str, str] | None]] = [("", None)]
    if args.slow_deps_ms > 0:
        nats = DelayProxy("127.0.0.1", 4222, args.slow_deps_ms).start()
        valkey = DelayProxy("127.0.0.1", 6379, args.slow_deps_ms).start()
        proxies += [nats, valkey]
        slowed = {"NEXUS_NATS_URL": nats.url("nats"), "NEXUS_VALKEY_URL": valkey.url("redis") + "/0"}
        variants.append((f"_deps_plus_{args.slow_deps_ms:g}ms", slowed))
    keep_dir = Path(args.keep) if args.keep else (work / "kept" if args.functions else None)
    if keep_dir is not None:
        keep_dir.mkdir(parents=True, exist_ok=True)
    detailed: list[tuple[str, Path]] = []
    profiles: list[tuple[str, bool]] = []
    try:
        for feature in features:
            for mode in args.modes.split(","):
                for suffix, deps in variants:
                    key = f"{feature}_{mode.replace('-', '_')}{suffix}_minstr_per_request"
                    keep = (
                        keep_dir / f"{key.removesuffix('_minstr_per_request')}.callgrind"
                        if keep_dir
                        else None
                    )
                    m = measure(
                        feature, mode == "stream", sim_url, args.requests, args.concurrency, work, deps, keep
                    )
                    figures[key] = round(m, 3)
                    label = mode + (f" (deps +{args.slow_deps_ms:g} ms)" if deps else "")
                    print(f"{feature:<12} {label:<24} {m:>12.3f}", flush=True)
                    if keep is not None and args.functions:
                        detailed.append((f"{feature} {label}", keep))
                if args.py_calls:
                    profiles.append((feature, mode == "stream"))
        for label, keep in detailed:
            print_functions(label, keep, args.requests, args.functions)
        for feature, stream in profiles:
            profile_calls(feature, stream, sim_url, args.requests, args.concurrency, work, args.py_calls)
    finally:
        for proxy in proxies:
            proxy.stop()
        sim.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures))  # the last line: what the harness reads
    return 0


if __name__ == "__main__":
    sys.exit(main())
