"""Bad input to every admin route is a 4xx in the one error shape, never a
500: seeded random bodies (wrong types, unknown fields, deep nesting, huge
numbers, odd strings), odd path ids, query values and headers, for every
route of the OpenAPI document."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.hub.conftest import Client, RunningHub

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEED = 20261207
STRINGS = [
    "",
    " ",
    "x" * 300,
    "ünï",
    "../../etc",
    "nrn:nexus:*:*:*",
    "%00",
    "\u202e",
    "1e309",
    "null",
    "*",
    "a/b",
]


def value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return rng.choice(STRINGS)
    if kind == 1:
        return rng.choice([0, -1, 2**63, -(2**70), 1.5, float("1e300")])
    if kind == 2:
        return rng.choice([True, False])
    if kind == 3:
        return None
    if kind == 4:
        return rng.choice(["demo-org", "demo-project", "gpt-4o", "sim", "admin", "demo-key"])
    if kind == 5:
        return "2026-13-45T99:99:99Z"
    if kind == 6:
        return [value(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["id", "org", "project", "name", "email", "type", "kind", "document", "spec", "parent", "policies",
            "roles", "members", "match", "strategy", "settings", "budgets", "allowed_models", "grace_seconds",
            "password", "principal", "action", "resource", "context", "x"]  # fmt: skip
    return {rng.choice(keys): value(rng, depth + 1) for _ in range(rng.randrange(1, 6))}


async def test_no_input_makes_the_hub_fail(hub: RunningHub, admin: Client) -> None:
    rng = random.Random(SEED)
    doc = (await admin.get("/openapi.json")).json
    # (Not auth/logout nor ending all one's sessions: they would end the
    # session the test calls with.)
    ops = [
        (m.upper(), p)
        for p, item in doc["paths"].items()
        for m, _ in item.items()
        if not p.endswith("/logout") and not (m == "delete" and p.endswith("/auth/sessions"))
    ]
    sent = 0
    for method, path in ops:
        for _ in range(6):
            url = path.replace(
                "{id}", rng.choice(["demo-org", "sim", "demo-key", "nope", "%2e%2e", "x" * 200])
            )
            url = url.replace("{user}", rng.choice(["admin", "nobody"]))
            url = url.replace("{sid}", rng.choice(["0123456789abcdef", "nope", "%2e%2e"]))
            if rng.random() < 0.3:
                url += "?" + rng.choice(
                    ["limit=-5", "after=!!!", "limit=99999", "dry_run=maybe", "resource=x", "org=*"]
                )
            headers = {}
            if rng.random() < 0.2:
                headers["If-Match"] = rng.choice(["abc", '"-1"', 'W/"99999999"', ""])
            if method in ("POST", "PUT", "PATCH"):
                body = value(rng)
                raw = rng.choice([None, b"{", b"[]", b"\xff\xfe", b'{"a":' * 50])
                ans = await admin.call(method, url, body if raw is None else None, raw=raw, headers=headers)
            else:
                ans = await admin.call(method, url, headers=headers)
            sent += 1
            assert ans.status < 500, (method, url, ans)
            if ans.status >= 400:
                assert set(ans.json["error"]) >= {"code", "message", "request_id"}, ans
    assert sent > 600
    # And the Hub still works.
    assert (await admin.get("/api/admin/orgs/demo-org")).status == 200
