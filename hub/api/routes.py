"""Every route of the admin API, in one table.  The OpenAPI document is
generated from it (with the IAM action of each route as ``x-nexus-action``),
and the tests enumerate routes from that document: a route added here
without its place in the IAM matrix and the audit test fails them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from hub.api import (
    access,
    agents,
    config_code,
    emergency,
    identity,
    jobs,
    keys,
    oidc,
    probes,
    resources,
    signin,
    things,
    tokens,
    trail,
    vault,
)
from hub.api.http import Call, Route
from hub.api.pages import Page
from hub.api.resources import Kind
from hub.views import Item
from streams.config import Model, Org, Project, Provider
from streams.config_fleet import ThingSpec, ThingTemplate
from streams.config_hooks import HookSpec
from streams.config_hub import GroupSpec, KeySpec, PriceSpec, QuotaSpec
from streams.config_routing import Rule as RoutingRule
from streams.config_siem import Sink
from streams.config_vault import CredentialSpec
from streams.events_config import HUB_SETTINGS_SECTIONS, SETTINGS_SECTIONS

A = "/api/admin"

KINDS: tuple[Kind, ...] = (
    Kind("org", "orgs", Org, "org", (("parent", "only direct children of this org"),)),
    Kind("project", "projects", Project, "project", (("org", "only projects of this org"),)),
    identity.USERS,
    identity.GROUPS,
    identity.POLICIES,
    oidc.IDENTITY_PROVIDERS,
    Kind("provider", "providers", Provider, "provider", (("kind", "only providers of this codec"),)),
    Kind("model", "models", Model, "model", (("provider", "only models of this provider"),)),
    Kind("price", "prices", PriceSpec, "price"),
    Kind("routing-rule", "routing-rules", RoutingRule, "routing rule"),
    Kind(
        "hook",
        "hooks",
        HookSpec,
        "hook",
        (("type", "only hooks of this type"), ("stage", "request, response...")),
    ),
    Kind(
        "quota",
        "quotas",
        QuotaSpec,
        "quota",
        (("org", "only quotas matching this org"), ("kind", "budget or rate_limit")),
    ),
    Kind("siem-sink", "siem-sinks", Sink, "SIEM sink", (("kind", "syslog, splunk_hec, elastic, webhook"),)),
)

_PAGING = (
    ("limit", "items per page (1-500, default 50)"),
    ("after", "the cursor of the previous page"),
    ("id_prefix", "only ids starting with this"),
)

Handler = Callable[[Call], Awaitable[web.StreamResponse]]


def _bind(fn: Callable[[Call, Kind], Awaitable[web.StreamResponse]], kind: Kind) -> Handler:
    async def handler(call: Call) -> web.StreamResponse:
        return await fn(call, kind)

    handler.__name__ = f"{fn.__name__}_{kind.path.replace('-', '_')}"
    return handler


def _generic(
    kind: Kind,
    method: str,
    fn: Callable[[Call, Kind], Awaitable[web.StreamResponse]],
    verb: str,
    summary: str,
    *,
    item: bool,
    **more: Any,
) -> Route:
    """A route of ``kind`` that a generic handler of ``hub.api.resources``
    answers (on ``/<kind>`` or, with ``item``, ``/<kind>/{id}``), its
    action ``kind``'s own for ``verb``."""
    path = f"{A}/{kind.path}/{{id}}" if item else f"{A}/{kind.path}"
    return Route(method, path, _bind(fn, kind), kind.action(verb), summary, tag=kind.path, **more)


def _crud(kind: Kind) -> list[Route]:
    view = Item[kind.spec]  # type: ignore[name-defined]
    t = kind.title
    return [
        _listing(kind, f"List {t}s"),
        _generic(
            kind, "POST", resources.create_item, "create", f"Create a {t}",
            item=False, body=kind.spec, response=view, status=201,
        ),
        _generic(kind, "GET", resources.get_item, "read", f"Get a {t}", item=True, response=view),
        _generic(
            kind, "PUT", resources.put_item, "update", f"Replace a {t} (If-Match: its version)",
            item=True, body=kind.spec, response=view,
        ),
        _generic(
            kind, "PATCH", resources.patch_item, "update", f"Change fields of a {t} (JSON merge patch)",
            item=True, body=dict[str, Any], response=view,
        ),
        _generic(kind, "DELETE", resources.delete_item, "delete", f"Delete a {t}", item=True, status=204),
    ]  # fmt: skip


