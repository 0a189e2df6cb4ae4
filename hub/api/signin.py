"""Signing in and out, and sessions: auth/login (throttled, locked out after
repeated failures, passwords re-hashed when their parameters are weaker than
today's), auth/logout, the caller's own sessions, and an admin's view and
revocation of a user's sessions.

Every answer to a wrong password is the same 401 whether the e-mail exists
or not, and takes as long (an unknown address is checked against a dummy
hash, and throttled and locked exactly like a known one).
"""

from __future__ import annotations

import asyncio
import datetime as dt

import msgspec
from aiohttp import web

from hub.api.errors import ApiError
from hub.api.http import CSRF_COOKIE, SESSION_COOKIE, Call, json_response
from hub.api.resources import authorize_item, found
from hub.authz import nrn_of, principal_of
from hub.commands import SetPassword
from hub.signin.guard import Lockout, login_name
from hub.signin.passwords import dummy_hash, hash_password, needs_rehash, verify_password
from hub.signin.sessions import MAX_LIFETIME_S, Session
from hub.state import HubState, Resource
from hub.views import Item, view
from streams.config_hub import SigninSettings, UserSpec
from streams.events import now_ms


def signin_settings(state: HubState) -> SigninSettings:
    res = state.get("settings", "signin")
    return res.spec if res is not None else SigninSettings()


