"""SCIM 2.0 (RFC 7643 / 7644): ``/scim/v2/Users`` and ``/scim/v2/Groups``,
how an identity provider provisions and deprovisions one org's people.

Authentication is a SCIM token (``nxscim_...``, issued per org through
``/api/admin/scim-tokens``, stored as a keyed hash), never a session: the
token sees and changes the users whose home org is its org and the groups
of that org, nothing else (super admins and other orgs' users do not exist
for it).  A SCIM group carries members only: what a group may do is
attached to it in Nexus (roles, policies), so provisioning grants nobody a
right an admin did not give the group.

Deprovisioning (``active: false``, or DELETE) disables the user: every
session and API token of theirs is refused from the next request on (each
request checks the user), their sessions are revoked in the session store,
and their personal virtual keys are compiled as revoked into the next
snapshot (the answer waits until it is published).  A deleted user stays in
the Hub, disabled and out of its groups, for the audit trail; SCIM no
longer shows it, and a later POST of the same userName brings it back.

Every request is an admin audit record (actor: the token's NRN; action
``scim:<resource>.<verb>``).  Errors are SCIM's ``Error`` schema.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from hub.api.errors import ApiError
from hub.api.http import Call, Route, endpoint
from hub.authz import Principal, org_path
from hub.commands import Create, DomainError, Replace
from hub.iam import resource_nrn
from hub.signin import tokens
from hub.state import HubState, Resource
from streams.config_base import ConfigError
from streams.config_hub import GroupSpec, UserSpec
from streams.events import now_ms, uuid7

BASE = "/scim/v2"
MEDIA = "application/scim+json"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
EXTERNAL_ID = "scim-external-id"  # user tag holding the IdP's externalId
DELETED = "scim-deleted"  # user tag: deleted through SCIM (kept disabled)
MAX_COUNT = 500
_FILTER = re.compile(r'^\s*([A-Za-z][\w.]*)\s+eq\s+"((?:[^"\\]|\\.)*)"\s*$')


class ScimError(Exception):
    def __init__(self, status: int, detail: str, scim_type: str = "") -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.scim_type = scim_type


def _answer(body: Any, status: int = 200, *, version: int | None = None) -> web.Response:
    resp = web.Response(body=msgspec.json.encode(body), status=status, content_type=MEDIA)
    resp.headers["Cache-Control"] = "no-store"
    if version is not None:
        resp.headers["ETag"] = f'W/"{version}"'
    return resp


def error_answer(status: int, detail: str, scim_type: str = "") -> web.Response:
    body: dict[str, Any] = {"schemas": [ERROR_SCHEMA], "status": str(status), "detail": detail[:500]}
    if scim_type:
        body["scimType"] = scim_type
    resp = _answer(body, status)
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="nexus-scim"'
    return resp


_SCIM_TYPES = {409: "uniqueness", 422: "invalidValue", 400: "invalidSyntax"}


def _from_api(err: ApiError) -> ScimError:
    status = 400 if err.status == 422 else err.status
    return ScimError(status, err.message, _SCIM_TYPES.get(err.status, ""))


# --- the caller ------------------------------------------------------------------------


def _authenticate(call: Call) -> Resource:
    auth = call.request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    token = value.strip() if scheme.lower() == "bearer" else ""
    res: Resource | None = None
    if tokens.well_formed(token) and tokens.kind_of(token) == "scim":
        with contextlib.suppress(ConfigError):
            res = call.hub.token_index.lookup(call.state, call.hub.hmac_secret(call.state), token)
    if (
        res is None
        or res.spec.kind != "scim"
        or not tokens.usable(res, now_ms())
        or call.state.get("org", res.spec.org) is None
    ):
        call.decision_label = "unauthenticated"
        raise ScimError(401, "a valid SCIM bearer token is required")
    nrn = resource_nrn("scim-token", org_path(call.state, res.spec.org), res.id)
    # The token speaks for the identity provider: it holds no IAM policy
    # (its reach is its org's users and groups, checked here).
    call.principal = Principal(user_id="", nrn=nrn, email="", policies=())
    call.actor_name = f"scim:{res.id}"
    call.tenant_org = res.spec.org
    call.decision_label = "scim_token"
    return res


ScimHandler = Callable[[Call, str], Awaitable[web.Response]]


def _handler(action: str, fn: ScimHandler) -> Callable[[Call], Awaitable[web.StreamResponse]]:
    async def handle(call: Call) -> web.StreamResponse:
        call.action = action
        try:
            token = _authenticate(call)
            return await fn(call, token.spec.org)
        except ScimError as exc:
            return error_answer(exc.status, exc.detail, exc.scim_type)
        except ApiError as exc:
            err = _from_api(exc)
            return error_answer(err.status, err.detail, err.scim_type)
        except DomainError as exc:
            status = 400 if exc.status == 422 else exc.status
            return error_answer(status, exc.message, _SCIM_TYPES.get(exc.status, ""))

    handle.__name__ = fn.__name__
    return handle


async def _json(call: Call) -> dict[str, Any]:
    ctype = call.request.headers.get("Content-Type", MEDIA).split(";")[0].strip().lower()
    if ctype not in (MEDIA, "application/json"):
        raise ScimError(415, f"send {MEDIA}")
    data = await call.request.content.read(1024 * 1024 + 1)
    if len(data) > 1024 * 1024:
        raise ScimError(413, "the body is over 1 MiB")
    try:
        doc = msgspec.json.decode(data)
    except msgspec.DecodeError:
        raise ScimError(400, "the body is not valid JSON", "invalidSyntax") from None
    if not isinstance(doc, dict):
        raise ScimError(400, "the body must be a JSON object", "invalidSyntax")
    return doc


def _str(doc: dict[str, Any], name: str, *, required: bool = False) -> str:
    value = doc.get(name)
    if value is None:
        if required:
            raise ScimError(400, f"{name} is required", "invalidValue")
        return ""
    if not isinstance(value, str):
        raise ScimError(400, f"{name} must be a string", "invalidValue")
    return value


def _bool(value: Any, name: str) -> bool:
    # Some identity providers (Entra ID) send booleans as strings.
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ScimError(400, f"{name} must be a boolean", "invalidValue")


def _page(call: Call) -> tuple[int, int]:
    try:
        start = int(call.query("startIndex", "1") or 1)
        count = int(call.query("count", "100") or 100)
    except ValueError:
        raise ScimError(400, "startIndex and count are integers", "invalidValue") from None
    return max(1, start), max(0, min(MAX_COUNT, count))


def _filter(call: Call, allowed: dict[str, Callable[[Resource], str]]) -> Callable[[Resource], bool]:
    text = call.query("filter")
    if not text:
        return lambda _: True
    m = _FILTER.match(text)
    if m is None or m.group(1) not in allowed:
        supported = " or ".join(f'{a} eq "..."' for a in allowed)
        raise ScimError(400, f"filter: only {supported} is supported", "invalidFilter")
    attr, wanted = m.group(1), m.group(2).replace('\\"', '"').replace("\\\\", "\\")
    get = allowed[attr]
    if attr == "userName":  # caseExact: false (RFC 7643 4.1.1)
        return lambda r: get(r).lower() == wanted.lower()
    return lambda r: get(r) == wanted


def _listed(call: Call, items: list[Resource], show: Callable[[Resource], dict[str, Any]]) -> web.Response:
    start, count = _page(call)
    chosen = items[start - 1 : start - 1 + count]
    return _answer(
        {
            "schemas": [LIST_SCHEMA],
            "totalResults": len(items),
            "startIndex": start,
            "itemsPerPage": len(chosen),
            "Resources": [show(r) for r in chosen],
        }
    )


def _meta(call: Call, res: Resource, rtype: str) -> dict[str, Any]:
    from hub.views import view

    item = view(res)
    return {
        "resourceType": rtype,
        "created": item.created_at.isoformat(),
        "lastModified": item.updated_at.isoformat(),
        "version": f'W/"{res.version}"',
        "location": f"{call.request.url.origin()}{BASE}/{rtype}s/{res.id}",
    }


# --- users -------------------------------------------------------------------------------


def _users(state: HubState, org: str) -> list[Resource]:
    out = [r for r in state.all("user") if r.spec.org == org and r.spec.tags.get(DELETED) != "true"]
    return sorted(out, key=lambda r: r.created_at_ms)


def _user(call: Call, org: str) -> Resource:
    res = call.state.get("user", call.request.match_info["id"])
    if res is None or res.spec.org != org or res.spec.tags.get(DELETED) == "true":
        raise ScimError(404, "no such user")
    call.resource = resource_nrn("user", org_path(call.state, org), res.id)
    return res


def _user_doc(call: Call, res: Resource) -> dict[str, Any]:
    u: UserSpec = res.spec
    doc: dict[str, Any] = {
        "schemas": [USER_SCHEMA],
        "id": res.id,
        "userName": u.email,
        "name": {"formatted": u.name},
        "displayName": u.name,
        "active": not u.disabled,
        "emails": [{"value": u.email, "primary": True, "type": "work"}],
        "groups": [
            {"value": g.id, "display": g.spec.name or g.id}
            for g in call.state.all("group")
            if res.id in g.spec.members
        ],
        "meta": _meta(call, res, "User"),
    }
    if u.tags.get(EXTERNAL_ID):
        doc["externalId"] = u.tags[EXTERNAL_ID]
    return doc


def _name_of(doc: dict[str, Any]) -> str:
    name = doc.get("name")
    if isinstance(name, dict):
        formatted = name.get("formatted")
        if isinstance(formatted, str) and formatted:
            return formatted[:256]
        parts = [name.get("givenName"), name.get("familyName")]
        joined = " ".join(p for p in parts if isinstance(p, str) and p)
        if joined:
            return joined[:256]
    display = doc.get("displayName")
    return display[:256] if isinstance(display, str) else ""


def _with_user_doc(spec: UserSpec, doc: dict[str, Any]) -> UserSpec:
    """``spec`` with what a SCIM user document sets (a PUT: the whole)."""
    tags = dict(spec.tags)
    external = _str(doc, "externalId")
    if external:
        tags[EXTERNAL_ID] = external[:256]
    else:
        tags.pop(EXTERNAL_ID, None)
    tags.pop(DELETED, None)
    active = _bool(doc["active"], "active") if "active" in doc else True
    return msgspec.structs.replace(
        spec,
        email=_str(doc, "userName", required=True)[:320],
        name=_name_of(doc),
        disabled=not active,
        tags=tags,
    )


async def list_users(call: Call, org: str) -> web.Response:
    keep = _filter(
        call,
        {
            "userName": lambda r: str(r.spec.email),
            "externalId": lambda r: str(r.spec.tags.get(EXTERNAL_ID, "")),
            "id": lambda r: r.id,
        },
    )
    return _listed(call, [r for r in _users(call.state, org) if keep(r)], lambda r: _user_doc(call, r))


async def get_user(call: Call, org: str) -> web.Response:
    res = _user(call, org)
    return _answer(_user_doc(call, res), version=res.version)


async def create_user(call: Call, org: str) -> web.Response:
    doc = await _json(call)
    email = _str(doc, "userName", required=True)
    existing = next((r for r in call.state.all("user") if r.spec.email.lower() == email.lower()), None)
    if existing is not None:
        if existing.spec.org != org or existing.spec.tags.get(DELETED) != "true":
            raise ScimError(409, "a user with this userName exists", "uniqueness")
        # Deleted through SCIM before: provisioned again, same account.
        return await _save_user(call, org, existing, _with_user_doc(existing.spec, doc), status=201)
    rid = str(uuid.uuid4())
    spec = _with_user_doc(UserSpec(id=rid, email=email, org=org), doc)
    call.resource = resource_nrn("user", org_path(call.state, org), rid)
    await call.execute(Create(**call.envelope(), aggregate="user", spec=spec))
    res = call.state.get("user", rid)
    assert res is not None
    call.after = {"user": rid, "active": not spec.disabled}
    return _answer(_user_doc(call, res), 201, version=res.version)


async def replace_user(call: Call, org: str) -> web.Response:
    res = _user(call, org)
    doc = await _json(call)
    return await _save_user(call, org, res, _with_user_doc(res.spec, doc))


def _apply_user_op(spec: UserSpec, op: str, path: str, value: Any) -> UserSpec:
    if op == "remove":
        if path == "externalId":
            kept = {k: v for k, v in spec.tags.items() if k != EXTERNAL_ID}
            return msgspec.structs.replace(spec, tags=kept)
        raise ScimError(400, f"cannot remove {path!r}", "noTarget")
    if not path:
        if not isinstance(value, dict):
            raise ScimError(400, "a patch without a path needs an object value", "invalidValue")
        for k, v in value.items():
            spec = _apply_user_op(spec, op, k, v)
        return spec
    if path == "active":
        return msgspec.structs.replace(spec, disabled=not _bool(value, "active"))
    if path == "userName":
        if not isinstance(value, str):
            raise ScimError(400, "userName must be a string", "invalidValue")
        return msgspec.structs.replace(spec, email=value[:320])
    if path in ("displayName", "name.formatted"):
        if not isinstance(value, str):
            raise ScimError(400, f"{path} must be a string", "invalidValue")
        return msgspec.structs.replace(spec, name=value[:256])
    if path == "name":
        if not isinstance(value, dict):
            raise ScimError(400, "name must be an object", "invalidValue")
        return msgspec.structs.replace(spec, name=_name_of({"name": value}))
    if path == "externalId":
        if not isinstance(value, str):
            raise ScimError(400, "externalId must be a string", "invalidValue")
        return msgspec.structs.replace(spec, tags={**spec.tags, EXTERNAL_ID: value[:256]})
    if path in ("name.givenName", "name.familyName", "emails", "title", "locale", "preferredLanguage"):
        return spec  # accepted and not kept (Nexus keeps one name and one e-mail)
    raise ScimError(400, f"unsupported path {path!r}", "invalidPath")


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, Any]]:
    if PATCH_SCHEMA not in (doc.get("schemas") or []):
        raise ScimError(400, f"a PATCH body has the schema {PATCH_SCHEMA}", "invalidSyntax")
    ops = doc.get("Operations")
    if not isinstance(ops, list) or not ops:
        raise ScimError(400, "Operations: a non-empty list", "invalidSyntax")
    out = []
    for o in ops:
        if not isinstance(o, dict):
            raise ScimError(400, "each operation is an object", "invalidSyntax")
        op = str(o.get("op", "")).lower()
        if op not in ("add", "replace", "remove"):
            raise ScimError(400, "op: add, replace or remove", "invalidSyntax")
        path = o.get("path", "")
        if not isinstance(path, str):
            raise ScimError(400, "path must be a string", "invalidPath")
        out.append((op, path, o.get("value")))
    return out


async def patch_user(call: Call, org: str) -> web.Response:
    res = _user(call, org)
    spec: UserSpec = res.spec
    for op, path, value in _operations(await _json(call)):
        spec = _apply_user_op(spec, op, path, value)
    return await _save_user(call, org, res, spec)


async def delete_user(call: Call, org: str) -> web.Response:
    res = _user(call, org)
    spec = msgspec.structs.replace(res.spec, disabled=True, tags={**res.spec.tags, DELETED: "true"})
    await _save_user(call, org, res, spec)
    # Out of every group of the org (a deleted user holds nothing).
    for g in list(call.state.all("group")):
        if res.id in g.spec.members:
            members = tuple(m for m in g.spec.members if m != res.id)
            # One command each: the request's Idempotency-Key names the first.
            await call.execute(
                Replace(
                    **{**call.envelope(), "id": uuid7()},
                    aggregate="group",
                    rid=g.id,
                    spec=msgspec.structs.replace(g.spec, members=members),
                )
            )
    return web.Response(status=204, headers={"Cache-Control": "no-store"})


async def _save_user(
    call: Call, org: str, res: Resource, spec: UserSpec, *, status: int = 200
) -> web.Response:
    if spec.org != org or spec.id != res.id:
        raise ScimError(400, "a user stays in its org", "mutability")
    call.resource = resource_nrn("user", org_path(call.state, org), res.id)
    was_active = not res.spec.disabled
    call.before = {"user": res.id, "active": was_active}
    if spec != res.spec:
        await call.execute(
            Replace(**call.envelope(expected_version=res.version), aggregate="user", rid=res.id, spec=spec)
        )
    if was_active and spec.disabled:
        await _deprovisioned(call, res.id)
    fresh = call.state.get("user", res.id)
    assert fresh is not None
    call.after = {"user": res.id, "active": not fresh.spec.disabled}
    return _answer(_user_doc(call, fresh), status, version=fresh.version)


async def _deprovisioned(call: Call, user_id: str) -> None:
    """Sessions revoked in the store (each request refuses a disabled user
    already: this empties the user's session list), and the answer waits
    until the snapshot without their personal keys is published."""
    await call.hub.sessions.revoke_user(user_id)
    if call.hub.wait_published is not None and call.config_seq:
        with contextlib.suppress(TimeoutError):
            await call.hub.wait_published(call.config_seq)


# --- groups --------------------------------------------------------------------------------


def _groups(state: HubState, org: str) -> list[Resource]:
    return sorted((r for r in state.all("group") if r.spec.org == org), key=lambda r: r.created_at_ms)


def _group(call: Call, org: str) -> Resource:
    res = call.state.get("group", call.request.match_info["id"])
    if res is None or res.spec.org != org:
        raise ScimError(404, "no such group")
    call.resource = resource_nrn("group", org_path(call.state, org), res.id)
    return res


def _group_doc(call: Call, res: Resource) -> dict[str, Any]:
    g: GroupSpec = res.spec
    members = []
    for m in g.members:
        u = call.state.get("user", m)
        members.append({"value": m, "display": u.spec.email if u is not None else m, "type": "User"})
    return {
        "schemas": [GROUP_SCHEMA],
        "id": res.id,
        "displayName": g.name or g.id,
        "members": members,
        "meta": _meta(call, res, "Group"),
    }


def _member_ids(call: Call, org: str, value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        uid = item.get("value") if isinstance(item, dict) else None
        if not isinstance(uid, str):
            raise ScimError(400, "members: a list of {value: <user id>}", "invalidValue")
        user = call.state.get("user", uid)
        if user is None or user.spec.org != org:
            raise ScimError(400, f"members: no user {uid[:64]!r} in this org", "invalidValue")
        out.append(uid)
    return out


def _with_group_doc(call: Call, org: str, spec: GroupSpec, doc: dict[str, Any]) -> GroupSpec:
    members = _member_ids(call, org, doc.get("members") or [])
    return msgspec.structs.replace(
        spec, name=_str(doc, "displayName", required=True)[:256], members=tuple(dict.fromkeys(members))
    )


_MEMBER_PATH = re.compile(r'^members\[value eq "([^"]+)"\]$')


def _apply_group_op(call: Call, org: str, spec: GroupSpec, op: str, path: str, value: Any) -> GroupSpec:
    members = list(spec.members)
    if not path and isinstance(value, dict):
        for k, v in value.items():
            spec = _apply_group_op(call, org, spec, op, k, v)
        return spec
    if path == "displayName" and op != "remove":
        if not isinstance(value, str):
            raise ScimError(400, "displayName must be a string", "invalidValue")
        return msgspec.structs.replace(spec, name=value[:256])
    one = _MEMBER_PATH.match(path)
    if one is not None and op == "remove":
        members = [m for m in members if m != one.group(1)]
    elif path == "members":
        ids = _member_ids(call, org, value) if value is not None else []
        if op == "add":
            members += [i for i in ids if i not in members]
        elif op == "replace":
            members = list(dict.fromkeys(ids))
        else:
            members = [m for m in members if ids and m not in ids]
    else:
        raise ScimError(400, f"unsupported path {path!r}", "invalidPath")
    return msgspec.structs.replace(spec, members=tuple(members))


async def list_groups(call: Call, org: str) -> web.Response:
    keep = _filter(call, {"displayName": lambda r: str(r.spec.name or r.id), "id": lambda r: r.id})
    return _listed(call, [r for r in _groups(call.state, org) if keep(r)], lambda r: _group_doc(call, r))


async def get_group(call: Call, org: str) -> web.Response:
    res = _group(call, org)
    return _answer(_group_doc(call, res), version=res.version)


async def create_group(call: Call, org: str) -> web.Response:
    doc = await _json(call)
    name = _str(doc, "displayName", required=True)
    if any((g.spec.name or g.id) == name for g in _groups(call.state, org)):
        raise ScimError(409, "a group with this displayName exists", "uniqueness")
    rid = str(uuid.uuid4())
    spec = _with_group_doc(call, org, GroupSpec(id=rid, org=org), doc)
    call.resource = resource_nrn("group", org_path(call.state, org), rid)
    await call.execute(Create(**call.envelope(), aggregate="group", spec=spec))
    res = call.state.get("group", rid)
    assert res is not None
    call.after = {"group": rid, "members": len(spec.members)}
    return _answer(_group_doc(call, res), 201, version=res.version)


async def _save_group(call: Call, res: Resource, spec: GroupSpec) -> web.Response:
    call.before = {"group": res.id, "members": len(res.spec.members)}
    if spec != res.spec:
        await call.execute(
            Replace(**call.envelope(expected_version=res.version), aggregate="group", rid=res.id, spec=spec)
        )
    fresh = call.state.get("group", res.id)
    assert fresh is not None
    call.after = {"group": res.id, "members": len(fresh.spec.members)}
    return _answer(_group_doc(call, fresh), version=fresh.version)


async def replace_group(call: Call, org: str) -> web.Response:
    res = _group(call, org)
    return await _save_group(call, res, _with_group_doc(call, org, res.spec, await _json(call)))


async def patch_group(call: Call, org: str) -> web.Response:
    res = _group(call, org)
    spec: GroupSpec = res.spec
    for op, path, value in _operations(await _json(call)):
        spec = _apply_group_op(call, org, spec, op, path, value)
    return await _save_group(call, res, spec)


async def delete_group(call: Call, org: str) -> web.Response:
    from hub.commands import Delete

    res = _group(call, org)
    call.before = {"group": res.id, "members": len(res.spec.members)}
    await call.execute(Delete(**call.envelope(), aggregate="group", rid=res.id))
    return web.Response(status=204, headers={"Cache-Control": "no-store"})


# --- the route table (outside the admin API's: its own authentication) ----------------------


def _route(method: str, path: str, action: str, fn: ScimHandler) -> Route:
    return Route(method, BASE + path, _handler(action, fn), None, f"SCIM {action}", public=True, tag="scim")


SCIM_ROUTES: tuple[Route, ...] = (
    _route("GET", "/Users", "scim:user.read", list_users),
    _route("POST", "/Users", "scim:user.create", create_user),
    _route("GET", "/Users/{id}", "scim:user.read", get_user),
    _route("PUT", "/Users/{id}", "scim:user.update", replace_user),
    _route("PATCH", "/Users/{id}", "scim:user.update", patch_user),
    _route("DELETE", "/Users/{id}", "scim:user.delete", delete_user),
    _route("GET", "/Groups", "scim:group.read", list_groups),
    _route("POST", "/Groups", "scim:group.create", create_group),
    _route("GET", "/Groups/{id}", "scim:group.read", get_group),
    _route("PUT", "/Groups/{id}", "scim:group.update", replace_group),
    _route("PATCH", "/Groups/{id}", "scim:group.update", patch_group),
    _route("DELETE", "/Groups/{id}", "scim:group.delete", delete_group),
)


def add_scim_routes(app: web.Application) -> None:
    for route in SCIM_ROUTES:
        app.router.add_route(route.method, route.path, endpoint(route))