def _listing(kind: Kind, summary: str) -> Route:
    return _generic(
        kind,
        "GET",
        resources.list_items,
        "read",
        summary,
        item=False,
        response=Page[Item[kind.spec]],  # type: ignore[name-defined]
        query=kind.filters + _PAGING,
    )


def _settings(section: str, spec: Any) -> list[Route]:
    path = f"{A}/settings/{section}"
    rtype = "cache" if section == "cache" else "settings"

    async def get(call: Call) -> web.StreamResponse:
        return await resources.get_settings(call, section, spec)

    async def put(call: Call) -> web.StreamResponse:
        return await resources.put_settings(call, section, spec)

    get.__name__, put.__name__ = f"get_settings_{section}", f"put_settings_{section}"
    return [
        Route(
            "GET", path, get, f"admin:{rtype}.read", f"The {section} settings", response=spec, tag="settings"
        ),
        Route(
            "PUT",
            path,
            put,
            f"admin:{rtype}.update",
            f"Replace the {section} settings",
            body=spec,
            response=spec,
            tag="settings",
        ),
    ]


def _keys() -> list[Route]:
    base, item = f"{A}/virtual-keys", f"{A}/virtual-keys/{{id}}"
    view = Item[KeySpec]
    k = keys.KEYS
    return [
        _listing(k, "List virtual keys"),
        Route(
            "POST",
            base,
            keys.create_key,
            "admin:virtual-key.create",
            "Issue a virtual key (the key is in this answer only)",
            body=KeySpec,
            response=keys.IssuedKey,
            status=201,
            tag="virtual-keys",
        ),
        _generic(k, "GET", resources.get_item, "read", "Get a virtual key", item=True, response=view),
        Route(
            "PUT",
            item,
            keys.put_key,
            "admin:virtual-key.update",
            "Replace a key's spec (org, type and owner are fixed)",
            body=KeySpec,
            response=view,
            tag="virtual-keys",
        ),
        Route(
            "PATCH",
            item,
            keys.patch_key,
            "admin:virtual-key.update",
            "Change fields of a key (JSON merge patch)",
            body=dict[str, Any],
            response=view,
            tag="virtual-keys",
        ),
        Route(
            "DELETE",
            item,
            keys.delete_key,
            "admin:virtual-key.delete",
            "Delete a revoked or rejected key",
            status=204,
            tag="virtual-keys",
        ),
        Route(
            "POST",
            f"{item}/rotate",
            keys.rotate_key,
            "admin:virtual-key.rotate",
            "A new key; the old one works for grace_seconds",
            body=keys.Rotation,
            response=keys.IssuedKey,
            tag="virtual-keys",
        ),
        Route(
            "POST",
            f"{item}/revoke",
            keys.revoke_key,
            "admin:virtual-key.revoke",
            "Revoke a key (every node refuses it within seconds)",
            body=keys.Reason,
            response=view,
            tag="virtual-keys",
        ),
        Route(
            "POST",
            f"{item}/approve",
            keys.approve_key,
            "admin:virtual-key.approve",
            "Approve a pending key",
            body=keys.Reason,
            response=view,
            tag="virtual-keys",
        ),
        Route(
            "POST",
            f"{item}/reject",
            keys.reject_key,
            "admin:virtual-key.approve",
            "Reject a pending key",
            body=keys.Reason,
            response=view,
            tag="virtual-keys",
        ),
    ]


