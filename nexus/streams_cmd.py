"""``nexus streams asyncapi``: the event contract as an AsyncAPI 3.0 document
(``streams.faststream_app.contract``), for the teams that consume the
streams.

    nexus streams asyncapi [--stream-prefix P] [--server URL] [--yaml] [--output FILE]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import msgspec

from streams.config_base import ConfigError
from streams.settings import from_flags
from streams.topology import Topology


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nexus streams", description="the streams' contract")
    sub = p.add_subparsers(dest="command", required=True)
    doc = sub.add_parser("asyncapi", help="the AsyncAPI 3.0 document of every stream and event type")
    doc.add_argument("--stream-prefix", default=None, help="(NEXUS_STREAM_PREFIX)")
    doc.add_argument("--server", default=None, help="the NATS URL the document names (NEXUS_NATS_URL)")
    doc.add_argument("--yaml", action="store_true", help="YAML instead of JSON")
    doc.add_argument("--output", type=Path, help="write to this file instead of stdout")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        from_flags(args, stream_prefix="stream_prefix", server="nats_url")
    except ConfigError as exc:
        print(f"nexus streams: {exc}", file=sys.stderr)
        return 2
    from streams.faststream_app import contract

    doc = contract(Topology(prefix=args.stream_prefix), server=args.server)
    text = msgspec.yaml.encode(doc) if args.yaml else msgspec.json.format(msgspec.json.encode(doc), indent=2)
    if args.output:
        args.output.write_bytes(text + b"\n")
    else:
        sys.stdout.buffer.write(text + b"\n")
    return 0
