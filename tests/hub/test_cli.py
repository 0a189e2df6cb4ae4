"""``nexus admin`` and ``nexus hub import/export`` as an operator runs them
(subprocesses) against a running Hub; config as code round trips."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from pathlib import Path

import msgspec
import pytest

from hub.compile import compile_config
from hub.importer import plan
from streams.config_validation import parse_config
from tests.hub.conftest import ADMIN_EMAIL, RunningHub

pytestmark = pytest.mark.integration


class Cli:
    def __init__(self, home: Path, url: str) -> None:
        self.env = {**os.environ, "NEXUS_HOME": str(home), "NEXUS_HUB_URL": url}
        self.env.pop("NEXUS_HUB_TOKEN", None)

    async def __call__(self, *args: str, stdin: str = "", ok: bool = True) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "nexus.cli",
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
        )
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 120)
        code = proc.returncode or 0
        if ok:
            assert code == 0, (args, out.decode(), err.decode())
        return code, out.decode(), err.decode()


async def test_nexus_admin_signs_in_and_manages_keys_orgs_policies(hub: RunningHub, tmp_path: Path) -> None:
    cli = Cli(tmp_path, hub.url)
    code, _, err = await cli("admin", "orgs", "list", ok=False)
    assert code == 2 and "nexus admin login" in err
    code, _, err = await cli(
        "admin", "login", "--email", ADMIN_EMAIL, "--password-stdin", stdin="wrong\n", ok=False
    )
    assert code == 1 and "invalid_credentials" in err
    _, out, _ = await cli(
        "admin", "login", "--email", ADMIN_EMAIL, "--password-stdin", stdin=hub.admin_password + "\n"
    )
    assert "signed in" in out
    session = tmp_path / "admin-session.json"
    assert stat.S_IMODE(os.stat(session).st_mode) == 0o600
    _, out, _ = await cli("admin", "whoami")
    assert ADMIN_EMAIL in out and "NexusSuperAdmin@*" in out
    _, out, _ = await cli("admin", "orgs", "create", "acme", "--timezone", "Europe/Paris", "--name", "Acme")
    assert "created org acme" in out
    _, out, _ = await cli("admin", "orgs", "list")
    assert "acme" in out and "Europe/Paris" in out
    create = "admin keys create --org demo-org --project demo-project --models gpt-4o-mini"
    _, out, _ = await cli(*create.split(), "--budget-usd", "5", "--window", "day", "--rpm", "60")
    key = out.strip().splitlines()[-1]
    assert key.startswith("nvk_") and len(key) == 68
    _, out, _ = await cli("admin", "--json", "keys", "list", "--org", "demo-org")
    listed = json.loads(out)["items"]
    mine = next(i for i in listed if i["key"]["prefix"] == key[:12])
    assert mine["spec"]["budgets"] == [
        {"unit": "usd", "limit": 5.0, "window": "day", "action": "hard", "alert_at": []}
    ]
    assert key not in out
    _, out, _ = await cli("admin", "keys", "rotate", mine["id"], "--grace", "60")
    assert "the old key works until" in out and out.strip().splitlines()[1].startswith("nvk_")
    _, out, _ = await cli("admin", "keys", "revoke", mine["id"], "--reason", "done")
    assert out.strip() == f"{mine['id']}: revoked"
    doc = tmp_path / "read-acme.json"
    doc.write_text(
        json.dumps(
            {
                "Version": "2026-01-01",
                "Statement": [
                    {"Effect": "Allow", "Action": "admin:org.read", "Resource": "nrn:nexus:iam:acme:org/acme"}
                ],
            }
        )
    )
    await cli(
        "admin",
        "users",
        "create",
        "ann",
        "--email",
        "ann@acme.example",
        "--org",
        "acme",
        "--role",
        "acme:NexusViewer",
    )
    await cli("admin", "users", "password", "ann", "--password-stdin", stdin="ann-has-a-long-password\n")
    await cli("admin", "policies", "create", "read-acme", "--org", "acme", "--file", str(doc))
    _, out, _ = await cli("admin", "policies", "attach", "read-acme", "--to", "user/ann", "--org", "acme")
    assert "attached" in out
    _, out, _ = await cli(
        "admin",
        "simulate",
        "--principal",
        "ann",
        "--action",
        "admin:org.update",
        "--resource",
        "nrn:nexus:iam:acme:org/acme",
    )
    assert out.startswith("implicit_deny")
    _, out, _ = await cli(
        "admin",
        "simulate",
        "--principal",
        "ann",
        "--action",
        "admin:org.read",
        "--resource",
        "nrn:nexus:iam:acme:org/acme",
    )
    assert out.startswith("allowed") and "decided by" in out
    code, _, err = await cli("admin", "orgs", "create", "bad id", ok=False)
    assert code == 1 and "invalid_field" in err
    await cli("admin", "logout")
    assert not session.exists()


async def test_nexus_admin_jobs_and_kill_switch(hub: RunningHub, tmp_path: Path) -> None:
    cli = Cli(tmp_path, hub.url)
    await cli("admin", "login", "--email", ADMIN_EMAIL, "--password-stdin", stdin=hub.admin_password + "\n")
    # The scheduler takes its lease shortly after start: until then the
    # list says there is no leader yet ("leader: -").
    for _ in range(150):
        _, out, _ = await cli("admin", "jobs", "list")
        if not out.startswith("leader: -"):
            break
        await asyncio.sleep(0.1)
    assert out.startswith("leader: hub (fence ") and "key-expiry" in out and "override-expiry" in out
    _, out, _ = await cli("admin", "jobs", "run", "key-expiry")
    assert out.startswith("queued key-expiry run ")
    run_id = out.split()[-1]
    for _ in range(100):
        _, out, _ = await cli("admin", "--json", "jobs", "runs", "key-expiry")
        if any(r["run_id"] == run_id and r["status"] == "succeeded" for r in json.loads(out)["items"]):
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError(out)
    code, _, err = await cli("admin", "jobs", "run", "nope", ok=False)
    assert code == 1 and "not_found" in err
    code, _, err = await cli("admin", "kill-switch", "engage", "--reason", "too short", ok=False)
    assert code == 1 and "invalid_field" in err
    _, out, _ = await cli(
        "admin", "kill-switch", "engage", "--reason", "incident 12: hooks time out everywhere"
    )
    assert out.startswith("fleet kill switch engaged: incident 12") and "(snapshot " in out
    _, out, _ = await cli("admin", "kill-switch", "show")
    assert out.startswith("fleet kill switch engaged")
    _, out, _ = await cli("admin", "kill-switch", "release")
    assert out.startswith("fleet kill switch released")


async def test_export_imports_back_to_the_same_state(hub: RunningHub, tmp_path: Path) -> None:
    cli = Cli(tmp_path, hub.url)
    await cli("admin", "login", "--email", ADMIN_EMAIL, "--password-stdin", stdin=hub.admin_password + "\n")
    await cli("admin", "orgs", "create", "acme")
    await cli(
        "admin",
        "keys",
        "create",
        "--org",
        "demo-org",
        "--project",
        "demo-project",
        "--rpm",
        "30",
        "--id",
        "k-export",
    )
    exported = tmp_path / "nexus.yaml"
    await cli("hub", "export", "-o", str(exported))
    cfg = parse_config(exported.read_bytes(), source="export")
    state = hub.control.state
    # The file is the state: it imports to no change at all ...
    assert plan(state, cfg) == []
    _, out, _ = await cli("hub", "import", str(exported))
    assert "nothing to change" in out
    # ... and a node could run on it (it is a valid NexusConfig, users included).
    assert {u.email for u in cfg.hub.users} == {ADMIN_EMAIL}
    assert compile_config(state, for_nodes=False)[0] == cfg
    # An edit of the file is a diff: shown on a dry run, applied after.
    raw = msgspec.yaml.decode(exported.read_bytes())
    raw["orgs"].append({"id": "initech", "timezone": "America/Chicago"})
    exported.write_bytes(msgspec.yaml.encode(raw))
    _, out, _ = await cli("hub", "import", str(exported), "--dry-run")
    assert out.splitlines()[0] == "+ org initech" and "not applied" in out
    assert hub.control.state.get("org", "initech") is None
    _, out, _ = await cli("hub", "import", str(exported))
    assert "1 changes applied" in out
    assert hub.control.state.get("org", "initech") is not None
    # --prune deletes what the file no longer holds.
    raw["orgs"] = [o for o in raw["orgs"] if o["id"] != "acme"]
    exported.write_bytes(msgspec.yaml.encode(raw))
    _, out, _ = await cli("hub", "import", str(exported), "--prune")
    assert "- org acme" in out and hub.control.state.get("org", "acme") is None
    code, _, err = await cli("hub", "import", str(tmp_path / "missing.yaml"), ok=False)
    assert code == 1 and "missing.yaml" in err


async def test_nexus_admin_things(hub: RunningHub, tmp_path: Path) -> None:
    cli = Cli(tmp_path, hub.url)
    await cli("admin", "login", "--email", ADMIN_EMAIL, "--password-stdin", stdin=hub.admin_password + "\n")
    _, out, _ = await cli("admin", "things", "enrol", "kiosk-1", "--type", "agent", "--name", "Lobby kiosk")
    assert out.startswith("enrolled kiosk-1; its token (shown once): nxt_")
    _, out, _ = await cli(
        "admin", "things", "template", "agent", "--set", "log_level=info", "--set", "x=[1,2]"
    )
    assert "log_level" in out and "= [1, 2]" in out
    _, out, _ = await cli(
        "admin",
        "things",
        "override",
        "kiosk-1",
        "log_level",
        "debug",
        "--reason",
        "INC-9",
        "--expires",
        "2099-01-01T00:00:00Z",
    )
    assert '"debug"' in out and "override  (INC-9, until 2099-01-01 00:00:00)" in out
    _, out, _ = await cli("admin", "things", "list", "--type", "agent")
    assert out.startswith("kiosk-1") and "enrolled" in out and "pending: config, log_level, x" in out
    _, out, _ = await cli("admin", "things", "show", "kiosk-1")
    assert out.startswith("kiosk-1 (agent): enrolled")
    _, out, _ = await cli("admin", "things", "clear", "kiosk-1", "log_level")
    assert '"info"' in out and "template" in out
    code, _, err = await cli("admin", "things", "override", "kiosk-1", "k", "1", "--reason", "", ok=False)
    assert code == 1 and "invalid_field" in err
    _, out, _ = await cli("admin", "things", "revoke", "kiosk-1", "--reason", "stolen")
    assert out == "kiosk-1: revoked\n"
