"""Benchmark: what one IAM evaluation costs the Hub (budget: well under 50 us).

    python tests/benchmarks/iam_eval.py [--evaluations 20000] [--no-callgrind]

The principal holds 10 policies (two managed roles and eight custom ones with
wildcards, NotAction/NotResource, IP/date/tag/set conditions and Denies;
19 statements); the request is a key rotation with a realistic context.
Printed:

- instructions per ``evaluate`` and per ``is_allowed`` (valgrind's callgrind:
  the same script run with N and with 0 evaluations, the difference divided
  by N), which do not move with the machine's load;
- microseconds per call (best of 7 timed rounds) beside the cost of decoding
  the same request's JSON body with msgspec in the same run, for scale;
  these move with load, read them on a quiet machine;
- ``allowed_actions`` over the whole catalogue (what the console asks for).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import timeit
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import msgspec

from hub.iam import (
    ACTIONS,
    VERSION,
    AttachedPolicy,
    AuthzRequest,
    allowed_actions,
    evaluate,
    is_allowed,
    managed_policy,
    parse_policy,
)

PRINCIPAL = "nrn:nexus:iam:acme/eu:user/alice"
RESOURCE = "nrn:nexus:gateway:acme/eu:virtual-key/vk_8f2a"
CONTEXT: dict[str, Any] = {
    "nexus:SourceIp": "10.20.30.40",
    "nexus:CurrentTime": datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
    "nexus:SecureTransport": True,
    "nexus:MultiFactorAuthPresent": True,
    "nexus:MultiFactorAuthAge": 600,
    "nexus:PrincipalGroups": ["dev", "oncall"],
    "nexus:PrincipalProjects": ["chatbot", "search"],
    "nexus:ResourceOwner": "alice",
    "nexus:ResourceProject": "chatbot",
    "nexus:VirtualKeyType": "personal",
    "nexus:ResourceTag/env": "prod",
}


def _doc(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": VERSION, "Statement": list(statements)}


CUSTOM = [
    _doc(
        {
            "Sid": "OfficeOnly",
            "Effect": "Deny",
            "Action": "admin:*",
            "Resource": "*",
            "Condition": {"NotIpAddress": {"nexus:SourceIp": ["10.0.0.0/8", "192.168.0.0/16"]}},
        },
        {
            "Sid": "NoWritesWithoutMfa",
            "Effect": "Deny",
            "NotAction": "admin:*.read",
            "Resource": "*",
            "Condition": {"BoolIfExists": {"nexus:MultiFactorAuthPresent": False}},
        },
    ),
    _doc(
        {
            "Sid": "ProdKeys",
            "Effect": "Allow",
            "Action": ["admin:virtual-key.read", "admin:virtual-key.rotate"],
            "Resource": "nrn:nexus:gateway:acme/*:virtual-key/*",
            "Condition": {
                "StringEquals": {"nexus:ResourceTag/env": ["prod", "staging"]},
                "ForAnyValue:StringEquals": {"nexus:PrincipalGroups": "oncall"},
            },
        },
    ),
    _doc(
        {
            "Sid": "ChangeWindow",
            "Effect": "Allow",
            "Action": "admin:routing-rule.*",
            "Resource": "nrn:nexus:gateway:acme/eu:routing-rule/*",
            "Condition": {
                "DateGreaterThan": {"nexus:CurrentTime": "2026-01-01T00:00:00Z"},
                "DateLessThan": {"nexus:CurrentTime": "2026-12-31T23:59:59Z"},
            },
        },
        {
            "Sid": "Models",
            "Effect": "Allow",
            "Action": ["admin:model.*", "admin:price.read"],
            "Resource": ["nrn:nexus:gateway:acme:model/*", "nrn:nexus:gateway:acme/eu:model/*"],
        },
    ),
    _doc(
        {
            "Sid": "NotVault",
            "Effect": "Allow",
            "Action": "admin:*.read",
            "NotResource": "nrn:nexus:vault:*:*",
        },
        {"Sid": "NoCredentials", "Effect": "Deny", "Action": "admin:credential.*", "Resource": "*"},
    ),
    _doc(
        {
            "Sid": "Hooks",
            "Effect": "Allow",
            "Action": ["admin:hook.read", "admin:hook.update"],
            "Resource": "nrn:nexus:gateway:acme/eu:hook/*",
            "Condition": {"StringLike": {"nexus:UserAgent": ["nexus-cli/*", "nexus-console/*"]}},
        },
        {
            "Sid": "Quotas",
            "Effect": "Allow",
            "Action": "admin:quota.*",
            "Resource": "nrn:nexus:gateway:acme/eu:quota/*",
            "Condition": {"NumericLessThan": {"nexus:MultiFactorAuthAge": 3600}},
        },
    ),
    _doc(
        {
            "Sid": "OwnUser",
            "Effect": "Allow",
            "Action": ["admin:user.read", "admin:user.update"],
            "Resource": "nrn:nexus:iam:*:user/${nexus:PrincipalId}",
        },
        {
            "Sid": "NoSelfDelete",
            "Effect": "Deny",
            "Action": "admin:user.delete",
            "Resource": "nrn:nexus:iam:*:user/${nexus:PrincipalId}",
        },
    ),
    _doc(
        {
            "Sid": "Projects",
            "Effect": "Allow",
            "Action": ["admin:project.read", "admin:project.update"],
            "Resource": "nrn:nexus:iam:acme/eu:project/*",
            "Condition": {"ForAnyValue:StringEquals": {"nexus:PrincipalProjects": "${nexus:ResourceId}"}},
        },
        {
            "Sid": "Audit",
            "Effect": "Allow",
            "Action": ["admin:audit.read", "admin:audit.export"],
            "Resource": "nrn:nexus:audit:acme/eu:audit/*",
            "Condition": {"Bool": {"nexus:SecureTransport": True}},
        },
    ),
    _doc(
        {
            "Sid": "Sinks",
            "Effect": "Allow",
            "Action": "admin:siem-sink.read",
            "Resource": "nrn:nexus:audit:acme*:*",
            "Condition": {"Null": {"nexus:ResourceTag/restricted": "true"}},
        },
        {
            "Sid": "NoDelete",
            "Effect": "Deny",
            "Action": ["admin:*.delete"],
            "Resource": "nrn:nexus:*:acme/eu/*:*",
        },
    ),
]


def principal_policies() -> list[AttachedPolicy]:
    out = [
        AttachedPolicy("m-dev", "NexusDeveloper", managed_policy("NexusDeveloper", "acme/eu"), "acme/eu"),
        AttachedPolicy("m-view", "NexusViewer", managed_policy("NexusViewer", "acme"), "acme"),
    ]
    for n, doc in enumerate(CUSTOM):
        out.append(AttachedPolicy(f"c{n}", f"custom-{n}", parse_policy(doc), "acme"))
    return out


def run(evaluations: int) -> None:
    policies = principal_policies()
    request = AuthzRequest(PRINCIPAL, "admin:virtual-key.rotate", RESOURCE, CONTEXT)
    for _ in range(200):  # warm the compiled matchers' caches
        evaluate(policies, request)
    for _ in range(evaluations):
        evaluate(policies, request)


def run_fast(evaluations: int) -> None:
    policies = principal_policies()
    request = AuthzRequest(PRINCIPAL, "admin:virtual-key.rotate", RESOURCE, CONTEXT)
    for _ in range(200):
        is_allowed(policies, request)
    for _ in range(evaluations):
        is_allowed(policies, request)


def callgrind_total(mode: str, evaluations: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                __file__,
                "--worker",
                mode,
                "--evaluations",
                str(evaluations),
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        text = out.read_text()
    found = re.search(r"^summary:\s+(\d+)", text, re.M) or re.search(r"^totals:\s+(\d+)", text, re.M)
    assert found, "callgrind wrote no summary"
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=20000)
    parser.add_argument("--no-callgrind", action="store_true")
    parser.add_argument("--worker", choices=["evaluate", "is_allowed"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        (run if args.worker == "evaluate" else run_fast)(args.evaluations)
        return

    policies = principal_policies()
    request = AuthzRequest(PRINCIPAL, "admin:virtual-key.rotate", RESOURCE, CONTEXT)
    decision = evaluate(policies, request)
    statements = sum(len(p.document.statements) for p in policies)
    print(
        f"{len(policies)} policies, {statements} statements; decision: {decision.outcome} by "
        f"{decision.deciding.policy_name if decision.deciding else None} "
        f"{decision.deciding.sid if decision.deciding else ''}, {len(decision.matched)} matched"
    )

    body = msgspec.json.encode(
        {
            "principal": PRINCIPAL,
            "action": request.action,
            "resource": RESOURCE,
            "context": {k: str(v) for k, v in CONTEXT.items()},
        }
    )
    rounds = 2000

    def best(stmt: Any) -> float:
        return min(timeit.repeat(stmt, number=rounds, repeat=7)) / rounds * 1e6

    t_eval = best(lambda: evaluate(policies, request))
    t_fast = best(lambda: is_allowed(policies, request))
    t_decode = best(lambda: msgspec.json.decode(body))
    t_list = (
        min(
            timeit.repeat(
                lambda: allowed_actions(policies, RESOURCE, CONTEXT, principal=PRINCIPAL), number=50, repeat=5
            )
        )
        / 50
        * 1e6
    )
    print(f"evaluate:        {t_eval:7.1f} us   (budget 50 us)")
    print(f"is_allowed:      {t_fast:7.1f} us")
    ratio = t_eval / t_decode
    print(f"decode the body: {t_decode:7.1f} us   (msgspec, same run, for scale: evaluate = {ratio:.0f}x)")
    print(f"allowed_actions: {t_list:7.1f} us   ({len(ACTIONS)} catalogue actions)")

    if args.no_callgrind or shutil.which("valgrind") is None:
        print("callgrind: skipped" + ("" if args.no_callgrind else " (valgrind not installed)"))
        return
    n = args.evaluations
    for mode in ("evaluate", "is_allowed"):
        per = (callgrind_total(mode, n) - callgrind_total(mode, 0)) / n
        print(f"{mode + ':':16} {per:9,.0f} instructions per call (callgrind, {n} calls minus 0)")


if __name__ == "__main__":
    main()