def _vault() -> list[Route]:
    c = vault.CREDENTIALS
    base, item = f"{A}/credentials", f"{A}/credentials/{{id}}"
    view = Item[CredentialSpec]
    return [
        _listing(c, "List provider credentials (metadata only: never a secret)"),
        Route(
            "POST",
            base,
            vault.create_credential,
            "admin:credential.create",
            "Store a provider credential (its secret is sealed and never shown again)",
            body=vault.NewCredential,
            response=view,
            status=201,
            tag="credentials",
        ),
        _generic(
            c,
            "GET",
            resources.get_item,
            "read",
            "Get a credential (metadata, fingerprint, last four characters)",
            item=True,
            response=view,
        ),
        _generic(
            c,
            "PATCH",
            resources.patch_item,
            "update",
            "Change a credential's description (provider and org are sealed in)",
            item=True,
            body=dict[str, Any],
            response=view,
        ),
        Route(
            "PUT",
            f"{item}/secret",
            vault.replace_secret,
            "admin:credential.update",
            "Replace a credential's secret (the old one can never be opened again)",
            body=vault.NewSecret,
            response=view,
            tag="credentials",
        ),
        Route(
            "DELETE",
            item,
            vault.delete_credential,
            "admin:credential.delete",
            "Delete a credential no provider uses (its data key is shredded)",
            status=204,
            tag="credentials",
        ),
        Route(
            "POST",
            f"{item}/probe",
            probes.probe_credential,
            "admin:credential.probe",
            "Does this credential work: a request to its provider (the answer never holds the secret)",
            body=probes.CredentialProbe,
            response=probes.ProbeAnswer,
            tag="credentials",
        ),
        Route(
            "POST",
            f"{A}/providers/{{id}}/probe",
            probes.probe_provider,
            "admin:provider.probe",
            "Test a provider and discover its models (its own credential, or a vault credential of it)",
            body=probes.Probe,
            response=probes.ProbeAnswer,
            tag="providers",
        ),
        Route(
            "GET",
            f"{A}/vault",
            vault.get_vault,
            "admin:vault.read",
            "The vault's key versions and the last rewrap pass",
            response=vault.VaultStatus,
            tag="vault",
        ),
        Route(
            "POST",
            f"{A}/vault/rotate",
            vault.rotate,
            "admin:vault.rotate",
            "A new key version; every data key is rewrapped to it in the background",
            body=vault.Rotation,
            response=vault.VaultStatus,
            status=202,
            tag="vault",
        ),
        Route(
            "POST",
            f"{A}/vault/rewrap",
            vault.rewrap,
            "admin:vault.rotate",
            "Start a rewrap pass (data keys on older versions move to the current one)",
            response=vault.VaultStatus,
            status=202,
            tag="vault",
        ),
        Route(
            "POST",
            f"{A}/vault/keys/{{version}}/retire",
            vault.retire,
            "admin:vault.retire",
            "Retire a key version: what it still wraps fails closed (refused unless force)",
            body=vault.Retirement,
            response=vault.RetireResult,
            tag="vault",
        ),
    ]


def _things() -> list[Route]:
    base, item = f"{A}/things", f"{A}/things/{{id}}"
    override = f"{item}/overrides/{{key}}"
    tpl = f"{A}/thing-templates"
    return [
        Route(
            "GET",
            base,
            things.list_things,
            "admin:thing.read",
            "List things (every node: gateways, proxies, agents, processors, Hubs) with their status",
            response=Page[things.ThingSummary],
            query=(
                ("type", "gateway, proxy, agent, processor, hub..."),
                ("org", "only things of this org"),
                ("status", "enrolled, online, offline, drift, revoked"),
                *_PAGING,
            ),
            tag="things",
        ),
        Route(
            "POST",
            base,
            things.enrol_thing,
            "admin:thing.create",
            "Enrol a thing (its sync token is in this answer only)",
            body=ThingSpec,
            response=things.EnrolledThing,
            status=201,
            tag="things",
        ),
        Route(
            "GET",
            item,
            things.get_thing,
            "admin:thing.read",
            "A thing, its status and its shadow (desired and reported state, per-key outcomes)",
            response=things.ThingDetail,
            tag="things",
        ),
        Route(
            "GET",
            f"{item}/config",
            things.thing_config,
            "admin:thing.read",
            "A thing's effective config: its type's template with its own overrides",
            response=things.EffectiveConfig,
            tag="things",
        ),
        Route(
            "PUT",
            override,
            things.set_override,
            "admin:thing.override",
            "Set one of a thing's own config values (with a reason, optionally until a time)",
            body=things.OverrideBody,
            response=things.EffectiveConfig,
            tag="things",
        ),
        Route(
            "DELETE",
            override,
            things.clear_override,
            "admin:thing.override",
            "Clear an override: the thing follows its template for that key again",
            response=things.EffectiveConfig,
            query=(("reason", "why (kept in the CONFIG event)"),),
            tag="things",
        ),
        Route(
            "POST",
            f"{item}/revoke",
            things.revoke_thing,
            "admin:thing.revoke",
            "Revoke a thing: its token stops working, its connections close",
            body=things.RevokeBody,
            response=things.ThingDetail,
            tag="things",
        ),
        Route(
            "GET",
            tpl,
            things.list_templates,
            "admin:thing-template.read",
            "The config template of every thing type",
            response=Page[Item[ThingTemplate]],
            tag="things",
        ),
        Route(
            "GET",
            f"{tpl}/{{type}}",
            things.get_template,
            "admin:thing-template.read",
            "The config template of a thing type",
            response=Item[ThingTemplate],
            tag="things",
        ),
        Route(
            "PUT",
            f"{tpl}/{{type}}",
            things.put_template,
            "admin:thing-template.update",
            "Replace the config template of a thing type (every thing of the type is re-synced)",
            body=ThingTemplate,
            response=Item[ThingTemplate],
            tag="things",
        ),
    ]


