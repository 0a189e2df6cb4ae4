"""``nexus vault``: the credential vault's local tools.

    nexus vault keygen     # a fresh master key (base64), for NEXUS_VAULT_MASTER_KEY(_FILE)
    nexus vault check      # which master key source this process would use, and its key ids

Credentials, rotation and retirement go through the Hub's admin API
(``/api/admin/credentials``, ``/api/admin/vault``); docs/hub.md.
"""

from __future__ import annotations

import argparse
import sys

from streams.vault.master import MasterKeyError, load_master_keys, new_master_key


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="nexus vault", description="the credential vault's local tools")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("keygen", help="print a fresh master key (32 random bytes, base64)")
    sub.add_parser("check", help="load the configured master key source and list its key ids")
    args = parser.parse_args(argv)
    if args.command == "keygen":
        print(new_master_key())
        return 0
    try:
        keys = load_master_keys()
    except MasterKeyError as exc:
        print(f"nexus vault check: {exc}", file=sys.stderr)
        return 2
    if keys is None:
        print(
            "nexus vault check: no master key source is set "
            "(NEXUS_VAULT_MASTER_KEY, NEXUS_VAULT_MASTER_KEY_FILE or NEXUS_VAULT_MASTER_KEY_COMMAND)",
            file=sys.stderr,
        )
        return 1
    print(f"source: {keys.source}")
    print(f"keys: {', '.join(keys.ids())} (current: {keys.current_id})")
    return 0