class Login(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    email: str
    password: str


class LoginResult(msgspec.Struct, kw_only=True):
    # Send as Authorization: Bearer <token> (scripts, the CLI); browsers
    # get the same session as an HttpOnly cookie.
    token: str
    expires_at: dt.datetime
    user: Item[UserSpec]
    # A browser's writes with the session cookie send this back as the
    # X-CSRF-Token header (it is also in the nexus_csrf cookie).
    csrf_token: str = ""
    session_id: str = ""


def _by_email(state: HubState, email: str) -> Resource | None:
    wanted = login_name(email)
    for r in state.all("user"):
        if r.spec.email.lower() == wanted:
            return r
    return None


async def _check_password(state: HubState, email: str, password: str) -> tuple[Resource | None, bool]:
    """(the user, whether their stored hash is weaker than today's) when
    the password is right; (None, False) otherwise."""
    user = _by_email(state, email)
    stored = user.password_hash if user is not None and not user.spec.disabled else ""
    # A missing user or password is checked against a dummy hash: the
    # answer takes as long, whoever asks.
    ok = await asyncio.to_thread(verify_password, password, stored or dummy_hash())
    if not ok or user is None or not stored:
        return None, False
    return user, needs_rehash(stored)


async def open_session(call: Call, user: Resource, *, method: str) -> tuple[str, Session]:
    """A new session for ``user`` (after a password or an identity
    provider said who they are)."""
    settings = signin_settings(call.state)
    store_max = int(getattr(call.hub.sessions, "lifetime_s", MAX_LIFETIME_S))
    lifetime = min(settings.session_max_seconds, store_max)
    now = now_ms()
    session = Session(
        user_id=user.id,
        created_at_ms=now,
        expires_at_ms=now + lifetime * 1000,
        source_ip=call.source_ip,
        user_agent=call.request.headers.get("User-Agent", "")[:256],
        method=method,
        idle_s=settings.session_idle_seconds,
        last_seen_ms=now,
    )
    token = await call.hub.sessions.create(session)
    stored = await call.hub.sessions.get(token)
    return token, stored or session


def set_session_cookies(call: Call, resp: web.StreamResponse, token: str, session: Session) -> None:
    max_age = max(0, (session.expires_at_ms - now_ms()) // 1000)
    secure = call.hub.secure_cookies or call.secure
    resp.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age,
        path="/api/admin",
        httponly=True,
        samesite="Lax",
        secure=secure,
    )
    resp.set_cookie(
        CSRF_COOKIE, session.csrf, max_age=max_age, path="/", httponly=False, samesite="Lax", secure=secure
    )


async def login(call: Call) -> web.Response:
    body = await call.body(Login)
    call.action = "auth:login"
    call.actor_name = body.email[:256]
    settings = signin_settings(call.state)
    guard = call.hub.guard
    if guard is not None:
        refusal = await guard.admit(settings, body.email, call.source_ip)
        if refusal is not None:
            call.decision_label = refusal.code
            call.deciding_note = f"{refusal.scope} throttled" if refusal.code == "rate_limited" else "locked"
            message = (
                "too many sign-in attempts; retry later"
                if refusal.code == "rate_limited"
                else "too many wrong passwords in a row: sign-in is locked for a while"
            )
            raise ApiError(refusal.code, message, retry_after_s=refusal.retry_after_s)
    if not settings.password_login:
        call.decision_label = "password_login_off"
        raise ApiError(
            "access_denied", "password sign-in is turned off: sign in through your identity provider"
        )
    user, weak = await _check_password(call.state, body.email, body.password)
    if user is None:
        call.decision_label = "invalid_credentials"
        lock: Lockout | None = await guard.failed(settings, body.email) if guard is not None else None
        if lock is not None:
            until = dt.datetime.fromtimestamp(lock.until, tz=dt.UTC).isoformat(timespec="seconds")
            call.deciding_note = f"lockout: {lock.failures} wrong passwords in a row, locked until {until}"
        raise ApiError("invalid_credentials", "wrong e-mail or password")
    if guard is not None:
        await guard.succeeded(body.email)
    call.resource = nrn_of(call.state, "user", user.id)
    call.decision_label = "authenticated"
    call.principal = principal_of(call.state, user.id)
    if weak:
        # Upgrade the stored hash now that the password is at hand.
        digest = await asyncio.to_thread(hash_password, body.password)
        await call.execute(SetPassword(**call.envelope(), rid=user.id, password_hash=digest))
        call.deciding_note = "password re-hashed with today's parameters"
    token, session = await open_session(call, user, method="password")
    result = LoginResult(
        token=token,
        expires_at=dt.datetime.fromtimestamp(session.expires_at_ms / 1000, tz=dt.UTC),
        user=view(user),
        csrf_token=session.csrf,
        session_id=session.id,
    )
    resp = json_response(result)
    set_session_cookies(call, resp, token, session)
    return resp


async def logout(call: Call) -> web.Response:
    call.action = "auth:logout"
    call.self_service()
    await call.hub.sessions.delete(call.session_token)
    resp = web.Response(status=204, headers={"Cache-Control": "no-store"})
    resp.del_cookie(SESSION_COOKIE, path="/api/admin")
    resp.del_cookie(CSRF_COOKIE, path="/")
    return resp


# --- sessions -----------------------------------------------------------------------


class SessionView(msgspec.Struct, kw_only=True):
    id: str
    created_at: dt.datetime
    expires_at: dt.datetime
    last_seen_at: dt.datetime
    idle_timeout_seconds: int
    method: str
    source_ip: str
    user_agent: str
    current: bool = False


class SessionList(msgspec.Struct, kw_only=True):
    user: str
    items: list[SessionView]


class Revoked(msgspec.Struct, kw_only=True):
    revoked: int


def _t(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def _views(call: Call, sessions: list[Session]) -> list[SessionView]:
    mine = call.session.id if call.session is not None else ""
    return [
        SessionView(
            id=s.id,
            created_at=_t(s.created_at_ms),
            expires_at=_t(s.expires_at_ms),
            last_seen_at=_t(s.last_seen_ms or s.created_at_ms),
            idle_timeout_seconds=s.idle_s,
            method=s.method,
            source_ip=s.source_ip,
            user_agent=s.user_agent,
            current=bool(mine) and s.id == mine,
        )
        for s in sessions
    ]


async def my_sessions(call: Call) -> web.Response:
    call.self_service()
    assert call.principal is not None
    uid = call.principal.user_id
    return json_response(SessionList(user=uid, items=_views(call, await call.hub.sessions.list_user(uid))))


async def end_my_session(call: Call) -> web.Response:
    call.action = "auth:session.revoke"
    call.self_service()
    assert call.principal is not None
    sid = call.request.match_info["sid"]
    if not await call.hub.sessions.revoke(call.principal.user_id, sid):
        raise ApiError("not_found", f"you have no session {sid[:64]!r}")
    return web.Response(status=204, headers={"Cache-Control": "no-store"})


async def end_my_sessions(call: Call) -> web.Response:
    """Sign out everywhere (this session included)."""
    call.action = "auth:session.revoke"
    call.self_service()
    assert call.principal is not None
    n = await call.hub.sessions.revoke_user(call.principal.user_id)
    call.after = {"revoked": n}
    return json_response(Revoked(revoked=n))


def _user(call: Call, verb: str) -> Resource:
    from hub.api.identity import USERS

    user = found(call, USERS, call.request.match_info["id"])
    authorize_item(call, USERS, user, verb)
    return user


async def user_sessions(call: Call) -> web.Response:
    user = _user(call, "read")
    sessions = await call.hub.sessions.list_user(user.id)
    return json_response(SessionList(user=user.id, items=_views(call, sessions)))


async def revoke_user_sessions(call: Call) -> web.Response:
    user = _user(call, "revoke-sessions")
    n = await call.hub.sessions.revoke_user(user.id)
    call.after = {"user": user.id, "revoked": n}
    return json_response(Revoked(revoked=n))


async def revoke_user_session(call: Call) -> web.Response:
    user = _user(call, "revoke-sessions")
    sid = call.request.match_info["sid"]
    if not await call.hub.sessions.revoke(user.id, sid):
        raise ApiError("not_found", f"user {user.id!r} has no session {sid[:64]!r}")
    call.after = {"user": user.id, "revoked": 1}
    return web.Response(status=204, headers={"Cache-Control": "no-store"})


async def unlock_user(call: Call) -> web.Response:
    """Lift a lockout of the user's e-mail before it ends by itself."""
    user = _user(call, "revoke-sessions")
    was_locked = await call.hub.guard.unlock(user.spec.email) if call.hub.guard is not None else False
    call.after = {"user": user.id, "unlocked": was_locked}
    return web.Response(status=204, headers={"Cache-Control": "no-store"})