def _tokens() -> list[Route]:
    own, scim = f"{A}/auth/tokens", f"{A}/scim-tokens"
    return [
        Route("GET", own, tokens.my_tokens, None, "Own API tokens", response=tokens.TokenList, tag="auth"),
        Route(
            "POST",
            own,
            tokens.create_my_token,
            None,
            "An API token acting as the caller (shown once; from a signed-in session only)",
            body=tokens.NewToken,
            response=tokens.IssuedToken,
            status=201,
            tag="auth",
        ),
        Route(
            "DELETE",
            f"{own}/{{tid}}",
            tokens.revoke_my_token,
            None,
            "Revoke one of the caller's API tokens",
            status=204,
            tag="auth",
        ),
        Route(
            "GET",
            f"{A}/users/{{id}}/tokens",
            tokens.user_tokens,
            "admin:user.read",
            "A user's API tokens (never the tokens themselves)",
            response=tokens.TokenList,
            tag="users",
        ),
        Route(
            "DELETE",
            f"{A}/users/{{id}}/tokens/{{tid}}",
            tokens.revoke_user_token,
            "admin:user.revoke-sessions",
            "Revoke one of a user's API tokens",
            status=204,
            tag="users",
        ),
        Route(
            "GET",
            scim,
            tokens.list_scim_tokens,
            "admin:scim-token.read",
            "SCIM tokens (one org each; never the tokens themselves)",
            response=tokens.TokenList,
            query=(("org", "only this org's"),),
            tag="scim-tokens",
        ),
        Route(
            "POST",
            scim,
            tokens.create_scim_token,
            "admin:scim-token.create",
            "A bearer token for an identity provider's SCIM client, provisioning one org (shown once)",
            body=tokens.NewScimToken,
            response=tokens.IssuedToken,
            status=201,
            tag="scim-tokens",
        ),
        Route(
            "DELETE",
            f"{scim}/{{id}}",
            tokens.revoke_scim_token,
            "admin:scim-token.revoke",
            "Revoke a SCIM token",
            status=204,
            tag="scim-tokens",
        ),
    ]


def _agents() -> list[Route]:
    tokens, item = f"{A}/enrolment-tokens", f"{A}/agents/{{id}}"
    return [
        Route(
            "POST",
            tokens,
            agents.issue_token,
            "admin:enrolment-token.create",
            "Issue a one-time enrolment token (the token is in this answer only)",
            body=agents.NewToken,
            response=agents.IssuedToken,
            status=201,
            tag="agents",
        ),
        Route(
            "GET",
            tokens,
            agents.list_tokens,
            "admin:enrolment-token.read",
            "List enrolment tokens (never the tokens themselves)",
            response=agents.TokenList,
            tag="agents",
        ),
        Route(
            "POST",
            f"{tokens}/{{id}}/revoke",
            agents.revoke_token,
            "admin:enrolment-token.revoke",
            "Revoke an unused enrolment token",
            response=agents.TokenView,
            tag="agents",
        ),
        Route(
            "POST",
            "/api/agents/enrol",
            agents.enrol_agent,
            None,
            "Enrol a device with a one-time token: its mTLS and attestation keys signed by the agent CA",
            body=agents.Enrol,
            response=agents.EnrolResult,
            status=201,
            public=True,
            tag="agents",
        ),
        Route(
            "GET",
            f"{A}/agents",
            agents.list_agents,
            "admin:agent.read",
            "List enrolled agents",
            response=agents.AgentList,
            tag="agents",
        ),
        Route(
            "GET",
            item,
            agents.get_agent,
            "admin:agent.read",
            "Get an agent",
            response=agents.AgentView,
            tag="agents",
        ),
        Route(
            "POST",
            f"{item}/revoke",
            agents.revoke_agent,
            "admin:agent.revoke",
            "Revoke an agent: proxies stop trusting its attestation within 2 s",
            body=agents.Revocation,
            response=agents.AgentView,
            tag="agents",
        ),
    ]


