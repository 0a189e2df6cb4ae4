"""Must-show 1: every admin route x every managed role x own-org / other-org
resource -> the expected allow or deny, on a real Hub over HTTP.

Routes are enumerated from GET /openapi.json: a route without a request
builder here (TEMPLATES) fails the test.  What each role may do in its org
(ROLE_VERBS) is written out by hand from the product decision in docs/iam.md,
not computed by the evaluator, so the test checks the evaluator, the NRNs
the Hub gives resources and the wiring between them.

Principals: one user per managed role, attached at org ``acme``, member of
project ``acme-web``; and the installation's super admin (NexusSuperAdmin
at the global scope).  Targets: a resource in acme (own), in globex (other),
or a global one (providers, models, settings...: only the global admin
reaches those).  An allowed mutation gets a fresh target of its own.
Escalation attempts follow the matrix.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.hub.conftest import Answer, Client, RunningHub, sign_in
from tests.hub.device import Device

pytestmark = [pytest.mark.integration, pytest.mark.slow]

A = "/api/admin"
ROLES = (
    "NexusSuperAdmin",
    "NexusOrgAdmin",
    "NexusSecurityAdmin",
    "NexusDeveloper",
    "NexusViewer",
    "NexusAuditor",
)
GLOBAL = "global-admin"
PASSWORD = "correct horse battery staple"
ALL = frozenset(
    {
        "create",
        "read",
        "update",
        "delete",
        "rotate",
        "revoke",
        "approve",
        "add-member",
        "remove-member",
        "attach",
        "detach",
        "simulate",
        "import",
        "export",
        "verify",
        "revoke-sessions",
        "unlock",
        "probe",
        "retire",
        "override",
    }
)

# What each role may do to a resource of its own org tree (docs/iam.md's
# table, written out): iam type -> verbs.
_ORG_TYPES = (
    "org",
    "project",
    "user",
    "group",
    "policy",
    "iam",
    "virtual-key",
    "quota",
    "audit",
    "credential",
    "thing",
    "scim-token",
    "identity-provider",
    "enrolment-token",
    "agent",
)
ROLE_VERBS: dict[str, dict[str, frozenset[str]]] = {
    "NexusSuperAdmin": {t: ALL for t in _ORG_TYPES},
    "NexusOrgAdmin": {t: ALL for t in _ORG_TYPES},
    "NexusSecurityAdmin": {
        "org": frozenset({"read"}),
        "project": frozenset({"read"}),
        "user": frozenset({"read", "revoke-sessions", "unlock"}),
        "group": ALL,
        "policy": ALL,
        "iam": ALL,
        "virtual-key": frozenset({"read", "revoke"}),
        "quota": frozenset({"read"}),
        "audit": ALL,
        # incident response: take a suspect node out of the fleet
        "thing": frozenset({"read", "revoke"}),
        "scim-token": frozenset({"read"}),
        "identity-provider": frozenset({"read"}),
        "enrolment-token": frozenset({"read"}),
        "agent": frozenset({"read", "revoke"}),
    },
    # Keys: only their own personal keys in their projects (tested apart);
    # users: only their own (tested apart).
    "NexusDeveloper": {
        "org": frozenset({"read"}),
        "project": frozenset({"read"}),
        "quota": frozenset({"read"}),
    },
    "NexusViewer": {
        t: frozenset({"read"})
        for t in (
            "org",
            "project",
            "user",
            "group",
            "policy",
            "virtual-key",
            "quota",
            "thing",
            "scim-token",
            "identity-provider",
            "enrolment-token",
            "agent",
        )
    },
    "NexusAuditor": {"audit": frozenset({"read"})},
}


def expected(principal: str, action: str | None, target: str) -> bool:
    if action is None:
        return True  # public, or about the caller alone
    if principal == GLOBAL:
        return True
    if target != "own":
        return False
    rtype, verb = action.removeprefix("admin:").split(".", 1)
    return verb in ROLE_VERBS[principal].get(rtype, frozenset())


_ids = itertools.count()


def fresh(prefix: str) -> str:
    return f"{prefix}{next(_ids)}"


NARROW = {
    "Version": "2026-01-01",
    "Statement": [{"Effect": "Allow", "Action": "admin:org.read", "Resource": "nrn:nexus:iam:acme:org/acme"}],
}


class World:
    """Targets made by the global admin."""

    def __init__(self, admin: Client) -> None:
        self.admin = admin
        self.dev_clients: dict[str, Client] = {}
        self.shared: dict[tuple[str, str], str] = {}
        self.hub_url = ""

    async def session_of(self, uid: str) -> str:
        """A live session of user ``uid`` (signed in with a fresh password)."""
        await self.ok(self.admin.put(f"{A}/users/{uid}/password", {"password": PASSWORD}))
        c = await sign_in(self.hub_url, f"{uid}@example.com", PASSWORD)
        try:
            return str((await c.get(f"{A}/auth/me")).json["session_id"])
        finally:
            await c.close()

    async def token_of(self, uid: str) -> str:
        """The id of an API token user ``uid`` made for itself."""
        await self.ok(self.admin.put(f"{A}/users/{uid}/password", {"password": PASSWORD}))
        c = await sign_in(self.hub_url, f"{uid}@example.com", PASSWORD)
        try:
            return str((await self.ok(c.post(f"{A}/auth/tokens", {})))["item"]["id"])
        finally:
            await c.close()

    async def target(self, kind: str, target: str, mutates: bool) -> str:
        """An item to act on: a fresh one when the request may change it,
        else one shared by every read of the same kind and target."""
        if mutates:
            return await self.make(kind, target)
        if (kind, target) not in self.shared:
            self.shared[(kind, target)] = await self.make(kind, target)
        return self.shared[(kind, target)]

    async def ok(self, ans: Awaitable[Answer]) -> dict[str, Any]:
        a = await ans
        assert a.status in (200, 201, 202, 204), a
        return a.json if a.raw else {}

    def org_of(self, target: str) -> str:
        return {"own": "acme", "other": "globex"}[target]

    def project_of(self, target: str) -> str:
        return {"own": "acme-web", "other": "globex-web"}[target]

    async def make(self, kind: str, target: str) -> str:
        """A fresh item of ``kind`` for ``target`` (own / other / global)."""
        org = self.org_of(target) if target != "global" else ""
        a = self.admin
        if kind == "orgs":
            rid = fresh("o-")
            await self.ok(a.post(f"{A}/orgs", {"id": rid, "parent": org}))
        elif kind == "projects":
            rid = fresh("p-")
            await self.ok(a.post(f"{A}/projects", {"id": rid, "org": org}))
        elif kind == "users":
            rid = fresh("u-")
            await self.ok(a.post(f"{A}/users", {"id": rid, "email": f"{rid}@example.com", "org": org}))
        elif kind == "groups":
            rid = fresh("g-")
            await self.ok(a.post(f"{A}/groups", {"id": rid, "org": org}))
        elif kind == "policies":
            rid = fresh("pol-")
            await self.ok(a.post(f"{A}/policies", {"id": rid, "org": org, "document": NARROW}))
        elif kind == "quotas":
            rid = fresh("q-")
            await self.ok(
                a.post(f"{A}/quotas", {"kind": "rate_limit", "id": rid, "match": {"org": org}, "rpm": 10})
            )
        elif kind == "providers":
            rid = fresh("prov-")
            await self.ok(a.post(f"{A}/providers", {"name": rid, "base_url": "https://api.example.com/v1"}))
        elif kind == "models":
            rid = fresh("m-")
            await self.ok(a.post(f"{A}/models", {"name": rid, "provider": "sim"}))
        elif kind == "prices":
            rid = await self.make("models", target)
            await self.ok(a.post(f"{A}/prices", {"model": rid, "input": 1.0}))
        elif kind == "routing-rules":
            rid = fresh("r-")
            await self.ok(a.post(f"{A}/routing-rules", self.rule(rid)))
        elif kind == "hooks":
            rid = fresh("h-")
            await self.ok(a.post(f"{A}/hooks", {"id": rid, "type": "noop", "stage": "request"}))
        elif kind == "siem-sinks":
            rid = fresh("s-")
            await self.ok(
                a.post(
                    f"{A}/siem-sinks", {"kind": "webhook", "name": rid, "url": "https://siem.example.com/in"}
                )
            )
        elif kind == "credentials":
            rid = fresh("cred-")
            await self.ok(
                a.post(
                    f"{A}/credentials",
                    {"id": rid, "provider": "sim", "org": org, "secret": f"sk-matrix-{rid}-0123456789abcdef"},
                )
            )
        elif kind == "enrolment-tokens":
            made = await self.ok(a.post(f"{A}/enrolment-tokens", {"org": org}))
            rid = made["item"]["id"]
        elif kind == "agents":
            token = (await self.ok(a.post(f"{A}/enrolment-tokens", {"org": org})))["token"]
            made = await self.ok(a.post("/api/agents/enrol", Device().enrol_body(token)))
            rid = made["agent_id"]
        elif kind == "virtual-keys":
            made = await self.ok(
                a.post(f"{A}/virtual-keys", {"org": org, "project": self.project_of(target)})
            )
            rid = made["item"]["id"]
        elif kind == "things":
            rid = fresh("t-")
            await self.ok(a.post(f"{A}/things", {"id": rid, "type": "agent", "org": org}))
        elif kind == "identity-providers":
            rid = fresh("idp-")
            await self.ok(a.post(f"{A}/identity-providers", self.body(kind, rid, target)))
        elif kind == "scim-tokens":
            made = await self.ok(a.post(f"{A}/scim-tokens", {"org": org}))
            rid = made["item"]["id"]
        elif kind == "revoked-key":
            rid = await self.make("virtual-keys", target)
            await self.ok(a.post(f"{A}/virtual-keys/{rid}/revoke", {}))
        elif kind == "pending-key":
            dev = self.dev_clients[target]
            made = await self.ok(
                dev.post(
                    f"{A}/virtual-keys", {"org": org, "project": self.project_of(target), "type": "personal"}
                )
            )
            assert made["item"]["key"]["status"] == "pending"
            rid = made["item"]["id"]
        else:
            raise AssertionError(kind)
        return str(rid)

    @staticmethod
    def rule(name: str) -> dict[str, Any]:
        return {"name": name, "match": [f"{name}-alias"], "strategy": {"type": "single", "model": "gpt-4o"}}

    def body(self, kind: str, rid: str, target: str) -> dict[str, Any]:
        """A valid full spec of item ``rid`` (for create and PUT)."""
        if kind in GLOBAL_KINDS:
            return {
                "providers": {"name": rid, "base_url": "https://api2.example.com/v1"},
                "models": {"name": rid, "provider": "sim", "context_window": 8},
                "prices": {"model": rid, "input": 2.0},
                "routing-rules": self.rule(rid),
                "hooks": {"id": rid, "type": "noop", "stage": "response"},
                "siem-sinks": {"kind": "webhook", "name": rid, "url": "https://siem2.example.com/in"},
            }[kind]
        org = self.org_of(target)
        return {
            "orgs": {"id": rid, "parent": org, "name": "n"},
            "projects": {"id": rid, "org": org, "name": "n"},
            "users": {"id": rid, "email": f"{rid}@example.com", "org": org, "name": "n"},
            "groups": {"id": rid, "org": org, "name": "n"},
            "policies": {"id": rid, "org": org, "document": NARROW, "name": "n"},
            "quotas": {"kind": "rate_limit", "id": rid, "match": {"org": org}, "rpm": 11},
            "virtual-keys": {"id": rid, "org": org, "project": self.project_of(target), "description": "d"},
            "identity-providers": {
                "id": rid,
                "org": org,
                "issuer": "https://idp.example.com",
                "client_id": "nexus",
                "default_roles": ["NexusViewer"],
            },
        }[kind]


GLOBAL_KINDS = {"providers", "models", "prices", "routing-rules", "hooks", "siem-sinks", "thing-templates"}

# (method, path) -> how to build the request for a target: async (world,
# target, mutates) -> (path, body); "mutates" asks for a fresh item.
Builder = Callable[[World, str, bool], Awaitable[tuple[str, Any]]]
TEMPLATES: dict[tuple[str, str], Builder] = {}


def template(method: str, path: str) -> Callable[[Builder], Builder]:
    def register(fn: Builder) -> Builder:
        TEMPLATES[(method, path)] = fn
        return fn

    return register


def _crud_templates(kind: str) -> None:
    base = f"{A}/{kind}"

    async def list_(w: World, target: str, _: bool) -> tuple[str, Any]:
        return base, None

    async def create(w: World, target: str, _: bool) -> tuple[str, Any]:
        rid = fresh("n-")
        if kind == "prices":
            rid = await w.make("models", target)
        body = w.body(kind, rid, target)
        if kind == "virtual-keys":
            body.pop("id")
        return base, body

    async def get(w: World, target: str, mutates: bool) -> tuple[str, Any]:
        return f"{base}/{await w.target(kind, target, mutates)}", None

    async def put(w: World, target: str, mutates: bool) -> tuple[str, Any]:
        rid = await w.target(kind, target, True)
        return f"{base}/{rid}", w.body(kind, rid, target)

    async def patch(w: World, target: str, mutates: bool) -> tuple[str, Any]:
        rid = await w.target(kind, target, True)
        return f"{base}/{rid}", {"description": "patched"} if kind in (
            "virtual-keys",
            "groups",
            "policies",
        ) else {"name": "patched"} if kind in ("orgs", "projects", "users") else {}

    async def delete(w: World, target: str, mutates: bool) -> tuple[str, Any]:
        rid = await w.target("revoked-key" if kind == "virtual-keys" else kind, target, True)
        return f"{base}/{rid}", None

    template("GET", base)(list_)
    template("POST", base)(create)
    template("GET", f"{base}/{{id}}")(get)
    template("PUT", f"{base}/{{id}}")(put)
    template("PATCH", f"{base}/{{id}}")(patch)
    template("DELETE", f"{base}/{{id}}")(delete)


for _kind in (
    "orgs",
    "projects",
    "users",
    "groups",
    "policies",
    "providers",
    "models",
    "prices",
    "routing-rules",
    "hooks",
    "quotas",
    "siem-sinks",
    "virtual-keys",
    "identity-providers",
):
    _crud_templates(_kind)


async def _key_action(w: World, target: str, verb: str) -> tuple[str, Any]:
    kind = "pending-key" if verb in ("approve", "reject") else "virtual-keys"
    rid = await w.target(kind, target, True)
    return f"{A}/virtual-keys/{rid}/{verb}", {"grace_seconds": 60} if verb == "rotate" else {}


for _verb in ("rotate", "revoke", "approve", "reject"):

    async def _b(w: World, target: str, mutates: bool, verb: str = _verb) -> tuple[str, Any]:
        return await _key_action(w, target, verb)

    TEMPLATES[("POST", f"{A}/virtual-keys/{{id}}/{_verb}")] = _b


def _fixed(method: str, route: str, path: str = "", body: Any = None) -> None:
    """A request that needs nothing of the world: ``path`` (the route's own
    when empty) and ``body``, as they are."""

    async def build(w: World, target: str, mutates: bool) -> tuple[str, Any]:
        return path or route, body

    TEMPLATES[(method, route)] = build


def _on_item(method: str, kind: str, suffix: str = "", *, new: bool | None = None, body: Any = None) -> None:
    """A request on an item of ``kind`` in the target's org (``{A}/<kind>/{id}<suffix>``):
    a fresh one when the matrix asks for it (``new`` None), always (True:
    the request changes or removes it) or never (False)."""

    async def build(w: World, target: str, mutates: bool) -> tuple[str, Any]:
        rid = await w.target(kind, target, mutates if new is None else new)
        return f"{A}/{kind}/{rid}{suffix}", body

    TEMPLATES[(method, f"{A}/{kind}/{{id}}{suffix}")] = build


_fixed("GET", f"{A}/auth/me")
_fixed("GET", f"{A}/auth/sessions")
_fixed("GET", f"{A}/auth/tokens")
_fixed("POST", f"{A}/auth/tokens", body={"description": "matrix", "expires_in_days": 1})
_fixed("POST", f"{A}/config/import", f"{A}/config/import?dry_run=true", {"orgs": [{"id": "acme"}]})
_fixed("GET", f"{A}/config/export")
_fixed("GET", f"{A}/credentials")
# The demo's sim provider: nothing listens there in the test, the answer is quick.
_fixed("POST", f"{A}/providers/{{id}}/probe", f"{A}/providers/sim/probe", {"timeout_s": 2})
_fixed("GET", f"{A}/enrolment-tokens")
_fixed("GET", f"{A}/agents")
_fixed("GET", f"{A}/vault")
_fixed("POST", f"{A}/vault/rotate", body={})
_fixed("POST", f"{A}/vault/rewrap")
_fixed("GET", f"{A}/kill-switch")
_fixed("POST", f"{A}/kill-switch/engage", body={"reason": "incident 42: the hooks misbehave"})
_fixed("POST", f"{A}/kill-switch/release", body={})
_fixed("GET", f"{A}/jobs")
_fixed("GET", f"{A}/jobs/{{name}}/runs", f"{A}/jobs/key-expiry/runs")
_fixed("POST", f"{A}/jobs/{{name}}/run", f"{A}/jobs/override-expiry/run")
_fixed("GET", f"{A}/things")
_fixed("GET", f"{A}/thing-templates")
_fixed("GET", f"{A}/thing-templates/{{type}}", f"{A}/thing-templates/proxy")

_on_item("GET", "credentials")
_on_item("PATCH", "credentials", new=True, body={"description": "patched"})
_on_item("PUT", "credentials", "/secret", new=True, body={"secret": "sk-matrix-replaced-0123456789abcdef"})
_on_item("DELETE", "credentials", new=True)
_on_item("POST", "credentials", "/probe", new=False, body={"timeout_s": 2})  # the sim provider, as above
_on_item("POST", "enrolment-tokens", "/revoke", new=True)
_on_item("GET", "agents")
_on_item("POST", "agents", "/revoke", new=True, body={"reason": "matrix"})
_on_item("PUT", "users", "/password", new=True, body={"password": "a-new-password-0123"})
_on_item("GET", "users", "/sessions")
_on_item("DELETE", "users", "/sessions", new=True)
_on_item("POST", "users", "/unlock", new=True)
_on_item("GET", "users", "/tokens")
_on_item("GET", "things")
_on_item("GET", "things", "/config")
_on_item("POST", "things", "/revoke", new=True, body={"reason": "matrix"})
_on_item("DELETE", "scim-tokens", new=True)


@template("POST", f"{A}/credentials")
async def _credential_create(w: World, target: str, mutates: bool) -> tuple[str, Any]:
    rid = fresh("cred-")
    body = {
        "id": rid,
        "provider": "sim",
        "org": w.org_of(target),
        "secret": f"sk-matrix-{rid}-0123456789abcd",
    }
    return f"{A}/credentials", body


@template("POST", f"{A}/enrolment-tokens")
async def _token_issue(w: World, target: str, mutates: bool) -> tuple[str, Any]:
    return f"{A}/enrolment-tokens", {"org": w.org_of(target), "ttl_s": 600}


@template("POST", "/api/agents/enrol")
async def _enrol(w: World, target: str, mutates: bool) -> tuple[str, Any]:
    # Public: the token is the credential (whoever calls, it enrols).
    token = (await w.ok(w.admin.post(f"{A}/enrolment-tokens", {"org": w.org_of(target)})))["token"]
    return "/api/agents/enrol", Device().enrol_body(token)


@template("POST", f"{A}/vault/keys/{{version}}/retire")
async def _vault_retire(w: World, target: str, mutates: bool) -> tuple[str, Any]:
    if not mutates:
        return f"{A}/vault/keys/1/retire", {}
    # A version that is not the current one: rotate, then retire the one before.
    await w.ok(w.admin.post(f"{A}/vault/rotate", {}))
    if (await w.ok(w.admin.get(f"{A}/vault")))["current_version"] < 2:
        await w.ok(w.admin.post(f"{A}/vault/rotate", {}))
    current = (await w.ok(w.admin.get(f"{A}/vault")))["current_version"]
    return f"{A}/vault/keys/{current - 1}/retire", {"reason": "matrix", "force": True}


@template("POST", f"{A}/groups/{{id}}/members")
async def _add_member(w: World, target: str, mutates: bool) -> tuple[str, Any]:
    gid = await w.target("groups", target, True)
    return f"{A}/groups/{gid}/members", {"user": await w.target("users", target, True)}


@template("DELETE", f"{A}/groups/{{id}}/members/{{user}}")
async def _remove_member(w: World, target: str, mutates: bool) -> tuple[str, Any]:
    gid = await w.target("groups", target, True)
    uid = await w.target("users", target, True)
    await w.ok(w.admin.post(f"{A}/groups/{gid}/members", {"user": uid}))
    return f"{A}/groups/{gid}/members/{uid}", None


@template("POST", f"{A}/policies/{{id}}/attach")
async def _attach(w: World, target: str, mutates: bool) -> tuple[str, Any]:
    pid = await w.target("policies", target, True)
    uid = await w.target("users", target, True)
    return f"{A}/policies/{pid}/attach", {"principal": f"user/{uid}", "org": w.org_of(target)}


@template("POST", f"{A}/policies/{{id}}/detach")
async def _detach(w: World, target: str, mutates: bool) -> tuple[str, Any]:
    pid = await w.target("policies", target, True)
    uid = await w.target("users", target, True)
    link = {"principal": f"user/{uid}", "org": w.org_of(target)}
    await w.ok(w.admin.post(f"{A}/policies/{pid}/attach", link))
    return f"{A}/policies/{pid}/detach", link


@template("POST", f"{A}/iam/simulate")
async def _simulate(w: World, target: str, mutates: bool) -> tuple[str, Any]:
    uid = await w.target("users", target, False)
    org = w.org_of(target)
    return f"{A}/iam/simulate", {
        "principal": uid,
        "action": "admin:org.read",
        "resource": f"nrn:nexus:iam:{org}:org/{org}",
    }


@template("GET", f"{A}/iam/allowed-actions")
async def _allowed(w: World, target: str, mutates: bool) -> tuple[str, Any]:
    org = w.org_of(target)
    return f"{A}/iam/allowed-actions?resource=nrn:nexus:iam:{org}:org/{org}", None


@template("GET", f"{A}/audit")
async def _audit(w: World, target: str, mutates: bool) -> tuple[str, Any]:
    return f"{A}/audit?org={w.org_of(target)}", None


@template("DELETE", f"{A}/users/{{id}}/sessions/{{sid}}")
async def _revoke_user_session(w: World, target: str, mutates: bool) -> tuple[str, Any]:
    uid = await w.target("users", target, True)
    return f"{A}/users/{uid}/sessions/{await w.session_of(uid)}", None


@template("POST", f"{A}/things")
async def _enrol_thing(w: World, target: str, mutates: bool) -> tuple[str, Any]:
    return f"{A}/things", {"id": fresh("t-"), "type": "agent", "org": w.org_of(target)}


@template("PUT", f"{A}/things/{{id}}/overrides/{{key}}")
async def _set_override(w: World, target: str, mutates: bool) -> tuple[str, Any]:
    rid = await w.target("things", target, True)
    return f"{A}/things/{rid}/overrides/log_level", {"value": "debug", "reason": "matrix"}


@template("DELETE", f"{A}/things/{{id}}/overrides/{{key}}")
async def _clear_override(w: World, target: str, mutates: bool) -> tuple[str, Any]:
    rid = await w.target("things", target, True)
    await w.ok(w.admin.put(f"{A}/things/{rid}/overrides/log_level", {"value": "debug", "reason": "matrix"}))
    return f"{A}/things/{rid}/overrides/log_level", None


@template("PUT", f"{A}/thing-templates/{{type}}")
async def _put_template(w: World, target: str, mutates: bool) -> tuple[str, Any]:
    return f"{A}/thing-templates/proxy", {"type": "proxy", "keys": {"matrix": fresh("v")}}


@template("DELETE", f"{A}/users/{{id}}/tokens/{{tid}}")
async def _revoke_user_token(w: World, target: str, mutates: bool) -> tuple[str, Any]:
    uid = await w.target("users", target, True)
    return f"{A}/users/{uid}/tokens/{await w.token_of(uid)}", None


@template("GET", f"{A}/scim-tokens")
async def _scim_tokens(w: World, target: str, mutates: bool) -> tuple[str, Any]:
    return f"{A}/scim-tokens?org={w.org_of(target)}", None


@template("POST", f"{A}/scim-tokens")
async def _new_scim_token(w: World, target: str, mutates: bool) -> tuple[str, Any]:
    return f"{A}/scim-tokens", {"org": w.org_of(target)}


# Routes handled apart: logging in and out and ending one's own sessions
# (the matrix signs in as each role and keeps its sessions), and the
# settings sections (added per section below).
SPECIAL = {
    ("POST", f"{A}/auth/login"),
    ("POST", f"{A}/auth/logout"),
    ("DELETE", f"{A}/auth/sessions"),
    ("DELETE", f"{A}/auth/sessions/{{sid}}"),
    ("DELETE", f"{A}/auth/tokens/{{tid}}"),  # tests/hub/test_tokens.py
    # public: a redirect to the identity provider and its way back (tests/hub/test_oidc.py)
    ("GET", f"{A}/auth/oidc/{{provider}}/login"),
    ("GET", f"{A}/auth/oidc/{{provider}}/callback"),
}


def settings_template(method: str, path: str) -> Builder:
    async def build(w: World, target: str, mutates: bool) -> tuple[str, Any]:
        if method == "GET":
            return path, None
        current = await w.admin.get(path)
        return path, current.json

    return build


@pytest.fixture
async def principals(hub: RunningHub, admin: Client) -> AsyncIterator[tuple[World, dict[str, Client]]]:
    world = World(admin)
    world.hub_url = hub.url
    for org in ("acme", "globex"):
        await world.ok(admin.post(f"{A}/orgs", {"id": org}))
        await world.ok(admin.post(f"{A}/projects", {"id": f"{org}-web", "org": org}))
    clients: dict[str, Client] = {GLOBAL: admin}
    for role in ROLES:
        uid = role.removeprefix("Nexus").lower()
        await world.ok(
            admin.post(
                f"{A}/users",
                {
                    "id": uid,
                    "email": f"{uid}@acme.example",
                    "org": "acme",
                    "memberships": [{"org": "acme", "roles": [role]}],
                    "projects": ["acme-web"],
                },
            )
        )
        await world.ok(admin.put(f"{A}/users/{uid}/password", {"password": PASSWORD}))
        clients[role] = await sign_in(hub.url, f"{uid}@acme.example", PASSWORD)
    # Developers of each org, to request (pending) keys.
    for target, org in (("own", "acme"), ("other", "globex")):
        uid = f"dev-{org}"
        await world.ok(
            admin.post(
                f"{A}/users",
                {
                    "id": uid,
                    "email": f"{uid}@example.com",
                    "org": org,
                    "memberships": [{"org": org, "roles": ["NexusDeveloper"]}],
                    "projects": [f"{org}-web"],
                },
            )
        )
        await world.ok(admin.put(f"{A}/users/{uid}/password", {"password": PASSWORD}))
        world.dev_clients[target] = await sign_in(hub.url, f"{uid}@example.com", PASSWORD)
    yield world, clients
    for name, c in clients.items():
        if name != GLOBAL:
            await c.close()
    for c in world.dev_clients.values():
        await c.close()


def _target_kind(path: str) -> str:
    parts = path.removeprefix(f"{A}/").split("/")
    return parts[0]


async def test_every_route_for_every_role_on_own_and_other_orgs(
    hub: RunningHub, principals: tuple[World, dict[str, Client]]
) -> None:
    world, clients = principals
    doc = (await clients[GLOBAL].get("/openapi.json")).json
    ops = [(m.upper(), p, op["x-nexus-action"]) for p, item in doc["paths"].items() for m, op in item.items()]
    for method, path, _ in ops:
        if path.startswith(f"{A}/settings/"):
            TEMPLATES.setdefault((method, path), settings_template(method, path))
    missing = [(m, p) for m, p, _ in ops if (m, p) not in TEMPLATES and (m, p) not in SPECIAL]
    assert not missing, f"routes without a place in the IAM matrix: {missing}"
    failures: list[str] = []
    checked = allowed = 0
    for method, path, action in ops:
        if (method, path) in SPECIAL:
            continue
        kind = _target_kind(path)
        is_global = kind in GLOBAL_KINDS or kind in ("settings", "config", "jobs", "kill-switch", "vault")
        targets = ("global",) if is_global else ("own", "other")
        is_list = (
            method == "GET"
            and "{" not in path
            and path.count("/") == 3
            and kind not in ("audit", "settings", "jobs", "kill-switch", "vault")
        )
        for principal, target in itertools.product((GLOBAL, *ROLES), targets):
            allow = expected(principal, action, target)
            build = TEMPLATES[(method, path)]
            url, body = await build(world, target, allow and method != "GET")
            ans = await clients[principal].call(method, url, body)
            checked += 1
            allowed += allow
            if is_list:
                # A list answers everyone, with only what they may read.
                ok = ans.status == 200
            elif allow:
                ok = 200 <= ans.status < 300
            else:
                ok = ans.status == 403 and ans.error == "access_denied"
            if not ok:
                failures.append(
                    f"{principal} {method} {path} [{target}] expected {'allow' if allow else 'deny'}: {ans}"
                )
    assert not failures, f"{len(failures)} of {checked}:\n" + "\n".join(failures[:40])
    print(f"IAM matrix: {len(ops)} routes, {checked} (route, principal, target) cases, {allowed} allowed")
    assert checked > 1000 and 200 < allowed < checked - 500


async def test_lists_show_each_role_only_what_it_may_read(
    hub: RunningHub, principals: tuple[World, dict[str, Client]]
) -> None:
    world, clients = principals
    own_key = await world.make("virtual-keys", "own")
    other_key = await world.make("virtual-keys", "other")
    for principal, client in clients.items():
        keys = {i["id"] for i in (await client.get(f"{A}/virtual-keys?limit=500")).json["items"]}
        projects = {i["id"] for i in (await client.get(f"{A}/projects?limit=500")).json["items"]}
        may_keys = expected(principal, "admin:virtual-key.read", "own")
        assert (own_key in keys) == may_keys, principal
        assert (other_key in keys) == (principal == GLOBAL), principal
        assert ("acme-web" in projects) == expected(principal, "admin:project.read", "own"), principal
        assert ("globex-web" in projects) == (principal == GLOBAL), principal


async def test_developers_manage_their_own_personal_keys_only(
    hub: RunningHub, principals: tuple[World, dict[str, Client]]
) -> None:
    world, clients = principals
    dev = clients["NexusDeveloper"]
    mine = await dev.post(f"{A}/virtual-keys", {"org": "acme", "project": "acme-web", "type": "personal"})
    assert (
        mine.status == 201 and mine.json["item"]["key"]["status"] == "pending"
    )  # a developer cannot approve
    kid = mine.json["item"]["id"]
    assert mine.json["item"]["spec"]["owner"] == "developer"
    assert (await dev.get(f"{A}/virtual-keys/{kid}")).status == 200
    assert (await dev.patch(f"{A}/virtual-keys/{kid}", {"description": "mine"})).status == 200
    assert (await dev.post(f"{A}/virtual-keys/{kid}/approve", {})).status == 403
    approved = await clients["NexusOrgAdmin"].post(f"{A}/virtual-keys/{kid}/approve", {})
    assert approved.status == 200 and approved.json["key"]["status"] == "active"
    assert (await dev.post(f"{A}/virtual-keys/{kid}/rotate", {})).status == 200
    # Not an application key, not someone else's, not outside its projects.
    app_key = await dev.post(
        f"{A}/virtual-keys", {"org": "acme", "project": "acme-web", "type": "application"}
    )
    assert app_key.status == 403
    other_owner = await dev.post(
        f"{A}/virtual-keys", {"org": "acme", "project": "acme-web", "type": "personal", "owner": "viewer"}
    )
    assert other_owner.status == 403
    await world.ok(clients[GLOBAL].post(f"{A}/projects", {"id": "acme-secret", "org": "acme"}))
    elsewhere = await dev.post(
        f"{A}/virtual-keys", {"org": "acme", "project": "acme-secret", "type": "personal"}
    )
    assert elsewhere.status == 403
    theirs = await world.make("pending-key", "own")  # dev-acme's personal key
    assert (await dev.get(f"{A}/virtual-keys/{theirs}")).status == 403
    assert (await dev.post(f"{A}/virtual-keys/{theirs}/revoke", {})).status == 403
    # Its own user, not another's.
    assert (await dev.get(f"{A}/users/developer")).status == 200
    assert (await dev.get(f"{A}/users/viewer")).status == 403


async def test_escalation_attempts_are_refused(
    hub: RunningHub, principals: tuple[World, dict[str, Client]]
) -> None:
    world, clients = principals
    org_admin, sec_admin, dev = (
        clients["NexusOrgAdmin"],
        clients["NexusSecurityAdmin"],
        clients["NexusDeveloper"],
    )
    # 1. Attach super admin to oneself, globally and at one's own org.
    for org in ("", "acme"):
        ans = await org_admin.patch(
            f"{A}/users/orgadmin", {"policies": [{"policy": "NexusSuperAdmin", "org": org}]}
        )
        assert (ans.status, ans.error) == (403, "access_denied"), ans
    # ... or give oneself another role, or join a group.
    ans = await sec_admin.patch(
        f"{A}/users/securityadmin",
        {"memberships": [{"org": "acme", "roles": ["NexusSecurityAdmin", "NexusOrgAdmin"]}]},
    )
    assert ans.status == 403, ans
    group = await world.make("groups", "own")
    assert (await sec_admin.post(f"{A}/groups/{group}/members", {"user": "securityadmin"})).status == 403
    # 2. A policy wider than one's own: everything, everywhere; or acme's
    # config import (which an org admin does not hold).
    wide = {"Version": "2026-01-01", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    ans = await org_admin.post(f"{A}/policies", {"id": "wide", "org": "acme", "document": wide})
    assert (ans.status, ans.error) == (403, "access_denied"), ans
    assert "beyond your own rights" in ans.json["error"]["message"]
    ans = await sec_admin.post(
        f"{A}/policies",
        {
            "id": "keys",
            "org": "acme",
            "document": {
                "Version": "2026-01-01",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": "admin:virtual-key.create",
                        "Resource": "nrn:nexus:gateway:acme:virtual-key/*",
                    }
                ],
            },
        },
    )
    assert ans.status == 403, ans  # a security admin cannot mint keys, nor let others
    # ... nor grant a role it lacks to someone else, nor add them to a group holding one.
    plain = await world.make("users", "own")
    ans = await sec_admin.patch(
        f"{A}/users/{plain}", {"memberships": [{"org": "acme", "roles": ["NexusOrgAdmin"]}]}
    )
    assert ans.status == 403, ans
    powerful = await world.make("groups", "own")
    await world.ok(clients[GLOBAL].patch(f"{A}/groups/{powerful}", {"roles": ["NexusOrgAdmin"]}))
    assert (await sec_admin.post(f"{A}/groups/{powerful}/members", {"user": plain})).status == 403
    # 3. Edit another org's key, or move one's key into another org.
    other_key = await world.make("virtual-keys", "other")
    assert (await org_admin.patch(f"{A}/virtual-keys/{other_key}", {"description": "mine now"})).status == 403
    assert (await org_admin.post(f"{A}/virtual-keys/{other_key}/revoke", {})).status == 403
    own_project = await world.make("projects", "own")
    moved = await org_admin.put(f"{A}/projects/{own_project}", {"id": own_project, "org": "globex"})
    assert moved.status == 403, moved
    # 4. Take over a stronger account by setting its password.
    assert (await org_admin.put(f"{A}/users/admin/password", {"password": "x-new-password-42"})).status == 403
    strong = await world.make("users", "own")
    await world.ok(
        clients[GLOBAL].patch(f"{A}/users/{strong}", {"policies": [{"policy": "NexusSuperAdmin", "org": ""}]})
    )
    ans = await org_admin.put(f"{A}/users/{strong}/password", {"password": "x-new-password-42"})
    assert (ans.status, ans.error) == (403, "access_denied"), ans
    # 5. A developer cannot make itself anything.
    ans = await dev.patch(
        f"{A}/users/developer", {"memberships": [{"org": "acme", "roles": ["NexusOrgAdmin"]}]}
    )
    assert ans.status == 403
    # The org admin can still do what it holds: a narrower role for someone else.
    ok = await org_admin.patch(
        f"{A}/users/{plain}", {"memberships": [{"org": "acme", "roles": ["NexusViewer"]}]}
    )
    assert ok.status == 200, ok


async def test_every_list_shows_each_role_exactly_what_it_may_read(
    hub: RunningHub, principals: tuple[World, dict[str, Client]]
) -> None:
    """Every list route of the OpenAPI document (GET /<kind> beside a GET
    /<kind>/{id}), as every principal: an item of its own org, of another
    org (or a global one) is in the list exactly when reading that item
    alone is allowed to the same principal (the matrix above checks the
    reads against the role table), so a list never leaks what a read would
    refuse, nor hides what it would show."""
    world, clients = principals
    doc = (await clients[GLOBAL].get("/openapi.json")).json
    kinds = sorted(
        _target_kind(p)
        for p, item in doc["paths"].items()
        if "get" in item
        and p.count("/") == 3
        and "{" not in p
        and "get" in doc["paths"].get(f"{p}/{{id}}", {})
    )
    assert {"orgs", "projects", "users", "groups", "policies", "virtual-keys", "quotas", "models"} <= set(
        kinds
    )
    checked = shown = 0
    failures: list[str] = []
    for kind in kinds:
        targets = ("global",) if kind in GLOBAL_KINDS else ("own", "other")
        items = {t: await world.make(kind, t) for t in targets}
        for principal, client in clients.items():
            listed = await client.get(f"{A}/{kind}?limit=500")
            assert listed.status == 200, (principal, kind, listed)
            ids = {str(i["id"]) for i in listed.json["items"]}
            for target, rid in items.items():
                readable = (await client.get(f"{A}/{kind}/{rid}")).status == 200
                checked += 1
                shown += rid in ids
                if (rid in ids) != readable:
                    failures.append(
                        f"{principal} {kind} [{target}]: listed {rid in ids}, readable {readable}"
                    )
    assert not failures, "\n".join(failures)
    print(f"\nlists: {len(kinds)} kinds x {len(clients)} principals, {checked} items checked, {shown} shown")
    assert shown < checked
