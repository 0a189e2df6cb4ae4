"""``nexus quota`` (run the processor) and ``nexus replay quotas``."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from streams.config import NexusConfig
from streams.config_base import ConfigError
from streams.config_validation import parse_config
from streams.settings import from_flags
from streams.topology import Topology


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--config", default=None, help="(NEXUS_CONFIG; default nexus.yaml)")
    p.add_argument("--nats", default=None, help="(NEXUS_NATS_URL)")
    p.add_argument("--valkey", default=None, help="(NEXUS_VALKEY_URL; default redis://127.0.0.1:6379/0)")
    p.add_argument("--stream-prefix", default=None, help="(NEXUS_STREAM_PREFIX)")
    p.add_argument("--key-prefix", default=None, help="(NEXUS_VALKEY_PREFIX)")
    return p


def _settle_flags(args: argparse.Namespace) -> None:
    from_flags(
        args,
        config="config",
        nats="nats_url",
        valkey="valkey_url",
        stream_prefix="stream_prefix",
        key_prefix="valkey_prefix",
    )
    # The processor runs next to a local Valkey and nexus.yaml when told nothing.
    args.config = args.config or "nexus.yaml"
    args.valkey = args.valkey or "redis://127.0.0.1:6379/0"


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
        _settle_flags(args)
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
        _settle_flags(args)
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