def build_routes() -> list[Route]:
    routes: list[Route] = [
        Route(
            "POST",
            f"{A}/auth/login",
            signin.login,
            None,
            "Sign in: a bearer token and a session cookie (throttled; locked after repeated failures)",
            body=signin.Login,
            response=signin.LoginResult,
            public=True,
            tag="auth",
        ),
        Route("POST", f"{A}/auth/logout", signin.logout, None, "End this session", status=204, tag="auth"),
        Route(
            "GET",
            f"{A}/auth/sessions",
            signin.my_sessions,
            None,
            "The caller's own sessions",
            response=signin.SessionList,
            tag="auth",
        ),
        Route(
            "DELETE",
            f"{A}/auth/sessions",
            signin.end_my_sessions,
            None,
            "End every session of the caller (sign out everywhere)",
            response=signin.Revoked,
            tag="auth",
        ),
        Route(
            "DELETE",
            f"{A}/auth/sessions/{{sid}}",
            signin.end_my_session,
            None,
            "End one of the caller's sessions",
            status=204,
            tag="auth",
        ),
        Route(
            "GET",
            f"{A}/auth/me",
            access.me,
            None,
            "Who the caller is and which policies apply",
            response=access.Me,
            tag="auth",
        ),
    ]
    routes += [
        Route(
            "GET",
            f"{A}/auth/oidc/{{provider}}/login",
            oidc.start,
            None,
            "Sign in through an org's identity provider: a redirect to it (authorization code + PKCE)",
            status=302,
            public=True,
            query=(("return_to", "a path on this Hub to land on once signed in"),),
            tag="auth",
        ),
        Route(
            "GET",
            f"{A}/auth/oidc/{{provider}}/callback",
            oidc.callback,
            None,
            "Where the identity provider sends the browser back: a session, as auth/login answers",
            response=signin.LoginResult,
            public=True,
            query=(("code", "the authorization code"), ("state", "the flow's state")),
            tag="auth",
        ),
    ]
    routes += _tokens()
    for kind in KINDS:
        routes += _crud(kind)
    routes += _keys()
    routes += _things()
    routes += _vault()
    routes += _agents()
    routes += [
        Route(
            "PUT",
            f"{A}/users/{{id}}/password",
            identity.set_password,
            "admin:user.update",
            "Set a user's password",
            body=identity.NewPassword,
            status=204,
            tag="users",
        ),
        Route(
            "GET",
            f"{A}/users/{{id}}/sessions",
            signin.user_sessions,
            "admin:user.read",
            "A user's sessions",
            response=signin.SessionList,
            tag="users",
        ),
        Route(
            "DELETE",
            f"{A}/users/{{id}}/sessions",
            signin.revoke_user_sessions,
            "admin:user.revoke-sessions",
            "End every session of a user",
            response=signin.Revoked,
            tag="users",
        ),
        Route(
            "DELETE",
            f"{A}/users/{{id}}/sessions/{{sid}}",
            signin.revoke_user_session,
            "admin:user.revoke-sessions",
            "End one session of a user",
            status=204,
            tag="users",
        ),
        Route(
            "POST",
            f"{A}/users/{{id}}/unlock",
            signin.unlock_user,
            "admin:user.unlock",
            "Lift a sign-in lockout of a user's e-mail before it ends",
            status=204,
            tag="users",
        ),
        Route(
            "POST",
            f"{A}/groups/{{id}}/members",
            identity.add_member,
            "admin:group.add-member",
            "Add a user to a group",
            body=identity.Member,
            response=Item[GroupSpec],
            tag="groups",
        ),
        Route(
            "DELETE",
            f"{A}/groups/{{id}}/members/{{user}}",
            identity.remove_member,
            "admin:group.remove-member",
            "Remove a user from a group",
            response=Item[GroupSpec],
            tag="groups",
        ),
        Route(
            "POST",
            f"{A}/policies/{{id}}/attach",
            identity.attach_policy,
            "admin:policy.attach",
            "Attach a policy to a user or group",
            body=identity.AttachTo,
            response=Item[Any],
            tag="policies",
        ),
        Route(
            "POST",
            f"{A}/policies/{{id}}/detach",
            identity.detach_policy,
            "admin:policy.detach",
            "Detach a policy from a user or group",
            body=identity.AttachTo,
            response=Item[Any],
            tag="policies",
        ),
        Route(
            "POST",
            f"{A}/iam/simulate",
            access.simulate,
            "admin:iam.simulate",
            "The decision for a user, action and resource, and why",
            body=access.Simulation,
            response=access.SimulationResult,
            tag="iam",
        ),
        Route(
            "GET",
            f"{A}/iam/allowed-actions",
            access.allowed,
            None,
            "What the caller may do on a resource",
            response=access.AllowedActions,
            query=(("resource", "the NRN"),),
            tag="iam",
        ),
        Route(
            "GET",
            f"{A}/audit",
            trail.list_audit,
            "admin:audit.read",
            "The admin audit trail, newest first",
            response=Page[trail.AuditRecord],
            query=(
                ("org", "this org and below"),
                ("actor", "principal NRN"),
                ("action", "admin:<resource>.<verb>"),
                ("decision", "allowed, explicit_deny, ..."),
                ("resource", "NRN"),
                ("limit", "1-500"),
                ("after", "cursor"),
            ),
            tag="audit",
        ),
        Route(
            "POST",
            f"{A}/config/import",
            config_code.import_config,
            "admin:config.import",
            "Import a config file (YAML or JSON)",
            body=str,
            response=config_code.ImportResult,
            query=(("dry_run", "show the changes only"), ("prune", "delete what the file does not hold")),
            tag="config",
        ),
        Route(
            "GET",
            f"{A}/config/export",
            config_code.export_config,
            "admin:config.export",
            "The state as a config file (YAML)",
            response=str,
            tag="config",
        ),
    ]
    routes += [
        Route(
            "GET",
            f"{A}/kill-switch",
            emergency.get_kill_switch,
            "admin:kill-switch.read",
            "The fleet kill switch and the fleet's break-glass entries",
            response=emergency.KillSwitchState,
            tag="kill-switch",
        ),
        Route(
            "POST",
            f"{A}/kill-switch/engage",
            emergency.engage,
            "admin:kill-switch.engage",
            "Engage the fleet kill switch (answers once the snapshot carrying it is published)",
            body=emergency.Engage,
            response=emergency.KillSwitchState,
            tag="kill-switch",
        ),
        Route(
            "POST",
            f"{A}/kill-switch/release",
            emergency.release,
            "admin:kill-switch.release",
            "Release the fleet kill switch",
            body=emergency.Release,
            response=emergency.KillSwitchState,
            tag="kill-switch",
        ),
        Route(
            "GET",
            f"{A}/jobs",
            jobs.list_jobs,
            "admin:job.read",
            "The scheduled jobs: schedule, last run, and which replica leads",
            response=jobs.JobList,
            tag="jobs",
        ),
        Route(
            "GET",
            f"{A}/jobs/{{name}}/runs",
            jobs.job_runs,
            "admin:job.read",
            "A job's run history, newest first",
            response=jobs.RunPage,
            query=(("limit", "1-500"), ("before", "a run number: older runs")),
            tag="jobs",
        ),
        Route(
            "POST",
            f"{A}/jobs/{{name}}/run",
            jobs.run_job,
            "admin:job.run",
            "Run a job now (queued for the leader; 202 with the run's id)",
            response=jobs.RunRequested,
            status=202,
            tag="jobs",
        ),
    ]
    for section, spec in {**SETTINGS_SECTIONS, **HUB_SETTINGS_SECTIONS}.items():
        routes += _settings(section, spec)
    return routes


ROUTES: list[Route] = build_routes()
