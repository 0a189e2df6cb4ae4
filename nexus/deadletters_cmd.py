"""``nexus deadletters``: what consumers could not apply, and sending it again.

    nexus deadletters list    [--consumer C] [--code X] [--limit N] [--json]
    nexus deadletters show    SEQ
    nexus deadletters redrive (SEQ ... | --all) [--consumer C] [--code X]
    nexus deadletters purge   (SEQ ... | --all) [--consumer C] [--code X]

Every command takes ``--nats-url`` (default ``$NEXUS_NATS_URL`` or
nats://127.0.0.1:4222) and ``--stream-prefix`` (``$NEXUS_STREAM_PREFIX`` or
NEXUS).  ``redrive`` puts each message back on its stream for the consumer
that gave up on it (fix the cause first: upgrade the consumer, repair the
store); a consumer that still cannot apply it records it again.  Exit
codes: 0 done, 1 some entries could not be re-driven, 2 bad usage or NATS
unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import sys

import nats.errors

from streams import deadletter
from streams.config_base import ConfigError
from streams.jetstream import connect
from streams.settings import from_flags
from streams.topology import Topology


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nexus deadletters", description="list, show and re-drive dead letters")
    p.add_argument("--nats-url", default=None, help="(NEXUS_NATS_URL)")
    p.add_argument("--stream-prefix", default=None, help="(NEXUS_STREAM_PREFIX)")
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="list dead letters, oldest first")
    ls.add_argument("--consumer")
    ls.add_argument("--code")
    ls.add_argument("--limit", type=int)
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    show = sub.add_parser("show", help="one dead letter with its payload")
    show.add_argument("seq", type=int)
    for name, text in (("redrive", "send back to their stream"), ("purge", "delete for good")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("seqs", type=int, nargs="*", metavar="SEQ")
        cmd.add_argument("--all", action="store_true", help="every entry (of --consumer / --code)")
        cmd.add_argument("--consumer")
        cmd.add_argument("--code")
    return p


def _when(ms: int) -> str:
    if ms <= 0:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _summary(dl: deadletter.DeadLetter) -> dict[str, object]:
    return {
        "seq": dl.dlq_seq,
        "at": _when(dl.at_ms),
        "consumer": dl.consumer,
        "code": dl.code,
        "disposition": dl.disposition,
        "stream": dl.stream,
        "stream_seq": dl.stream_seq,
        "subject": dl.subject,
        "event_type": dl.event_type,
        "event_id": dl.event_id,
        "reason": dl.reason,
        "bytes": len(dl.data),
    }


async def _run(args: argparse.Namespace) -> int:
    topology = Topology(prefix=args.stream_prefix)
    nc = await connect(args.nats_url, name="nexus-deadletters", max_reconnect_attempts=2)
    try:
        js = nc.jetstream()
        if args.command == "list":
            found = await deadletter.entries(
                js, topology, consumer=args.consumer, code=args.code, limit=args.limit
            )
            for dl in found:
                if args.json:
                    print(json.dumps(_summary(dl)))
                else:
                    print(
                        f"{dl.dlq_seq}\t{_when(dl.at_ms)}\t{dl.consumer}\t{dl.code}\t{dl.disposition}\t"
                        f"{dl.stream}:{dl.stream_seq}\t{dl.event_type or '-'}\t{dl.event_id or '-'}\t"
                        f"{dl.reason}"
                    )
            if not args.json:
                print(f"{len(found)} dead letter(s)", file=sys.stderr)
            return 0
        if args.command == "show":
            one = await deadletter.get(js, topology, args.seq)
            if one is None:
                print(f"nexus deadletters: no entry {args.seq}", file=sys.stderr)
                return 1
            for key, value in _summary(one).items():
                print(f"{key}: {value}")
            print("payload:" if one.payload_kept else "payload: (not kept; still in its stream)")
            print(one.data[:4096].decode("utf-8", "backslashreplace"))
            if len(one.data) > 4096:
                print(f"... ({len(one.data) - 4096} more bytes)")
            return 0
        if not args.seqs and not args.all:
            print(f"nexus deadletters {args.command}: name entries (SEQ ...) or --all", file=sys.stderr)
            return 2
        chosen = await deadletter.entries(js, topology, consumer=args.consumer, code=args.code)
        if args.seqs:
            wanted = set(args.seqs)
            missing = wanted - {d.dlq_seq for d in chosen}
            chosen = [d for d in chosen if d.dlq_seq in wanted]
            for seq in sorted(missing):
                print(f"{seq}: no such entry (of that consumer / code)", file=sys.stderr)
        if args.command == "purge":
            print(f"{await deadletter.purge(js, topology, chosen)} dead letter(s) deleted")
            return 0
        sent, failed = await deadletter.redrive(js, topology, chosen)
        for dl in sent:
            print(f"{dl.dlq_seq}: back on {dl.subject} for {dl.consumer}")
        for dl, why in failed:
            print(f"{dl.dlq_seq}: not re-driven: {why}", file=sys.stderr)
        print(f"{len(sent)} re-driven, {len(failed)} not")
        return 1 if failed else 0
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        from_flags(args, nats_url="nats_url", stream_prefix="stream_prefix")
    except ConfigError as exc:
        print(f"nexus deadletters: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args))
    except (nats.errors.NoServersError, OSError) as exc:
        print(f"nexus deadletters: cannot reach NATS at {args.nats_url}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
