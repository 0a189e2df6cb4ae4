"""``nexus quota`` (run the processor) and ``nexus replay quotas``."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from streams.config import ConfigError, NexusConfig, parse_config
from streams.topology import Topology


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--config", default=os.environ.get("NEXUS_CONFIG", "nexus.yaml"))
    p.add_argument("--nats", default=os.environ.get("NEXUS_NATS_URL", "nats://127.0.0.1:4222"))
    p.add_argument("--valkey", default=os.environ.get("NEXUS_VALKEY_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--stream-prefix", default=os.environ.get("NEXUS_STREAM_PREFIX", "NEXUS"))
    p.add_argument("--key-prefix", default=os.environ.get("NEXUS_VALKEY_PREFIX", "nexus:"))
    return p


def _load(path: str) -> NexusConfig:
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_config(text, source=path)


async def _run(args: argparse.Namespace) -> int:
    from processors.quota.worker import QuotaProcessor

    proc = QuotaProcessor(
        _load(args.config),
        nats_url=args.nats,
        valkey_url=args.valkey,
        topology=Topology(prefix=args.stream_prefix),
        key_prefix=args.key_prefix,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await proc.start()
    print("quota processor running", flush=True)
    await stop.wait()
    await proc.stop()
    return 0


def main(argv: list[str]) -> int:
    args = _parser("nexus quota", "run the quota processor (settles usage events)").parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except ConfigError as exc:
        print(f"nexus quota: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # NATS / Valkey unreachable at start-up
        print(f"nexus quota: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def replay_main(argv: list[str]) -> int:
    from processors.quota.replay import replay_quotas

    args = _parser(
        "nexus replay quotas",
        "rebuild every quota counter from the traffic stream (stop the processor first)",
    ).parse_args(argv)
    try:
        cfg = _load(args.config)
        report = asyncio.run(
            replay_quotas(
                cfg,
                nats_url=args.nats,
                valkey_url=args.valkey,
                topology=Topology(prefix=args.stream_prefix),
                key_prefix=args.key_prefix,
            )
        )
    except ConfigError as exc:
        print(f"nexus replay quotas: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # NATS / Valkey unreachable: say so, no traceback
        print(f"nexus replay quotas: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(
        f"replayed {report.events} usage events up to seq {report.last_seq}: "
        f"{report.applied} applied, {report.duplicates} duplicates, "
        f"{report.wiped_keys} counter keys rebuilt, in {report.seconds:.2f}s"
    )
    return 0
