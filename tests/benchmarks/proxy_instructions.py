"""Instructions per LLM call through the compliance proxy (a script, not a
pytest test): ``proxy_bench.py``'s set-up (its TLS upstream, its proxy
config: the connection-stage IP filter and the request and response keyword
filters on, usage and cost recorded, events to NATS) with the proxy under
valgrind's callgrind, instrumentation off until it is warm.

    python tests/benchmarks/proxy_instructions.py [--calls 300] [--relay]

Counts the proxy process's user-space instructions over ``--calls``
keep-alive ``POST /v1/chat/completions`` through the pipeline (``--relay``:
2-byte GETs relayed in the bumped connection instead), and prints them per
call.  Unlike the timings of ``proxy_bench.py``, the count does not depend
on the machine's load.  Needs valgrind and NATS on 127.0.0.1:4222.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks import proxy_bench as bench


async def _calls(open_: bench.Opener, call: bench.Call, n: int, conns: int = 4) -> None:
    streams = [await open_() for _ in range(conns)]

    async def worker(r: asyncio.StreamReader, w: asyncio.StreamWriter, k: int) -> None:
        for _ in range(k):
            await call(r, w, bench.BUMPED)

    per, extra = divmod(n, conns)
    await asyncio.gather(*(worker(r, w, per + (i < extra)) for i, (r, w) in enumerate(streams)))
    for _, w in streams:
        w.close()


def measure(calls: int, relay: bool) -> float:
    tmp = Path(tempfile.mkdtemp(prefix="nexus-proxy-instr-"))
    setup = bench.Setup(tmp)
    out = tmp / "callgrind.out"
    pin = bench._pin
    try:
        up_port = setup.start_upstream()
        bench._pin = lambda cpus: [  # the proxy's command, under callgrind
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
        ]
        try:
            proxy_port, pid, ca = setup.start_proxy(up_port)
        finally:
            bench._pin = pin
        bumped = bench.opener(bench.BUMPED, up_port, ca, proxy_port)
        call = bench.get_small if relay else bench.post_chat
        asyncio.run(_calls(bumped, call, 200))  # warm: leaves, pools, first-use imports
        subprocess.run(["callgrind_control", "-i", "on", str(pid)], check=True, capture_output=True)
        asyncio.run(_calls(bumped, call, calls))
        subprocess.run(["callgrind_control", "-i", "off", str(pid)], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
        total = 0
        for f in tmp.glob("callgrind.out*"):
            for line in f.read_text(errors="replace").splitlines():
                if line.startswith("totals:"):
                    total += int(line.split()[1])
        if total == 0:
            raise RuntimeError("callgrind counted nothing")
        return total / calls
    finally:
        setup.close()
        asyncio.run(setup.drop_streams())
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--relay", action="store_true", help="relayed GETs instead of LLM calls")
    args = p.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is not installed: no instruction counts")
    per = measure(args.calls, args.relay)
    what = "relayed GET" if args.relay else "LLM call through the pipeline"
    print(f"{per / 1000:,.0f}k instructions per {what} ({args.calls} keep-alive calls)", flush=True)


if __name__ == "__main__":
    main()
