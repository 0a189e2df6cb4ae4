"""One benchmark run: start the upstreams and each system in turn, drive them
with the same load, collect the rows, the per-feature figures and the
profile, write bench-results/."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.benchmarks.harness import systems
from tests.benchmarks.harness.figures import ScriptFigures, run_scripts
from tests.benchmarks.harness.loadgen import REPO, Target, ensure_wrk, run_openloop, run_wrk
from tests.benchmarks.harness.procs import (
    CorePlan,
    Meter,
    Phase,
    Proc,
    pin_shared_services,
    restore_affinity,
    set_nice,
    settle,
)
from tests.benchmarks.harness.profile import take_profile
from tests.benchmarks.harness.report import (
    Row,
    compare_with_direct,
    figures_text,
    machine_info,
    text_table,
    write_results,
)

# nexus: the defaults (the lean HTTP/1.1 front end, the lean upstream
# client); nexus-aiohttp: the same on aiohttp both sides (NEXUS_GATEWAY_HTTP
# and NEXUS_UPSTREAM_HTTP=aiohttp, the stack before issue 17);
# nexus-aiohttp-client: the lean front end with the aiohttp upstream client;
# passthrough: a feature-less aiohttp server + client (issue 17's baseline).
ALL_SYSTEMS = (
    "direct",
    "passthrough",
    "nexus",
    "nexus-aiohttp",
    "nexus-aiohttp-client",
    "litellm",
    "portkey",
)
# The process settings of each Nexus row.
NEXUS_ROWS: dict[str, dict[str, str]] = {
    "nexus": {},
    "nexus-aiohttp": {"NEXUS_GATEWAY_HTTP": "aiohttp", "NEXUS_UPSTREAM_HTTP": "aiohttp"},
    "nexus-aiohttp-client": {"NEXUS_UPSTREAM_HTTP": "aiohttp"},
}


def nexus_features(extra: dict[str, Any] | None) -> list[str]:
    """What the Nexus rows ran with, read off the config they were given."""
    out = [
        "virtual-key auth (HMAC-SHA256 lookup, constant-time)",
        "event publishing to JetStream (benchmark's own stream prefix, deleted afterwards)",
    ]
    extra = extra or {}
    hooks = (extra.get("hooks") or {}).get("pipeline") or []
    if hooks:
        named = ", ".join(
            f"{h.get('id')} ({h.get('stage')}: "
            + ", ".join((h.get("settings") or {}).get("packs") or [h.get("type", "")])
            + ")"
            for h in hooks
        )
        out.append(f"compliance hooks: {named}; verdict events published")
    quotas = extra.get("quotas") or {}
    limits = [b.get("id") for b in quotas.get("budgets") or []] + [
        r.get("id") for r in quotas.get("rate_limits") or []
    ]
    if limits:
        out.append(f"quota reservation on Valkey before every request: {', '.join(map(str, limits))}")
    rest = sorted(set(extra) - {"hooks", "quotas"})
    if rest:
        out.append(f"also from the extra config: {', '.join(rest)}")
    if not hooks and not limits:
        out.append("no hooks, no quotas (--nexus-config-extra none): the bare gateway")
    return out


@dataclass
class Plan:
    quick: bool = False
    systems: tuple[str, ...] = ALL_SYSTEMS
    upstreams: tuple[str, ...] = ("zero", "realistic")
    install_peers: bool = True
    figures: bool = True
    profile: bool = False
    connections: int = 64
    nice: int = 0
    nexus_config_extra: dict[str, Any] | None = None
    out_dir: Path = REPO / "bench-results"
    command: str = ""
    # filled from ``quick``
    wrk_s: float = 10.0
    wrk_warmup_s: float = 2.0
    # Peak runs on a shared VM move by ~10 % from one to the next: the row
    # reports the median of this many (and their range in its note).
    peak_repeats: int = 3
    open_s: float = 10.0
    open_warmup_s: float = 1.0
    rates: tuple[int, ...] = (100, 500, 1000)
    realistic_rates: tuple[int, ...] = (100, 500)
    realistic_modes: tuple[str, ...] = ("non-stream", "stream")
    overload: bool = True
    # only the non-stream peak (the overload rate is twice it) and the overload row
    overload_only: bool = False
    profile_s: float = 15.0
    figures_timeout_s: float = 300.0
    # an open-loop rate this many times above the system's own measured peak
    # is not run: it would only measure a queue growing until timeouts
    max_rate_over_peak: float = 3.0
    # longest wait for the system to go idle between two measurements
    settle_s: float = 15.0

    def __post_init__(self) -> None:
        if self.quick:
            self.wrk_s, self.wrk_warmup_s = 2.0, 0.0  # no warm-up pass
            self.peak_repeats = 1
            self.open_s, self.open_warmup_s = 2.0, 0.5
            self.rates = (100,)
            self.realistic_rates = (100,)
            self.realistic_modes = ("stream",)
            self.overload = False
            self.profile_s = 3.0
            self.figures_timeout_s = 120.0
            self.settle_s = 2.0
        if self.overload_only:
            self.overload = True


@dataclass
class Session:
    plan: Plan
    cores: CorePlan
    work: Path
    run_id: str
    wrk: str | None
    rows: list[Row] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    profile: str = ""
    services: str = ""  # where the machine's NATS and Valkey ran

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print("   ", _one_line(row), flush=True)


def _one_line(r: Row) -> str:
    if r.rps is None:
        return f"{r.system} {r.upstream} {r.mode} {r.load}: {r.note}"

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}ms"

    ttft = f" ttft50={ms(r.ttft_p50_ms)}" if r.ttft_p50_ms is not None else ""
    note = f" ({r.note})" if r.note else ""
    return (
        f"{r.system} {r.upstream} {r.mode} {r.load}: {r.rps:,.0f} rps p50={ms(r.p50_ms)} "
        f"p99={ms(r.p99_ms)}{ttft} errors={r.errors} rss={r.peak_rss_mb or 0:.0f}MB "
        f"cpu={r.cpu_cores or 0:.2f} other-on-sut-cpu={r.foreign_cpu_on_sut_core or 0:.2f}{note}"
    )


def _measure(
    s: Session, running: systems.Running, meter: Meter, row: Row, fn: Callable[[], dict[str, Any]]
) -> dict[str, Any] | None:
    if not running.alive():
        row.note = "not run: the system had exited"
        s.add(row)
        return None
    settle(meter, timeout=s.plan.settle_s)
    try:
        with Phase(meter, s.cores.sut) as ph:
            res = fn()
    except Exception as exc:
        row.note = f"failed: {exc}"[:300]
        s.add(row)
        return None
    row.rps = round(float(res["rps"]), 1)
    row.p50_ms, row.p99_ms = res.get("p50_ms"), res.get("p99_ms")
    row.ttft_p50_ms = res.get("ttft_p50_ms")
    row.errors = int(res.get("errors", 0))
    row.error_detail = {
        k: v
        for k, v in {
            **res.get("error_detail", {}),
            **res.get("status_errors", {}),
            **res.get("exceptions", {}),
        }.items()
        if v
    }
    if res.get("client_dropped"):
        row.error_detail["client_dropped"] = res["client_dropped"]
    if "shed_429" in res:
        row.shed_429 = int(res["shed_429"])
    if res.get("note"):
        row.note = str(res["note"])
    lag = res.get("client_lag_p99_ms")
    if lag is not None and lag > 5:
        row.note = (row.note + "; " if row.note else "") + f"client send lag p99 {lag:.1f} ms"
    row.peak_rss_mb = round(ph.result.peak_rss_bytes / 2**20, 1)
    row.cpu_cores = round(ph.result.cpu_cores, 2)
    if ph.result.foreign_cores is not None:
        row.foreign_cpu_on_sut_core = round(ph.result.foreign_cores, 2)
    if not running.alive():
        row.note = (row.note + "; " if row.note else "") + "the system exited during the run"
    s.add(row)
    return res


def _median_peak(repeats: int, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``run`` (one wrk pass) ``repeats`` times; the pass with the median
    RPS stands for the row, the others' range goes in its note, and the
    errors of every pass are counted."""
    results = [run() for _ in range(max(1, repeats))]
    if len(results) == 1:
        return results[0]
    ranked = sorted(results, key=lambda r: float(r["rps"]))
    median = dict(ranked[len(ranked) // 2])
    median["errors"] = sum(int(r.get("errors", 0)) for r in results)
    low, high = float(ranked[0]["rps"]), float(ranked[-1]["rps"])
    extra = f"median of {len(results)} runs ({low:,.0f}-{high:,.0f} rps)"
    median["note"] = f"{median['note']}; {extra}" if median.get("note") else extra
    return median


def _drive(s: Session, running: systems.Running, upstream: str, peaks: dict[str, float]) -> None:
    plan, target = s.plan, running.targets[upstream]
    meter = Meter(running.pids).start()
    try:
        modes = ("non-stream", "stream") if upstream == "zero" else plan.realistic_modes
        if plan.overload_only:
            modes = ("non-stream",)
        if upstream == "zero" and s.wrk:
            for mode in modes:
                stream = mode == "stream"
                # warm-up pass (connections, JITs, caches), not recorded; a
                # failure shows in the measured pass that follows
                if plan.wrk_warmup_s > 0:
                    with contextlib.suppress(Exception):
                        run_wrk(
                            s.wrk,
                            target,
                            stream=stream,
                            duration_s=plan.wrk_warmup_s,
                            connections=plan.connections,
                            cpus=s.cores.load,
                            work_dir=s.work,
                        )
                row = Row(running.name, upstream, mode, f"peak (wrk c={plan.connections})", "wrk")
                res = _measure(
                    s,
                    running,
                    meter,
                    row,
                    functools.partial(
                        _median_peak,
                        plan.peak_repeats,
                        functools.partial(
                            run_wrk,
                            s.wrk or "wrk",
                            target,
                            stream=stream,
                            duration_s=plan.wrk_s,
                            connections=plan.connections,
                            cpus=s.cores.load,
                            work_dir=s.work,
                        ),
                    ),
                )
                if res is not None:
                    peaks[mode] = float(res["rps"])
        elif upstream == "zero":
            s.add(
                Row(running.name, upstream, "non-stream", "peak", "wrk", note="not run: wrk is not installed")
            )
        rates = plan.rates if upstream == "zero" else plan.realistic_rates
        if plan.overload_only:
            rates = ()
        for mode in modes:
            for rate in rates:
                row = Row(running.name, upstream, mode, f"{rate}/s", "open-loop")
                peak = peaks.get(mode)
                if peak is not None and rate > plan.max_rate_over_peak * peak:
                    row.note = (
                        f"not run: {rate}/s is over {plan.max_rate_over_peak:g}x its peak of {peak:,.0f}/s"
                    )
                    s.add(row)
                    continue
                _measure(s, running, meter, row, functools.partial(_openloop, s, target, mode, rate))
        if upstream == "zero" and plan.overload and running.name != "direct" and peaks.get("non-stream"):
            rate = round(2 * peaks["non-stream"])
            row = Row(running.name, upstream, "non-stream", f"2x peak = {rate}/s", "open-loop")
            # Many clients, not one pool: the queue must form at the server
            # for its admission control (429 + Retry-After) to be what is
            # measured, so the overload row opens up to 4000 connections.
            _measure(
                s, running, meter, row, functools.partial(_openloop, s, target, "non-stream", rate, 4000)
            )
        if upstream == "zero" and plan.profile and running.name == "nexus" and s.wrk:
            _profile(s, running, target)
    finally:
        meter.close()


def _openloop(s: Session, target: Target, mode: str, rate: int, connections: int = 256) -> dict[str, Any]:
    return run_openloop(
        target,
        stream=mode == "stream",
        rate=rate,
        duration_s=s.plan.open_s,
        warmup_s=s.plan.open_warmup_s,
        cpus=s.cores.load,
        work_dir=s.work,
        connections=connections,
    )


def _profile(s: Session, running: systems.Running, target: Target) -> None:
    def load() -> float:
        res = run_wrk(
            s.wrk or "wrk",
            target,
            stream=False,
            duration_s=s.plan.profile_s,
            connections=s.plan.connections,
            cpus=s.cores.load,
            work_dir=s.work,
        )
        return float(res["rps"])

    s.profile = take_profile(running.procs[0].pid, s.plan.out_dir, s.plan.profile_s, s.cores.load, load)
    print(f"  profile: {s.profile.splitlines()[0]}", flush=True)


STARTERS: dict[str, Callable[..., systems.Running]] = {
    "direct": systems.start_direct,
    "passthrough": systems.start_passthrough,
    "litellm": systems.start_litellm,
    "portkey": systems.start_portkey,
}


def _start(s: Session, name: str, upstreams: dict[str, str]) -> systems.Running:
    if name == "nexus":
        return systems.start_nexus(upstreams, s.cores, s.work, s.run_id, {}, s.plan.nexus_config_extra)
    if name in NEXUS_ROWS:
        env = NEXUS_ROWS[name]
        extra = s.plan.nexus_config_extra
        return systems.start_nexus(upstreams, s.cores, s.work, s.run_id, env, extra, name)
    return STARTERS[name](upstreams, s.cores, s.work, s.run_id)


def run(plan: Plan) -> tuple[Path, Path, list[Row]]:
    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    cores = CorePlan.for_machine()
    set_nice(plan.nice)
    machine = machine_info()
    work = Path(tempfile.mkdtemp(prefix="nexus-bench-"))
    run_id = uuid.uuid4().hex[:12]
    wrk = ensure_wrk(allow_install=True)
    s = Session(plan, cores, work, run_id, wrk)
    nice = f"; nice {plan.nice}" if plan.nice else ""
    print(f"benchmark {stamp}: {cores.describe()}{nice}", flush=True)
    print(f"work dir (configs, logs): {work}", flush=True)
    if wrk is None:
        s.notes.append("wrk is not installed and could not be installed: no peak (closed-loop) rows")

    unavailable: dict[str, str] = {}
    for peer in ("litellm", "portkey"):
        if peer in plan.systems:
            reason = systems.install_peer(peer, plan.install_peers)
            if reason:
                unavailable[peer] = reason
    for nexus in NEXUS_ROWS:
        if nexus in plan.systems and (reason := systems.nexus_available()):
            unavailable[nexus] = reason

    sims: list[Proc] = []
    upstreams: dict[str, str] = {}
    services, moved = pin_shared_services(cores.load)
    s.services = services
    print(services, flush=True)
    try:
        for variant in plan.upstreams:
            proc, url = systems.start_sim(f"upstream-sim-{variant}", variant, cores.sim, work)
            sims.append(proc)
            upstreams[variant] = url
        for name in plan.systems:
            if name in unavailable:
                print(f"== {name}: {unavailable[name]}", flush=True)
                s.add(Row(name, "-", "-", "-", "-", note=unavailable[name]))
                continue
            print(f"== {name}: starting", flush=True)
            try:
                running = _start(s, name, upstreams)
            except Exception as exc:
                print(f"   could not start {name}: {exc}", flush=True)
                s.add(
                    Row(name, "-", "-", "-", "-", note=f"could not start: {str(exc).splitlines()[0][:200]}")
                )
                continue
            s.versions[name] = running.version
            s.notes += [f"{name}: {n}" for n in running.notes]
            peaks: dict[str, float] = {}
            try:
                for variant in plan.upstreams:
                    _drive(s, running, variant, peaks)
            finally:
                running.stop()
    finally:
        for p in sims:
            p.stop()
        restore_affinity(moved)

    figs: list[ScriptFigures] = []
    if plan.figures:
        print("== per-feature figures (the later issues' own scripts)", flush=True)
        figs = run_scripts(quick=plan.quick, timeout_s=plan.figures_timeout_s, cpus=None)

    compare_with_direct(s.rows)
    meta = _meta(s, started, machine, upstreams)
    md, js = write_results(plan.out_dir, stamp, meta, s.rows, figs)
    print()
    print(text_table(s.rows))
    if figs:
        print("\nper-feature figures (each later issue's own script):")
        print(figures_text(figs))
    print(f"\npinning: {cores.describe()}")
    print(f"results: {md}\n         {js}\n         (and latest.md / latest.json beside them)")
    if s.profile:
        print(f"profile: {s.profile}")
    shutil.rmtree(work, ignore_errors=True)
    return md, js, s.rows


def _meta(
    s: Session, started: dt.datetime, machine: dict[str, Any], upstreams: dict[str, str]
) -> dict[str, Any]:
    p = s.plan
    return {
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": p.command,
        "quick": p.quick,
        "machine": machine,
        "pinning": s.cores.describe()
        + (f"; every process the harness starts runs at nice {p.nice}" if p.nice else ""),
        "method": {
            "peak": f"wrk -t1 -c{p.connections} -d{p.wrk_s:g}s after a {p.wrk_warmup_s:g}s warm-up"
            + (
                f", {p.peak_repeats} runs: the median run's figures, the range in the note"
                if p.peak_repeats > 1
                else ""
            )
            + "; RPS counts 2xx responses only; latency percentiles from wrk's own histogram",
            "fixed rate": "open-loop client (its own process: raw asyncio HTTP/1.1 on uvloop, "
            "keep-alive pool of 256) at "
            f"{', '.join(map(str, p.rates))}/s for {p.open_s:g}s after {p.open_warmup_s:g}s "
            "at the same rate; "
            "latency and TTFT from each request's scheduled send time (no coordinated omission); "
            "TTFT = first SSE event with non-empty content",
            "added vs direct": "p50 of the system minus p50 of the simulated upstream called directly, "
            "same mode, load and upstream",
            "peak RSS / CPU": "sum over the system's process tree, sampled every 100 ms from /proc; "
            "CPU cores = CPU seconds / wall seconds of the phase",
            "overload": "open loop at twice the system's own non-stream peak" if p.overload else "not run",
        },
        "upstreams": {v: f"nexus sim {' '.join(systems.SIM_VARIANTS[v]) or '(no delay)'}" for v in upstreams},
        "systems": s.versions,
        "nexus_features": nexus_features(p.nexus_config_extra),
        "caveats": [
            "the machine is shared: other work may run at the same time (see load average)",
            f"NATS and Valkey are the machine's own services, not counted in RSS/CPU; {s.services}",
            *s.notes,
        ],
        "profile": s.profile,
    }
