"""``nexus sim``: run the simulated provider in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from nexus.sim.server import start_sim
from nexus.sim.settings import SimSettings

log = logging.getLogger("nexus.sim")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nexus sim", description="Run the simulated LLM provider (OpenAI wire format)."
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3070)
    p.add_argument("--latency-ms", type=float, default=0.0, help="delay before the response headers")
    p.add_argument("--ttft-ms", type=float, default=0.0, help="delay before the first token")
    p.add_argument("--tokens-per-s", type=float, default=0.0, help="token rate (0 = unthrottled)")
    p.add_argument("--fail-status", type=int, default=0, help="answer this HTTP error status ...")
    p.add_argument("--fail-every", type=int, default=1, help="... on every N-th request")
    p.add_argument("--drop-after", type=int, default=-1, help="drop streams after N content chunks")
    p.add_argument("--hang", action="store_true", help="never answer (exercise caller timeouts)")
    p.add_argument("--api-key", default=None, help="require this bearer key")
    p.add_argument("--uvloop", action=argparse.BooleanOptionalAction, default=True)
    return p


def settings_from_args(args: argparse.Namespace) -> SimSettings:
    if args.fail_status and not 400 <= args.fail_status <= 599:
        raise SystemExit("nexus sim: --fail-status must be an HTTP error status (400-599)")
    if args.fail_every < 1:
        raise SystemExit("nexus sim: --fail-every must be at least 1")
    for name in ("latency_ms", "ttft_ms", "tokens_per_s"):
        if getattr(args, name) < 0:
            raise SystemExit(f"nexus sim: --{name.replace('_', '-')} must not be negative")
    return SimSettings(
        latency_ms=args.latency_ms,
        ttft_ms=args.ttft_ms,
        tokens_per_s=args.tokens_per_s,
        fail_status=args.fail_status,
        fail_every=args.fail_every,
        drop_after=args.drop_after,
        hang=args.hang,
        api_key=args.api_key,
    )


async def _serve(settings: SimSettings, host: str, port: int) -> None:
    sim = await start_sim(settings, host=host, port=port)
    print(f"nexus sim listening on {sim.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await sim.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = settings_from_args(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.uvloop:
        import uvloop

        uvloop.run(_serve(settings, args.host, args.port))
    else:
        asyncio.run(_serve(settings, args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
