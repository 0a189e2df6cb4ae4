"""Nexus side by side with the bare upstream, LiteLLM and Portkey, in one run.

    python tests/benchmarks/run.py                 # the full run (about 15 min; installs wrk and the peers)
    python tests/benchmarks/run.py --quick         # a smoke run: short durations, fewer rates
    python tests/benchmarks/run.py --profile       # also a py-spy flame graph of Nexus at peak
    python tests/benchmarks/run.py --soak 30m      # Nexus alone at a steady rate, RSS over time (not in CI)
    python tests/benchmarks/run.py --only-figures projection_throughput.py   # one per-feature figure alone

It starts the simulated upstream (no delay, and a realistic one), then each
system routed to it, pinned to its own CPU with the load generator on
another; drives each with wrk (closed loop, peak RPS) and an open-loop client
(fixed rate, latency and TTFT); prints the table and writes it to
bench-results/ (Markdown + JSON, timestamped and latest.*).  Every server is
bound to 127.0.0.1 and only loopback traffic is sent.  Peers are installed
outside the project venv (~/.cache/nexus-bench; tests/benchmarks/peers/).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PRODUCTION = Path(__file__).resolve().parent / "nexus-production.yaml"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.benchmarks.harness.procs import set_nice  # noqa: E402
from tests.benchmarks.harness.runner import ALL_SYSTEMS, Plan, run  # noqa: E402
from tests.benchmarks.harness.soak import parse_duration, run_soak  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tests/benchmarks/run.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="short durations and fewer rates (a smoke test)")
    p.add_argument(
        "--systems",
        default=",".join(ALL_SYSTEMS),
        help=f"comma-separated subset of {','.join(ALL_SYSTEMS)} (default: all)",
    )
    p.add_argument("--upstreams", default="zero,realistic", help="sim variants: zero,realistic")
    p.add_argument("--no-install", action="store_true", help="do not install missing peers (report them)")
    p.add_argument("--no-figures", action="store_true", help="skip the per-feature benchmark scripts")
    p.add_argument(
        "--only-figures",
        metavar="SCRIPTS",
        help="only these per-feature scripts, comma-separated (e.g. projection_throughput.py); no systems",
    )
    p.add_argument("--profile", action="store_true", help="py-spy flame graph of Nexus at peak load")
    p.add_argument(
        "--overload-only",
        action="store_true",
        help="only the non-stream peak and the overload row (open loop at twice that peak)",
    )
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run everything the harness starts at this nice value (e.g. -10 on a busy shared machine; root)",
    )
    p.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    p.add_argument(
        "--nexus-config-extra",
        metavar="FILE",
        default=str(PRODUCTION),
        help="YAML merged into the generated Nexus config (top-level sections); default: the "
        "production features (compliance hooks with the default packs, quota budgets and a rate "
        f"limit checked on Valkey: {PRODUCTION.relative_to(REPO)}); 'none' for the bare gateway",
    )
    p.add_argument("--out", default=str(REPO / "bench-results"), help="results folder")
    p.add_argument("--soak", metavar="DURATION", help="soak mode instead: e.g. 30m (Nexus only)")
    p.add_argument("--soak-rate", type=int, default=500, help="soak request rate per second (default 500)")
    p.add_argument("--soak-window", default="60s", help="one RSS/latency sample per window (default 60s)")
    return p


def _config_extra(p: argparse.ArgumentParser, path: str | None) -> dict[str, Any] | None:
    if not path or path == "none":
        return None
    import yaml

    try:
        extra = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        p.error(f"--nexus-config-extra: {exc}")
    if not isinstance(extra, dict):
        p.error("--nexus-config-extra: the file must hold a mapping of config sections")
    return extra


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    command = "python tests/benchmarks/run.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    out = Path(args.out)
    extra = _config_extra(p, args.nexus_config_extra)
    if args.soak:
        try:
            duration, window = parse_duration(args.soak), parse_duration(args.soak_window)
        except ValueError as exc:
            p.error(str(exc))
        if args.soak_rate <= 0 or window <= 0:
            p.error("--soak-rate and --soak-window must be positive")
        if not -20 <= args.nice <= 19:
            p.error("--nice must be between -20 and 19")
        set_nice(args.nice)
        run_soak(duration, args.soak_rate, window, out, command.strip(), extra)
        return 0
    if args.only_figures:
        from tests.benchmarks.harness.figures import discover, run_scripts
        from tests.benchmarks.harness.report import figures_text

        names = [n.strip() for n in args.only_figures.split(",") if n.strip()]
        if not names or any(n not in discover() for n in names):
            p.error(f"--only-figures: choose from {','.join(discover())}")
        if not -20 <= args.nice <= 19:
            p.error("--nice must be between -20 and 19")
        set_nice(args.nice)
        print(figures_text(run_scripts(quick=args.quick, timeout_s=300.0, cpus=None, only=names)))
        return 0
    chosen = tuple(s.strip() for s in args.systems.split(",") if s.strip())
    unknown = [s for s in chosen if s not in ALL_SYSTEMS]
    if unknown or not chosen:
        p.error(f"--systems: unknown {unknown}; choose from {','.join(ALL_SYSTEMS)}")
    upstreams = tuple(u.strip() for u in args.upstreams.split(",") if u.strip())
    if not upstreams or any(u not in ("zero", "realistic") for u in upstreams):
        p.error("--upstreams: choose from zero,realistic")
    if not -20 <= args.nice <= 19:
        p.error("--nice must be between -20 and 19")
    if args.connections < 1:
        p.error("--connections must be at least 1")
    # direct first: every other row is compared with it
    ordered = tuple(s for s in ALL_SYSTEMS if s in chosen)
    plan = Plan(
        quick=args.quick,
        systems=ordered,
        upstreams=upstreams,
        install_peers=not args.no_install,
        figures=not args.no_figures,
        profile=args.profile,
        overload_only=args.overload_only,
        connections=args.connections,
        nice=args.nice,
        nexus_config_extra=extra,
        out_dir=out,
        command=command.strip(),
    )
    run(plan)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
