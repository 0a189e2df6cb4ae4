"""``nexus <command>``: each command lives in its own module and is imported
only when run, so ``nexus sim`` does not pay for DuckDB and friends."""

from __future__ import annotations

import importlib
import sys

# `nexus <command> <sub>` routed to another owner than `nexus <command>`:
# `nexus replay quotas` rebuilds counters, the rest of `replay` projections.
SUBCOMMANDS: dict[tuple[str, str], str] = {
    ("replay", "quotas"): "processors.quota.cli:replay_main",
    ("replay", "hub"): "hub.cli:replay_main",
}

# command -> (module:function, one-line help).  The function takes argv
# (without the command) and returns an exit code.
COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("nexus.up:main", "start a working single-node Nexus (embedded NATS, Postgres, Valkey)"),
    "gateway": ("ingress.gateway.cli:main", "run the gateway alone against configured services"),
    "proxy": (
        "ingress.proxy.cli:main",
        "run the compliance proxy (CONNECT, TLS bump) on :3128; `proxy ca`, `proxy hash-password`",
    ),
    "project": ("projections.cli:project_main", "run the projection worker"),
    "replay": (
        "projections.cli:replay_main",
        "drop and rebuild projections from the streams (`nexus replay quotas`: quota counters;"
        " `nexus replay hub`: the Hub's read model)",
    ),
    "analytics": ("projections.analytics.cli:main", "DuckDB rollups: Parquet export, refresh, status"),
    "sim": ("nexus.sim.cli:main", "run the simulated LLM provider"),
    "keys": ("nexus.keys_cmd:main", "create virtual keys and HMAC secrets"),
    "sql": ("nexus.sql_cmd:main", "query the Postgres read models of a running nexus up"),
    "config": ("nexus.keys_cmd:config_main", "validate a config file"),
    "settings": ("nexus.settings_cmd:main", "the NEXUS_* settings in effect and their sources"),
    "quota": ("processors.quota.cli:main", "run the quota processor (settles usage on quota counters)"),
    "replay-quotas": ("processors.quota.cli:replay_main", "rebuild every quota counter (as `replay quotas`)"),
    "audit": ("processors.audit.cli:main", "run the audit trail, verify its hash chain, purge bodies"),
    "siem": ("processors.siem.cli:main", "forward events to SIEM sinks (syslog, CEF, HEC, Elastic, webhook)"),
    "hub": ("nexus.hub_cmd:main", "run the Hub (admin API on :3060); import/export config as code"),
    "vault": (
        "nexus.vault_cmd:main",
        "the credential vault: `keygen` prints a master key, `check` the source in use",
    ),
    "admin": (
        "hub.admin_cli:main",
        "the Hub's admin API from the command line (login, keys, orgs, policies...)",
    ),
    "alerts": (
        "processors.alerts.cli:main",
        "run the alerts worker (rules on events -> webhook, Slack, PagerDuty, e-mail); `replay` its log",
    ),
    "reconcile": (
        "processors.reconcile.cli:main",
        "record requests whose node died as aborted and release their quota reservations",
    ),
    "streams": (
        "nexus.streams_cmd:main",
        "the event contract: `nexus streams asyncapi` prints the AsyncAPI document",
    ),
    "deadletters": (
        "nexus.deadletters_cmd:main",
        "what consumers could not apply: list, show, re-drive after a fix, purge",
    ),
}


def _usage() -> str:
    lines = ["usage: nexus <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    entry = COMMANDS.get(args[0])
    if entry is None:
        print(f"nexus: unknown command {args[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    target, rest = entry[0], args[1:]
    if len(args) > 1 and (args[0], args[1]) in SUBCOMMANDS:
        target, rest = SUBCOMMANDS[(args[0], args[1])], args[2:]
    module, func = target.split(":")
    result = getattr(importlib.import_module(module), func)(rest)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
