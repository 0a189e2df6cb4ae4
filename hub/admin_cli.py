"""``nexus admin``: the admin API from a terminal or a script.

    nexus admin login [--url URL] [--email E] [--password-stdin]
    nexus admin logout | whoami
    nexus admin keys list [--org O] [--project P]
    nexus admin keys create --org O --project P [--type personal|application] [--models M,...]
                            [--expires ISO] [--budget-usd N [--window day]] [--rpm N] [--description D]
    nexus admin keys show|approve|reject|revoke ID [--reason R]
    nexus admin keys rotate ID [--grace SECONDS]
    nexus admin orgs list | show ID | create ID [--parent P] [--name N] [--timezone TZ] | delete ID
    nexus admin users list | create ID --email E [--org O] [--role ORG:ROLE]... | password ID
    nexus admin policies list | show ID | create ID --org O --file DOC.json | delete ID
    nexus admin policies attach|detach ID --to user/U|group/G [--org O]
    nexus admin simulate --principal USER --action A --resource NRN [--context KEY=VALUE]...
    nexus admin jobs list | runs NAME [--limit N] | run NAME
    nexus admin kill-switch show | engage --reason R | release
    nexus admin things list [--type T] [--status S] [--org O] | show ID | config ID
    nexus admin things enrol ID --type T [--org O] [--name N]        (the token is printed once)
    nexus admin things override ID KEY JSON --reason R [--expires ISO] | clear ID KEY | revoke ID [--reason R]
    nexus admin things template TYPE [--set KEY=JSON]... [--unset KEY]...

``--json`` prints the API's answer as it came.  Exit codes: 0 ok, 1 the Hub
refused (its error is printed), 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from typing import Any

from hub.client import HubClient, HubError, Session, forget_session, resolve, save_session
from streams.config_base import ConfigError

A = "/api/admin"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nexus admin", description="the Hub's admin API from the command line")
    p.add_argument(
        "--url", default=None, help="the Hub (default: the logged-in one, $NEXUS_HUB_URL, or :3060)"
    )
    p.add_argument("--json", action="store_true", help="print the API's JSON answer")
    # The same two options after the command too (nexus admin login --url ...).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="area", required=True)

    login = sub.add_parser(
        "login", parents=[common], help="sign in and keep the session (0600) for later commands"
    )
    login.add_argument("--email", default=None)
    login.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    sub.add_parser("logout", parents=[common], help="end the session")
    sub.add_parser("whoami", parents=[common], help="who you are and which policies apply")

    keys = sub.add_parser("keys", parents=[common], help="virtual keys").add_subparsers(
        dest="cmd", required=True
    )
    kl = keys.add_parser("list", parents=[common])
    kl.add_argument("--org")
    kl.add_argument("--project")
    kc = keys.add_parser("create", parents=[common], help="issue a key (printed once)")
    kc.add_argument("--id", default="")
    kc.add_argument("--org", required=True)
    kc.add_argument("--project", required=True)
    kc.add_argument("--type", choices=["personal", "application"], default="application")
    kc.add_argument("--owner", default="")
    kc.add_argument("--models", default="*", help="comma-separated model names (default: every model)")
    kc.add_argument("--expires", default=None, help="ISO 8601 time, e.g. 2027-01-01T00:00:00Z")
    kc.add_argument("--budget-usd", type=float, default=None)
    kc.add_argument("--window", default="month", help="the budget's window: day, week, month, or 24h...")
    kc.add_argument("--rpm", type=int, default=None)
    kc.add_argument("--description", default="")
    for verb in ("show", "approve", "reject", "revoke", "rotate", "delete"):
        k = keys.add_parser(verb, parents=[common])
        k.add_argument("id")
        if verb in ("approve", "reject", "revoke"):
            k.add_argument("--reason", default="")
        if verb == "rotate":
            k.add_argument("--grace", type=int, default=0, help="seconds the old key keeps working")

    orgs = sub.add_parser("orgs", parents=[common], help="organisations").add_subparsers(
        dest="cmd", required=True
    )
    orgs.add_parser("list", parents=[common])
    for verb in ("show", "delete"):
        orgs.add_parser(verb, parents=[common]).add_argument("id")
    oc = orgs.add_parser("create", parents=[common])
    oc.add_argument("id")
    oc.add_argument("--parent", default=None)
    oc.add_argument("--name", default="")
    oc.add_argument("--timezone", default="UTC")

    users = sub.add_parser("users", parents=[common], help="users").add_subparsers(dest="cmd", required=True)
    users.add_parser("list", parents=[common])
    uc = users.add_parser("create", parents=[common])
    uc.add_argument("id")
    uc.add_argument("--email", required=True)
    uc.add_argument("--org", default="")
    uc.add_argument("--name", default="")
    uc.add_argument(
        "--role", action="append", default=[], help="ORG:ROLE, e.g. acme:NexusDeveloper (repeatable)"
    )
    uc.add_argument("--project", action="append", default=[], help="a project the user works in (repeatable)")
    up = users.add_parser(
        "password", parents=[common], help="set a user's password (prompted, or --password-stdin)"
    )
    up.add_argument("id")
    up.add_argument("--password-stdin", action="store_true")

    pol = sub.add_parser("policies", parents=[common], help="IAM policies").add_subparsers(
        dest="cmd", required=True
    )
    pol.add_parser("list", parents=[common])
    for verb in ("show", "delete"):
        pol.add_parser(verb, parents=[common]).add_argument("id")
    pc = pol.add_parser("create", parents=[common])
    pc.add_argument("id")
    pc.add_argument("--org", default="")
    pc.add_argument("--name", default="")
    pc.add_argument("--file", required=True, help="the policy document (JSON)")
    for verb in ("attach", "detach"):
        pa = pol.add_parser(verb, parents=[common])
        pa.add_argument("id")
        pa.add_argument("--to", required=True, help="user/<id> or group/<id>")
        pa.add_argument("--org", default="", help="where it applies (default: everywhere)")

    sim = sub.add_parser("simulate", parents=[common], help="would this user be allowed to...? and why")
    sim.add_argument("--principal", required=True, help="a user id or NRN")
    sim.add_argument("--action", required=True)
    sim.add_argument("--resource", required=True)
    sim.add_argument("--context", action="append", default=[], help="KEY=VALUE (repeatable)")

    jobs = sub.add_parser("jobs", parents=[common], help="the Hub's scheduled jobs").add_subparsers(
        dest="cmd", required=True
    )
    jobs.add_parser("list", parents=[common], help="schedule, last run, and which replica leads")
    jr = jobs.add_parser("runs", parents=[common], help="a job's run history, newest first")
    jr.add_argument("name")
    jr.add_argument("--limit", type=int, default=20)
    jobs.add_parser("run", parents=[common], help="run a job now (queued for the leader)").add_argument(
        "name"
    )
    ks = sub.add_parser("kill-switch", parents=[common], help="the fleet kill switch").add_subparsers(
        dest="cmd", required=True
    )
    ks.add_parser("show", parents=[common])
    ke = ks.add_parser("engage", parents=[common], help="every node's compliance engine out of the path")
    ke.add_argument("--reason", required=True, help="at least 20 characters (it is audited)")
    ks.add_parser("release", parents=[common])

    things = sub.add_parser("things", parents=[common], help="the fleet: every node").add_subparsers(
        dest="cmd", required=True
    )
    tl = things.add_parser("list", parents=[common], help="things and their status")
    for name in ("type", "status", "org"):
        tl.add_argument(f"--{name}", default="")
    for verb, what in (("show", "a thing, its status and shadow"), ("config", "its effective config")):
        things.add_parser(verb, parents=[common], help=what).add_argument("id")
    te = things.add_parser("enrol", parents=[common], help="enrol a thing (its token is printed once)")
    te.add_argument("id")
    te.add_argument("--type", required=True)
    te.add_argument("--org", default="")
    te.add_argument("--name", default="")
    to = things.add_parser("override", parents=[common], help="set one of a thing's own config values")
    to.add_argument("id")
    to.add_argument("key")
    to.add_argument("value", help="JSON (a bare word is a string)")
    to.add_argument("--reason", required=True)
    to.add_argument("--expires", default=None, help="ISO time it ends")
    tc = things.add_parser("clear", parents=[common], help="clear an override")
    tc.add_argument("id")
    tc.add_argument("key")
    tr = things.add_parser("revoke", parents=[common], help="take a thing out of the fleet")
    tr.add_argument("id")
    tr.add_argument("--reason", default="")
    tt = things.add_parser("template", parents=[common], help="show or change the template of a type")
    tt.add_argument("type")
    tt.add_argument("--set", action="append", default=[], help="KEY=JSON (repeatable)")
    tt.add_argument("--unset", action="append", default=[], help="KEY (repeatable)")
    return p


def _out(args: argparse.Namespace, value: Any, line: str) -> None:
    print(json.dumps(value, indent=2, sort_keys=True) if args.json else line)


def _items(args: argparse.Namespace, page: Any, fmt: Any) -> None:
    if args.json:
        print(json.dumps(page, indent=2, sort_keys=True))
        return
    for item in page["items"]:
        print(fmt(item))
    if page.get("next"):
        print("(more: narrow with filters)", file=sys.stderr)


def _password(stdin: bool, prompt: str) -> str:
    if stdin:
        return sys.stdin.readline().rstrip("\n")
    return getpass.getpass(prompt)


def _key_line(item: dict[str, Any]) -> str:
    spec, key = item["spec"], item.get("key") or {}
    return (
        f"{item['id']:<24} {key.get('status', ''):<9} {key.get('prefix', ''):<13} "
        f"{spec['org']}/{spec['project']} {spec['type']} models={','.join(spec['allowed_models'])}"
    )


async def _keys(c: HubClient, args: argparse.Namespace) -> None:
    if args.cmd == "list":
        q = "&".join(f"{k}={v}" for k, v in (("org", args.org), ("project", args.project)) if v)
        _items(args, await c.get(f"{A}/virtual-keys?limit=500{'&' + q if q else ''}"), _key_line)
        return
    if args.cmd == "create":
        spec: dict[str, Any] = {
            "id": args.id,
            "org": args.org,
            "project": args.project,
            "type": args.type,
            "owner": args.owner,
            "allowed_models": [m.strip() for m in args.models.split(",") if m.strip()],
            "description": args.description,
        }
        if args.expires:
            spec["expires_at"] = args.expires
        if args.budget_usd is not None:
            spec["budgets"] = [{"unit": "usd", "limit": args.budget_usd, "window": args.window}]
        if args.rpm is not None:
            spec["rate_limit"] = {"rpm": args.rpm}
        made = await c.post(f"{A}/virtual-keys", spec)
        status = made["item"]["key"]["status"]
        note = "" if status == "active" else f"  ({status}: it works once approved)"
        _out(args, made, f"key {made['item']['id']} (shown once, store it now):\n{made['key']}{note}")
        return
    kid = args.id
    if args.cmd == "show":
        item = await c.get(f"{A}/virtual-keys/{kid}")
        _out(args, item, _key_line(item))
    elif args.cmd == "rotate":
        made = await c.post(f"{A}/virtual-keys/{kid}/rotate", {"grace_seconds": args.grace})
        until = made["item"]["key"].get("previous_key_valid_until")
        _out(
            args,
            made,
            f"new key for {kid} (shown once):\n{made['key']}"
            + (f"\nthe old key works until {until}" if until else ""),
        )
    elif args.cmd == "delete":
        await c.delete(f"{A}/virtual-keys/{kid}")
        _out(args, {}, f"deleted {kid}")
    else:
        item = await c.post(f"{A}/virtual-keys/{kid}/{args.cmd}", {"reason": args.reason})
        _out(args, item, f"{kid}: {item['key']['status']}")


def _org_line(o: dict[str, Any]) -> str:
    spec = o["spec"]
    return f"{o['id']:<24} parent={spec['parent'] or '-'} tz={spec['timezone']} {spec['name']}"


async def _orgs(c: HubClient, args: argparse.Namespace) -> None:
    if args.cmd == "list":
        _items(args, await c.get(f"{A}/orgs?limit=500"), _org_line)
    elif args.cmd == "show":
        item = await c.get(f"{A}/orgs/{args.id}")
        _out(args, item, json.dumps(item["spec"]))
    elif args.cmd == "create":
        item = await c.post(
            f"{A}/orgs", {"id": args.id, "parent": args.parent, "name": args.name, "timezone": args.timezone}
        )
        _out(args, item, f"created org {item['id']} (version {item['version']})")
    elif args.cmd == "delete":
        await c.delete(f"{A}/orgs/{args.id}")
        _out(args, {}, f"deleted org {args.id}")


async def _users(c: HubClient, args: argparse.Namespace) -> None:
    if args.cmd == "list":
        _items(
            args,
            await c.get(f"{A}/users?limit=500"),
            lambda u: f"{u['id']:<20} {u['spec']['email']:<32} org={u['spec']['org'] or '-'}",
        )
    elif args.cmd == "create":
        memberships: dict[str, list[str]] = {}
        for r in args.role:
            org, _, role = r.partition(":")
            if not role:
                raise HubError(0, "usage", f"--role {r!r}: ORG:ROLE")
            memberships.setdefault(org, []).append(role)
        spec = {
            "id": args.id,
            "email": args.email,
            "org": args.org,
            "name": args.name,
            "memberships": [{"org": o, "roles": rs} for o, rs in memberships.items()],
            "projects": args.project,
        }
        item = await c.post(f"{A}/users", spec)
        _out(
            args, item, f"created user {item['id']}; set a password: nexus admin users password {item['id']}"
        )
    elif args.cmd == "password":
        await c.put(f"{A}/users/{args.id}/password", {"password": args.password})
        _out(args, {}, f"password set for {args.id}")


async def _policies(c: HubClient, args: argparse.Namespace) -> None:
    if args.cmd == "list":
        _items(
            args,
            await c.get(f"{A}/policies?limit=500"),
            lambda p: f"{p['id']:<24} org={p['spec']['org'] or '-'} {p['spec']['name']}",
        )
    elif args.cmd == "show":
        item = await c.get(f"{A}/policies/{args.id}")
        _out(args, item, json.dumps(item["spec"]["document"], indent=2))
    elif args.cmd == "create":
        doc = {"id": args.id, "org": args.org, "name": args.name, "document": args.document}
        item = await c.post(f"{A}/policies", doc)
        _out(args, item, f"created policy {item['id']}")
    elif args.cmd == "delete":
        await c.delete(f"{A}/policies/{args.id}")
        _out(args, {}, f"deleted policy {args.id}")
    else:
        item = await c.post(f"{A}/policies/{args.id}/{args.cmd}", {"principal": args.to, "org": args.org})
        _out(args, item, f"{args.cmd}ed {args.id} {'to' if args.cmd == 'attach' else 'from'} {args.to}")


async def _simulate(c: HubClient, args: argparse.Namespace) -> None:
    context: dict[str, Any] = {}
    for kv in args.context:
        k, sep, v = kv.partition("=")
        if not sep:
            raise HubError(0, "usage", f"--context {kv!r}: KEY=VALUE")
        context[k] = v
    res = await c.post(
        f"{A}/iam/simulate",
        {"principal": args.principal, "action": args.action, "resource": args.resource, "context": context},
    )
    d = res["decision"]
    lines = [f"{d['outcome']}: {args.action} on {args.resource} for {res['principal']}"]
    if d.get("deciding"):
        s = d["deciding"]
        sid = s["sid"] or f"#{s['index']}"
        lines.append(f"  decided by {s['policy_name']} ({s['policy_id']}) statement {sid}: {s['effect']}")
    if d.get("missing_context_keys"):
        lines.append(f"  missing context keys: {', '.join(d['missing_context_keys'])}")
    _out(args, res, "\n".join(lines))


def _t(value: str | None) -> str:
    return (value or "-")[:19].replace("T", " ")


async def _jobs(c: HubClient, args: argparse.Namespace) -> None:
    if args.cmd == "list":
        res = await c.get(f"{A}/jobs")
        lead = res["leadership"]
        lines = [f"leader: {lead['leader'] or '-'} (fence {lead['fence']}; answered by {lead['replica']})"]
        lines += [
            f"{j['name']:<22} every {j['every_s']:>6g} s  runs {j['runs']:>5} ({j['quiet_runs']} quiet)  "
            f"last {j['last_status'] or '-':<9} {_t(j['last_started_at'])}  next {_t(j['next_due_at'])}"
            for j in res["jobs"]
        ]
        _out(args, res, "\n".join(lines))
    elif args.cmd == "runs":
        page = await c.get(f"{A}/jobs/{args.name}/runs?limit={args.limit}")
        _items(
            args,
            page,
            lambda r: (
                f"#{r['run_number']:<6} {r['status']:<9} {r['trigger']:<8} {_t(r['started_at'])}  "
                f"{r['node']:<10} {r['error'] or r['detail']}"
            ),
        )
    else:
        res = await c.post(f"{A}/jobs/{args.name}/run")
        _out(args, res, f"queued {res['job']} run {res['run_id']}")


async def _kill_switch(c: HubClient, args: argparse.Namespace) -> None:
    if args.cmd == "show":
        res = await c.get(f"{A}/kill-switch")
    elif args.cmd == "engage":
        res = await c.post(f"{A}/kill-switch/engage", {"reason": args.reason})
    else:
        res = await c.post(f"{A}/kill-switch/release", {})
    state = f"engaged: {res['reason']}" if res["engaged"] else "released"
    extra = f" (snapshot {res['snapshot_revision']})" if res.get("snapshot_revision") else ""
    _out(args, res, f"fleet kill switch {state}{extra}")


def _json_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw  # a bare word: a string


def _thing_line(t: dict[str, Any]) -> str:
    pending = f"  pending: {', '.join(t['pending_keys'])}" if t["pending_keys"] else ""
    return f"{t['id']:<32} {t['type']:<10} {t['status']:<9} desired v{t['desired_version']}{pending}"


def _config_lines(res: dict[str, Any]) -> str:
    lines = [f"{res['thing']} ({res['type']}) desired version {res['version']}"]
    for key, v in res["keys"].items():
        until = f", until {_t(v.get('expires_at'))}" if v.get("expires_at") else ""
        why = f"  ({v.get('reason', '')}{until})"
        lines.append(
            f"  {key:<24} = {json.dumps(v['value'])[:60]:<40} {v['source']}{why if v.get('reason') else ''}"
        )
    return "\n".join(lines)


async def _things(c: HubClient, args: argparse.Namespace) -> None:
    base = f"{A}/things"
    if args.cmd == "list":
        query = "&".join(f"{n}={getattr(args, n)}" for n in ("type", "status", "org") if getattr(args, n))
        _items(args, await c.get(f"{base}?limit=500{'&' + query if query else ''}"), _thing_line)
    elif args.cmd == "show":
        res = await c.get(f"{base}/{args.id}")
        sh = res["shadow"]
        rep = sh["reported"] or {}
        lines = [
            f"{res['item']['id']} ({res['item']['spec']['type']}): {res['status']}",
            f"  desired v{sh['desired']['version']}  pending: {', '.join(sh['pending_keys']) or '-'}",
            f"  reported at {rep.get('reported_at_ms', '-')} over {rep.get('transport', '-')}, "
            f"serving revision {rep.get('revision', '-')}",
        ]
        lines += [
            f"  {k:<24} {o['status']} {o.get('error', '')}" for k, o in (rep.get("outcomes") or {}).items()
        ]
        lines += [f"  posture {k} = {v}" for k, v in sorted((rep.get("posture") or {}).items())]
        _out(args, res, "\n".join(lines))
    elif args.cmd == "config":
        res = await c.get(f"{base}/{args.id}/config")
        _out(args, res, _config_lines(res))
    elif args.cmd == "enrol":
        spec = {"id": args.id, "type": args.type, "org": args.org, "name": args.name}
        res = await c.post(base, spec)
        _out(args, res, f"enrolled {res['item']['id']}; its token (shown once): {res['token']}")
    elif args.cmd == "override":
        body: dict[str, Any] = {"value": _json_value(args.value), "reason": args.reason}
        if args.expires:
            body["expires_at"] = args.expires
        res = await c.put(f"{base}/{args.id}/overrides/{args.key}", body)
        _out(args, res, _config_lines(res))
    elif args.cmd == "clear":
        res = await c.delete(f"{base}/{args.id}/overrides/{args.key}")
        _out(args, res, _config_lines(res))
    elif args.cmd == "revoke":
        res = await c.post(f"{base}/{args.id}/revoke", {"reason": args.reason})
        _out(args, res, f"{res['item']['id']}: {res['status']}")
    else:
        path = f"{A}/thing-templates/{args.type}"
        current = await c.get(path)
        if args.set or args.unset:
            keys = dict(current["spec"]["keys"])
            for pair in args.set:
                key, sep, raw = pair.partition("=")
                if not sep:
                    raise HubError(0, "usage", f"--set {pair}: KEY=JSON")
                keys[key] = _json_value(raw)
            for key in args.unset:
                keys.pop(key, None)
            current = await c.put(path, {**current["spec"], "keys": keys})
        spec = current["spec"]
        lines = [f"template {spec['type']} (version {current['version']})"]
        lines += [f"  {k:<24} = {json.dumps(v)}" for k, v in sorted(spec["keys"].items())]
        _out(args, current, "\n".join(lines))


async def _run(args: argparse.Namespace) -> int:
    url, token = resolve(args.url)
    async with HubClient(url, token) as c:
        if args.area == "login":
            result = await c.login(args.email, args.password)
            path = save_session(Session(url=url, token=result["token"], email=args.email))
            print(f"signed in to {url} as {args.email} (session in {path}, until {result['expires_at']})")
            return 0
        if not token:
            print(f"nexus admin: not signed in to {url}: run `nexus admin login` first", file=sys.stderr)
            return 2
        if args.area == "logout":
            await c.post(f"{A}/auth/logout")
            forget_session()
            print("signed out")
        elif args.area == "whoami":
            me = await c.get(f"{A}/auth/me")
            _out(
                args,
                me,
                f"{me['user']['spec']['email']} ({me['nrn']})\npolicies: {', '.join(me['policies']) or '-'}",
            )
        else:
            handler = {
                "keys": _keys,
                "orgs": _orgs,
                "users": _users,
                "policies": _policies,
                "simulate": _simulate,
                "jobs": _jobs,
                "kill-switch": _kill_switch,
                "things": _things,
            }
            await handler[args.area](c, args)
    return 0


def _prompts(args: argparse.Namespace) -> None:
    """What a command reads from the terminal or a file, before it runs."""
    if args.area == "login":
        args.email = args.email or input("e-mail: ")
        args.password = _password(args.password_stdin, "password: ")
    elif args.area == "users" and args.cmd == "password":
        args.password = _password(args.password_stdin, f"new password for {args.id}: ")
    elif args.area == "policies" and args.cmd == "create":
        try:
            with open(args.file, "rb") as fh:
                args.document = json.load(fh)
        except (OSError, ValueError) as exc:
            raise HubError(0, "usage", f"--file {args.file}: {exc}") from None


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        _prompts(args)
        return asyncio.run(_run(args))
    except HubError as exc:
        print(f"nexus admin: {exc}", file=sys.stderr)
        return 2 if exc.code == "usage" else 1
    except ConfigError as exc:  # a NEXUS_* setting that does not parse
        print(f"nexus admin: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
