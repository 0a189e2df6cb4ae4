"""The systems under test: the simulated upstream called directly, Nexus, and
the peers (LiteLLM proxy, Portkey gateway), each routed to the same
simulated upstreams.  Every one is started bound to 127.0.0.1 only, and that
is checked from /proc/net/tcp before any traffic is sent."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.benchmarks.harness.loadgen import REPO, Target
from tests.benchmarks.harness.procs import CorePlan, Proc, free_port, spawn, wait_port

PEERS_DIR = Path(__file__).resolve().parents[1] / "peers"
CACHE = Path(os.environ.get("NEXUS_BENCH_CACHE", Path.home() / ".cache" / "nexus-bench"))
LITELLM_VENV = CACHE / "litellm-venv"
PORTKEY_DIR = CACHE / "portkey"
PORTKEY_VERSION = "1.15.2"
LITELLM_VERSION = "1.109.1"

# The two upstream behaviours: as fast as possible, and a realistic provider
# (network round trip, time to first token, token rate).
SIM_VARIANTS: dict[str, list[str]] = {
    "zero": [],
    "realistic": ["--latency-ms", "20", "--ttft-ms", "200", "--tokens-per-s", "100"],
}
SIM_MODEL = "sim-small"


class Unavailable(Exception):
    """The system cannot be run here (not installed, or not built yet)."""


@dataclass
class Running:
    name: str
    targets: dict[str, Target]  # upstream variant -> target
    procs: list[Proc]
    version: str
    notes: list[str] = field(default_factory=list)
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def alive(self) -> bool:
        return all(p.alive() for p in self.procs)

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        for fn in self.cleanup:
            try:
                fn()
            except Exception as exc:  # cleanup must not hide the results
                print(f"  cleanup of {self.name} failed: {exc}", flush=True)


def start_sim(name: str, variant: str, cpus: tuple[int, ...] | None, log_dir: Path) -> tuple[Proc, str]:
    port = free_port()
    argv = [sys.executable, "-m", "nexus.cli", "sim", "--host", "127.0.0.1", "--port", str(port)]
    proc = spawn(name, [*argv, *SIM_VARIANTS[variant]], log_dir=log_dir, cpus=cpus, cwd=REPO)
    wait_port(proc, port, 30)
    check_loopback_only(proc, port)
    return proc, f"http://127.0.0.1:{port}/v1"


def check_loopback_only(proc: Proc, port: int) -> None:
    """Refuse to benchmark anything listening beyond loopback on its port."""
    exposed = [addr for addr in _listen_addresses(port) if not _is_loopback(addr)]
    if exposed:
        proc.stop()
        raise RuntimeError(f"{proc.name} listens on {exposed} (port {port}), not only loopback: stopped it")


def _listen_addresses(port: int) -> list[str]:
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            local, state = cols[1], cols[3]
            addr, _, hexport = local.rpartition(":")
            if state == "0A" and int(hexport, 16) == port:
                out.append(addr)
    return out


def _is_loopback(hexaddr: str) -> bool:
    if len(hexaddr) == 8:  # IPv4, little-endian: 127.x.x.x ends in 7F
        return hexaddr.upper().endswith("7F")
    return hexaddr.upper() in ("00000000000000000000000001000000", "0000000000000000FFFF00000100007F")


def probe(target: Target, stream: bool, timeout: float = 30.0) -> None:
    """One real request before measuring: a misconfigured system fails here
    with its own error, not as a table full of errors."""
    req = urllib.request.Request(
        target.url,
        data=target.body(stream),
        headers={"Content-Type": "application/json", **target.headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"probe got HTTP {exc.code}: {exc.read()[:400]!r}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise RuntimeError(f"probe failed: {exc}") from None
    if stream and b"data:" not in body:
        raise RuntimeError(f"probe: stream answer has no SSE data: {body[:300]!r}")
    if not stream and b"choices" not in body:
        raise RuntimeError(f"probe: answer has no choices: {body[:300]!r}")


def _wait_probe(proc: Proc, target: Target, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not proc.alive():
            break
        try:
            probe(target, False, timeout=10)
            probe(target, True, timeout=10)
            return
        except RuntimeError as exc:
            last = str(exc)
            time.sleep(0.5)
    raise RuntimeError(f"{proc.name} never answered a probe request: {last}\n{proc.log_tail()}")


# --- direct ----------------------------------------------------------------


def start_direct(upstreams: dict[str, str], cores: CorePlan, log_dir: Path, run_id: str) -> Running:
    # "direct" is the simulated upstream itself as the system under test, on
    # the SUT core, so its row is the ceiling every gateway is compared with.
    procs, targets = [], {}
    for variant in upstreams:
        proc, url = start_sim(f"direct-sim-{variant}", variant, cores.sut, log_dir)
        procs.append(proc)
        targets[variant] = Target(f"{url}/chat/completions", {}, SIM_MODEL)
    running = Running("direct", targets, procs, "nexus sim")
    for t in targets.values():
        probe(t, False)
    return running


# --- the minimal aiohttp pass-through ------------------------------------------------


def start_passthrough(upstreams: dict[str, str], cores: CorePlan, log_dir: Path, run_id: str) -> Running:
    """A feature-less aiohttp server + pooled ClientSession in front of each
    upstream (peers/aiohttp_passthrough.py): what the HTTP layer alone costs
    a Python gateway on aiohttp (issue 17 prints Nexus beside it)."""
    procs, targets = [], {}
    script = PEERS_DIR / "aiohttp_passthrough.py"
    for variant, url in upstreams.items():
        port = free_port()
        argv = [sys.executable, str(script), "--port", str(port), "--upstream", url]
        proc = spawn(f"passthrough-{variant}", argv, log_dir=log_dir, cpus=cores.sut, cwd=REPO)
        procs.append(proc)
        targets[variant] = Target(f"http://127.0.0.1:{port}/v1/chat/completions", {}, SIM_MODEL)
        wait_port(proc, port, 30)
        check_loopback_only(proc, port)
    running = Running("passthrough", targets, procs, "aiohttp pass-through")
    try:
        for t in targets.values():
            _wait_probe(procs[0], t, 30)
    except Exception:
        running.stop()
        raise
    return running


# --- Nexus -----------------------------------------------------------------


def nexus_available() -> str | None:
    if not (REPO / "ingress" / "gateway" / "cli.py").exists():
        return "the gateway (ingress/gateway/cli.py) is not in this checkout yet"
    return None


def nexus_config(
    port: int, upstreams: dict[str, str], key_hash: str, extra: dict[str, Any] | None = None
) -> str:
    """The benchmark's config: one org, project and key, one provider per
    upstream variant.  Every section not written here keeps the gateway's
    defaults (the features a deployment gets out of the box); ``extra`` (from
    ``--nexus-config-extra FILE``) adds or overrides top-level sections, to
    benchmark with more features turned on."""
    from streams.config_validation import parse_config

    cfg: dict[str, Any] = {
        "version": 1,
        "auth": {"secret_env": "NEXUS_KEY_HMAC_SECRET"},
        "gateway": {"host": "127.0.0.1", "port": port, "node_id": "bench"},
        "orgs": [{"id": "bench-org", "name": "Benchmark"}],
        "projects": [{"id": "bench-project", "org": "bench-org"}],
        "virtual_keys": [
            {"id": "bench-key", "hash": key_hash, "org": "bench-org", "project": "bench-project"}
        ],
        "providers": [
            {
                "name": f"sim-{variant}",
                "kind": "openai",
                "base_url": url,
                # the simulated upstream runs on loopback
                "allow_private_network": True,
            }
            for variant, url in upstreams.items()
        ],
        "models": [
            {
                "name": f"bench-{variant}",
                "provider": f"sim-{variant}",
                "provider_model": SIM_MODEL,
                "price": {"input": 0.15, "output": 0.60},
            }
            for variant in upstreams
        ],
    }
    for section, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(cfg.get(section), dict):
            cfg[section] = {**cfg[section], **value}
        else:
            cfg[section] = value
    text = json.dumps(cfg, indent=2, default=str)  # JSON is YAML; validated like any config
    parse_config(text, source="benchmark config")
    return text


@dataclass(frozen=True)
class NexusLaunch:
    """How to start one benchmark gateway: its config (written), environment
    and command line, and the key a client sends."""

    argv: list[str]
    env: dict[str, str]
    port: int
    key: str
    prefix: str  # the JetStream stream prefix of its events

    @property
    def nats_url(self) -> str:
        return self.env["NEXUS_NATS_URL"]

    def target(self, variant: str) -> Target:
        return Target(
            f"http://127.0.0.1:{self.port}/v1/chat/completions",
            {"Authorization": f"Bearer {self.key}"},
            f"bench-{variant}",
        )


def nexus_launch(
    upstreams: dict[str, str],
    work_dir: Path,
    prefix: str,
    config_extra: dict[str, Any] | None = None,
) -> NexusLaunch:
    """A gateway routed to ``upstreams`` with a random key and HMAC secret,
    its config and event outbox under ``work_dir``."""
    from streams.keys import hash_key, new_key

    secret = secrets.token_hex(24)
    key = new_key()
    port = free_port()
    cfg_path = work_dir / "nexus-bench.yaml"
    cfg_path.write_text(nexus_config(port, upstreams, hash_key(key, secret.encode()), config_extra))
    env = {
        "NEXUS_KEY_HMAC_SECRET": secret,
        "NEXUS_NATS_URL": os.environ.get("NEXUS_NATS_URL", "nats://127.0.0.1:4222"),
        "NEXUS_VALKEY_URL": os.environ.get("NEXUS_VALKEY_URL", "redis://127.0.0.1:6379/0"),
        # A stream prefix of its own: the benchmark's events never mix with
        # anyone else's, and are deleted afterwards.
        "NEXUS_STREAM_PREFIX": prefix,
        # ...and Valkey keys of its own (quota reservations and counters,
        # caches), deleted with the streams: nothing left under the default
        # "nexus:" prefix of a real deployment on the same Valkey.
        "NEXUS_VALKEY_PREFIX": valkey_prefix(prefix),
        "NEXUS_LOG_LEVEL": "WARNING",
        # the event outbox of this run lives (and dies) with its work dir
        "NEXUS_DATA_DIR": str(work_dir / "nexus-data"),
    }
    argv = [
        sys.executable,
        "-m",
        "nexus.cli",
        "gateway",
        "--config",
        str(cfg_path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        # One process: the harness pins it to its core, and callgrind counts
        # one process (the --workers case is measured on its own).
        "--workers",
        "1",
    ]
    return NexusLaunch(argv, env, port, key, prefix)


def start_nexus(
    upstreams: dict[str, str],
    cores: CorePlan,
    log_dir: Path,
    run_id: str,
    env_extra: dict[str, str],
    config_extra: dict[str, Any] | None = None,
    name: str = "nexus",
) -> Running:
    reason = nexus_available()
    if reason:
        raise Unavailable(reason)
    launch = nexus_launch(upstreams, log_dir, f"BENCH{run_id.replace('-', '')[-12:].upper()}", config_extra)
    env = {**launch.env, **env_extra}
    proc = spawn("nexus-gateway", launch.argv, log_dir=log_dir, cpus=cores.sut, env=env, cwd=REPO)
    running = Running(
        name,
        {v: launch.target(v) for v in upstreams},
        [proc],
        _git_version(),
        notes=[f"stream prefix {launch.prefix} on {launch.nats_url}"],
    )
    running.cleanup.append(lambda: delete_streams(launch.nats_url, launch.prefix))
    try:
        wait_port(proc, launch.port, 60)
        check_loopback_only(proc, launch.port)
        _wait_probe(proc, running.targets["zero" if "zero" in upstreams else next(iter(upstreams))], 30)
    except Exception:
        running.stop()
        raise
    return running


def _git_version() -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            timeout=10,
            check=False,
        ).stdout.decode()
    except (OSError, subprocess.TimeoutExpired):
        rev = ""
    return f"nexus {rev.strip() or 'unknown'}"


def valkey_prefix(prefix: str) -> str:
    """The Valkey key prefix of the benchmark gateway whose stream prefix is
    ``prefix``."""
    return f"nexus-bench:{prefix}:"


def delete_streams(nats_url: str, prefix: str) -> None:
    """Delete the benchmark's own streams (those whose name carries its
    unique prefix) and its Valkey keys."""
    import asyncio

    import nats
    import valkey

    client = valkey.Valkey.from_url(os.environ.get("NEXUS_VALKEY_URL", "redis://127.0.0.1:6379/0"))
    try:
        keys = list(client.scan_iter(match=valkey_prefix(prefix) + "*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
    except valkey.exceptions.ConnectionError:
        pass  # no Valkey, no keys
    finally:
        client.close()  # type: ignore[no-untyped-call]

    async def run() -> None:
        nc = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=1)
        try:
            js = nc.jetstream()
            # streams, object stores (OBJ_...) and KV buckets (KV_...) alike
            for info in await js.streams_info():
                name = info.config.name or ""
                if prefix.lower() in name.lower():
                    await js.delete_stream(name)
        finally:
            await nc.close()

    asyncio.run(run())


# --- peers -----------------------------------------------------------------


def install_peer(name: str, allow_install: bool, timeout: float = 900) -> str | None:
    """Install a peer with its script; returns why it is unavailable, or None."""
    marker = LITELLM_VENV if name == "litellm" else PORTKEY_DIR
    if (marker / ".nexus-bench-complete").exists() and _peer_ready(name):
        return None
    if not allow_install:
        return f"not installed (run tests/benchmarks/peers/install_{name}.sh, or drop --no-install)"
    script = PEERS_DIR / f"install_{name}.sh"
    print(f"  installing {name} with {script.name} (bounded to {timeout:.0f}s) ...", flush=True)
    try:
        proc = subprocess.run(
            ["bash", str(script), str(marker)], capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return f"install did not finish within {timeout:.0f}s"
    if proc.returncode != 0 or not _peer_ready(name):
        tail = (proc.stdout + proc.stderr).decode(errors="replace").strip().splitlines()[-3:]
        return "install failed: " + " | ".join(tail)
    return None


def _peer_ready(name: str) -> bool:
    if name == "litellm":
        return (LITELLM_VENV / "bin" / "litellm").exists()
    return (PORTKEY_DIR / "node_modules/@portkey-ai/gateway/build/start-loopback.js").exists()


def start_litellm(upstreams: dict[str, str], cores: CorePlan, log_dir: Path, run_id: str) -> Running:
    master = "sk-bench-" + secrets.token_hex(16)
    port = free_port()
    lines = ["model_list:"]
    for variant, url in upstreams.items():
        lines += [
            f"  - model_name: bench-{variant}",
            "    litellm_params:",
            f"      model: openai/{SIM_MODEL}",
            f"      api_base: {url}",
            "      api_key: sk-sim",
        ]
    lines += ["general_settings:", "  master_key: os.environ/LITELLM_MASTER_KEY"]
    cfg = log_dir / "litellm.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    env = {
        "LITELLM_MASTER_KEY": master,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "NO_DOCS": "True",
    }
    argv = [
        str(LITELLM_VENV / "bin" / "litellm"),
        "--config",
        str(cfg),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    proc = spawn("litellm", argv, log_dir=log_dir, cpus=cores.sut, env=env, cwd=log_dir)
    running = Running(
        "litellm",
        {
            v: Target(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                {"Authorization": f"Bearer {master}"},
                f"bench-{v}",
            )
            for v in upstreams
        },
        [proc],
        f"litellm {LITELLM_VERSION}",
    )
    try:
        wait_port(proc, port, 120)
        check_loopback_only(proc, port)
        _wait_probe(proc, next(iter(running.targets.values())), 60)
    except Exception:
        running.stop()
        raise
    return running


def start_portkey(upstreams: dict[str, str], cores: CorePlan, log_dir: Path, run_id: str) -> Running:
    port = free_port()
    pkg = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway"
    # start-loopback.js is the shipped start script with hostname 127.0.0.1
    # added (install_portkey.sh); the shipped one binds every interface.
    argv = ["node", "build/start-loopback.js", f"--port={port}", "--headless"]
    proc = spawn("portkey", argv, log_dir=log_dir, cpus=cores.sut, env={"NODE_ENV": "production"}, cwd=pkg)
    running = Running(
        "portkey",
        {
            v: Target(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                {
                    "Authorization": "Bearer sk-sim",
                    "x-portkey-provider": "openai",
                    "x-portkey-custom-host": url,
                },
                SIM_MODEL,
            )
            for v, url in upstreams.items()
        },
        [proc],
        f"@portkey-ai/gateway {PORTKEY_VERSION} (@hono/node-server 1.13.8)",
    )
    try:
        wait_port(proc, port, 60)
        check_loopback_only(proc, port)
        _wait_probe(proc, next(iter(running.targets.values())), 30)
    except Exception:
        running.stop()
        raise
    return running
