"""The Hub's side of proxy sign-in: proxies following this Hub ask it, over
NATS request-reply (``streams.signin_wire``), whether an e-mail and password
are a user's; it answers as its own password sign-in decides.

Why the proxy asks instead of reading verifiers from a KV bucket: password
hashes stay inside the Hub (the CONFIG stream, which no node reads), and the
login guard (hub.signin.guard) throttles and locks out proxy attempts
exactly as it does the admin API's -- one counter per e-mail and per client
address, whichever door the guesses come through.

The same rules as ``POST /auth/login``: the guard is asked first (a refused
attempt checks no password); password sign-in turned off refuses every
one; an unknown e-mail, a disabled user or a user without a password
(signing in through an identity provider only) is checked against a dummy
hash and refused like a wrong password, and counts as a failure.  Admin API
tokens are not passwords and never match.  A recheck (the user id and the
stamp a yes carried, no password) is yes while the user exists, is enabled,
has a password, password sign-in is on and nothing about them changed.

Replicas answer in one queue group (one answer per question).  Each
question runs in a task of its own; scrypt (32 MiB, ~0.2 s of CPU) runs in
threads, ``concurrency`` at a time, so a burst of sign-ins cannot take the
Hub's memory; past ``max_waiting`` questions waiting, a question is
answered "throttled" at once.

Every refused sign-in (a wrong password, an unknown or disabled user, a
throttled or locked-out login, password sign-in off) is an ``admin.action``
record in the audit trail (action ``auth:proxy_login``, route
``proxy/<node>``), as a refused ``POST /auth/login`` is: a security team
sees guessing through the proxies beside guessing at the sign-in page.
Successes are not: a proxy re-asks every few seconds while a user's
tunnels are open, and who used a tunnel is in its ``proxy.connection``
event.  A question answered "throttled" before it was read (the Hub past
``max_waiting``) is counted, not recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from hub.authz import nrn_of
from hub.signin.guard import LoginGuard, login_name
from hub.signin.passwords import dummy_hash, verify_password
from hub.state import HubState, Resource
from streams.config_hub import SigninSettings
from streams.events import Node, uuid7
from streams.events_admin import AdminAction
from streams.signin_wire import (
    DENIED,
    QUEUE,
    THROTTLED,
    SigninAnswer,
    SigninQuestion,
    decode_question,
    encode,
)
from streams.tasks import stop_tasks
from streams.topology import Topology

log = logging.getLogger("nexus.hub")


class ProxyVerifier:
    def __init__(
        self,
        nc: NATS,
        topology: Topology,
        state: Callable[[], HubState],
        guard: LoginGuard | None,
        *,
        audit: Callable[[AdminAction], None] | None = None,
        node: Node | None = None,
        concurrency: int = 4,
        max_waiting: int = 256,
    ) -> None:
        self._nc = nc
        self._subject = topology.proxy_signin_subject
        self._state = state
        self._guard = guard
        self._audit = audit
        self._node = node or Node(kind="hub", id="")
        self._hashing = asyncio.Semaphore(concurrency)
        self._max_waiting = max_waiting
        self._sub: Subscription | None = None
        self._loop: asyncio.Task[None] | None = None
        self._asked: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._subject, queue=QUEUE)
        self._loop = asyncio.create_task(self._serve(self._sub), name="hub-proxy-signin")

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._sub.unsubscribe()
            self._sub = None
        await stop_tasks(self._loop, *self._asked, within_s=5)
        self._loop = None

    async def _serve(self, sub: Subscription) -> None:
        # Not nats-py's callback: it runs one message at a time, and one
        # scrypt would hold every other proxy's question behind it.
        async for msg in sub.messages:
            if len(self._asked) >= self._max_waiting:
                await self._reply(msg, THROTTLED)
                continue
            task = asyncio.create_task(self._answer(msg), name="hub-proxy-signin-check")
            self._asked.add(task)
            task.add_done_callback(self._asked.discard)

    async def _answer(self, msg: Msg) -> None:
        question = decode_question(msg.data)
        answer = DENIED
        if question is not None:
            try:
                answer = await self.check(question)
            except Exception as exc:  # the guard's bucket away: no, like any failure
                log.warning("hub: a proxy sign-in was refused: %s", type(exc).__name__)
        await self._reply(msg, answer)

    async def _reply(self, msg: Msg, answer: SigninAnswer) -> None:
        if not msg.reply:
            return
        with contextlib.suppress(nats.errors.Error):
            await msg.respond(encode(answer))

    async def check(self, q: SigninQuestion) -> SigninAnswer:
        state = self._state()
        res = state.get("settings", "signin")
        settings: SigninSettings = res.spec if res is not None else SigninSettings()
        if not q.login:
            return _recheck(state, settings, q)
        guard = self._guard
        if guard is not None:
            refusal = await guard.admit(settings, q.login, q.source_ip)
            if refusal is not None:
                note = f"{refusal.scope} throttled" if refusal.code == "rate_limited" else "locked"
                self._refused(q, refusal.code, 429, note)
                return THROTTLED
        if not settings.password_login:
            self._refused(q, "password_login_off", 407)
            return DENIED
        user = _by_login(state, q.login)
        stored = user.password_hash if user is not None and not user.spec.disabled else ""
        async with self._hashing:
            # Unknown, disabled or password-less: a dummy hash, so the
            # answer takes as long as for a wrong password.
            ok = await asyncio.to_thread(verify_password, q.password, stored or dummy_hash())
        if not ok or user is None or not stored:
            note = ""
            if guard is not None:
                lock = await guard.failed(settings, q.login)
                if lock is not None:
                    note = f"lockout: {lock.failures} wrong passwords in a row"
                    log.info(
                        "hub: proxy sign-in locked a login after %d wrong passwords (node %s, from %s)",
                        lock.failures,
                        q.node[:64],
                        q.source_ip[:64],
                    )
            # The user's NRN when the e-mail is one (as the sign-in page's
            # record names it): which account is being guessed at.
            self._refused(q, "invalid_credentials", 407, note, user)
            return DENIED
        if guard is not None:
            await guard.succeeded(q.login)
        return SigninAnswer(ok=True, user=user.id, org=user.spec.org, stamp=user.version)

    def _refused(
        self, q: SigninQuestion, outcome: str, status: int, note: str = "", user: Resource | None = None
    ) -> None:
        """The audit record of a refused sign-in: who tried which login from
        where, through which proxy node; never the password."""
        if self._audit is None:
            return
        resource = ""
        if user is not None:
            with contextlib.suppress(Exception):
                resource = nrn_of(self._state(), "user", user.id)
        self._audit(
            AdminAction(
                request_id=uuid7(),
                node=self._node,
                actor_name=q.login[:256],
                action="auth:proxy_login",
                resource=resource,
                decision="unauthenticated",
                deciding_statement=note,
                source_ip=q.source_ip,
                method="PROXY",
                route=f"proxy/{q.node[:200]}",
                status=status,
                outcome=outcome,
            )
        )


def _recheck(state: HubState, settings: SigninSettings, q: SigninQuestion) -> SigninAnswer:
    user = state.get("user", q.user) if q.user and q.stamp else None
    if (
        user is None
        or user.version != q.stamp
        or user.spec.disabled
        or not user.password_hash
        or not settings.password_login
    ):
        return DENIED
    return SigninAnswer(ok=True, user=user.id, org=user.spec.org, stamp=user.version)


def _by_login(state: HubState, login: str) -> Resource | None:
    wanted = login_name(login)
    for r in state.all("user"):
        if r.spec.email.lower() == wanted:
            return r
    return None
