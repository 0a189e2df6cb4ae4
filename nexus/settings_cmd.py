"""``nexus settings``: the process settings in effect (``streams.settings``)
and where each came from; secrets masked."""

from __future__ import annotations

import argparse
import sys

from streams.config_base import ConfigError
from streams.settings import describe


def main(argv: list[str]) -> int:
    argparse.ArgumentParser(
        prog="nexus settings",
        description="Print each NEXUS_* setting in effect and its source (default, file, environment).",
    ).parse_args(argv)
    try:
        rows = describe()
    except ConfigError as exc:
        print(f"nexus settings: {exc}", file=sys.stderr)
        return 2
    width = max(len(name) for name, _, _ in rows)
    for name, value, source in rows:
        print(f"{name:<{width}}  {value or '(unset)'}  [{source}]")
    return 0
