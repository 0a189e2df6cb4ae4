"""``nexus keys`` and ``nexus config``: operator helpers that need no server."""

from __future__ import annotations

import argparse
import secrets
import sys

from streams.config_base import ConfigError
from streams.config_snapshot import load_snapshot
from streams.keys import display_prefix, hash_key, new_key


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="nexus keys")
    sub = parser.add_subparsers(dest="cmd", required=True)
    new = sub.add_parser("new", help="create a virtual key; prints the key once and its config entry")
    new.add_argument("--secret-env", default="NEXUS_KEY_HMAC_SECRET")
    sub.add_parser("secret", help="print a fresh HMAC secret for auth.secret_env")
    args = parser.parse_args(argv)
    if args.cmd == "secret":
        print(secrets.token_urlsafe(48))
        return 0
    import os

    secret = os.environ.get(args.secret_env)
    if not secret:
        print(f"nexus keys new: set {args.secret_env} first (nexus keys secret prints one)", file=sys.stderr)
        return 2
    key = new_key()
    print(f"key (shown once, store it now): {key}")
    print("config entry:")
    print(f"  - id: <key-id>\n    prefix: {display_prefix(key)}\n    hash: {hash_key(key, secret.encode())}")
    print("    org: <org>\n    project: <project>\n    allowed_models: ['*']")
    return 0


def config_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="nexus config")
    parser.add_argument("action", choices=["check"])
    parser.add_argument("file")
    args = parser.parse_args(argv)
    try:
        snap = load_snapshot(args.file)
    except ConfigError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 1
    print(f"ok: version {snap.version}, {len(snap.models)} models, {len(snap.config.virtual_keys)} keys")
    return 0
