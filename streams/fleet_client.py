"""A thing's side of the sync protocol (``streams.fleet_wire``): hold a
WebSocket to the Hub, or long-poll where WebSockets do not pass; on a
signal pull the desired state, hand it to the thing's ``apply`` and report
what became of each key; beat while nothing happens.

    client = ThingClient(hub_url, token, apply=apply)   # apply(keys) -> {key: KeyOutcome}
    await client.start()
    ...
    await client.stop()

``apply`` is the thing's own: it returns one ``KeyOutcome`` per key it was
given (``unsupported`` for a key it does not know).  A key it could not
apply is tried again every ``retry_failed_s`` on the thing's own initiative:
the Hub stops re-pushing after three times, and the thing's report catching
up is what brings it back online.  The agent (a thing outside the NATS
trust boundary) and the fleet's tests use this client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

import aiohttp
import msgspec

from streams.config_fleet import CONFIG_KEY
from streams.fleet_wire import (
    DESIRED_PATH,
    REPORT_PATH,
    SIGNAL_PATH,
    WS_PATH,
    Desired,
    KeyOutcome,
    Posture,
    Report,
    Signal,
    desired_decoder,
    encode,
    signal_decoder,
    value_digest,
)
from streams.tasks import stop_tasks

log = logging.getLogger("nexus.fleet.client")

Apply = Callable[[dict[str, Any]], Awaitable[dict[str, KeyOutcome]]]
Transport = Literal["websocket", "long-poll"]


class Revoked(Exception):
    """The Hub no longer knows this thing (revoked, or a wrong token)."""


class ThingClient:
    def __init__(
        self,
        hub_url: str,
        token: str,
        *,
        apply: Apply,
        posture: Callable[[], Posture] | None = None,
        websocket: bool = True,
        heartbeat_s: float = 15.0,
        retry_failed_s: float | None = 5.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._url = hub_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._apply = apply
        self._posture = posture
        self._websocket = websocket
        self.heartbeat_s = heartbeat_s
        self._retry_failed_s = retry_failed_s
        self._own_session = session is None
        self._session = session
        self._task: asyncio.Task[None] | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._sync_lock = asyncio.Lock()
        self._retry: asyncio.Task[None] | None = None
        # What it knows: the last signal handled, the last desired state applied.
        self.handled: tuple[int, int] = (-1, -1)
        self.desired: Desired | None = None
        self.signals: list[Signal] = []
        self.transport: Transport | None = None
        self.revoked = asyncio.Event()
        self.synced = asyncio.Condition()
        self.reports_sent = 0

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=10))
        self._task = asyncio.create_task(self._run(), name="thing-client")

    async def stop(self) -> None:
        for task in (self._retry, self._task):
            if task is not None:
                with contextlib.suppress(Exception):
                    await stop_tasks(task)
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._own_session and self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "start() first"
        return self._session

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            try:
                if self._websocket and await self._over_websocket():
                    backoff = 0.2
                    continue
                await self._over_long_poll()
                backoff = 0.2
            except Revoked:
                log.warning("thing: the Hub refused this thing's token; stopping")
                self.revoked.set()
                return
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, OSError, TimeoutError, msgspec.DecodeError) as exc:
                log.info("thing: the Hub is not reachable (%s); retrying", type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    # --- WebSocket ---------------------------------------------------------------

    async def _over_websocket(self) -> bool:
        """Hold the WebSocket until it closes (True), or find it refused
        (False: long-poll instead)."""
        try:
            ws = await self.session.ws_connect(
                self._url + WS_PATH, headers=self._headers, heartbeat=self.heartbeat_s, max_msg_size=1 << 20
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 401:
                raise Revoked from None
            log.info("thing: WebSocket refused (%s); long-polling", exc.status)
            return False
        self._ws = ws
        self.transport = "websocket"
        beat = asyncio.create_task(self._ws_heartbeat(ws), name="thing-ws-heartbeat")
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                sig = signal_decoder.decode(msg.data)
                await self._on_signal(sig)
        finally:
            beat.cancel()
            self._ws = None
        if ws.close_code == 4401:
            raise Revoked
        return True

    async def _ws_heartbeat(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while not ws.closed:
            await asyncio.sleep(self.heartbeat_s)
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_str(encode(Report(kind="heartbeat", heartbeat_s=self.heartbeat_s)).decode())

    # --- long poll ---------------------------------------------------------------

    async def _over_long_poll(self) -> None:
        self.transport = "long-poll"
        # A poll is the heartbeat: never hold it longer than one.
        wait = max(1.0, min(self.heartbeat_s, 25.0))
        while True:
            version, push = max(self.handled[0], 0), max(self.handled[1], 0)
            url = f"{self._url}{SIGNAL_PATH}?version={version}&push={push}&wait={wait:g}"
            async with self.session.get(
                url, headers=self._headers, timeout=aiohttp.ClientTimeout(total=wait + 15)
            ) as r:
                if r.status == 401:
                    raise Revoked
                r.raise_for_status()
                sig = signal_decoder.decode(await r.read())
            await self._on_signal(sig)

    # --- sync --------------------------------------------------------------------

    async def _on_signal(self, sig: Signal) -> None:
        self.signals.append(sig)
        if sig.kind == "revoked":
            raise Revoked
        if (sig.version, sig.push) == self.handled:
            return
        self.handled = (sig.version, sig.push)
        await self.sync()

    async def sync(self) -> None:
        """Pull the desired state, apply it, report."""
        async with self._sync_lock:
            async with self.session.get(self._url + DESIRED_PATH, headers=self._headers) as r:
                if r.status == 401:
                    raise Revoked
                r.raise_for_status()
                desired = desired_decoder.decode(await r.read())
            outcomes = await self._apply(dict(desired.keys))
            report = self._report(desired, outcomes)
            await self._send(report)
            self.desired = desired
            async with self.synced:
                self.synced.notify_all()
        if self._retry_failed_s is not None and any(o.status == "failed" for o in outcomes.values()):
            self._schedule_retry(self._retry_failed_s)

    def _schedule_retry(self, delay: float) -> None:
        if self._retry is not None and not self._retry.done():
            return

        async def again() -> None:
            await asyncio.sleep(delay)
            self._retry = None  # the sync below may schedule the next one
            try:
                await self.sync()
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.info("thing: retry not sent (%s)", type(exc).__name__)

        self._retry = asyncio.create_task(again(), name="thing-retry")

    def _report(self, desired: Desired, outcomes: Mapping[str, KeyOutcome]) -> Report:
        revision, digest = 0, ""
        snap = desired.keys.get(CONFIG_KEY)
        done = outcomes.get(CONFIG_KEY)
        if isinstance(snap, dict) and done is not None and done.status == "applied":
            revision, digest = int(snap.get("revision", 0)), str(snap.get("digest", ""))
        return Report(
            version=desired.version,
            outcomes=dict(outcomes),
            revision=revision,
            digest=digest,
            posture=dict(self._posture()) if self._posture is not None else {},
            heartbeat_s=self.heartbeat_s,
        )

    async def _send(self, report: Report) -> None:
        ws = self._ws
        if ws is not None and not ws.closed:
            await ws.send_str(encode(report).decode())
        else:
            async with self.session.post(
                self._url + REPORT_PATH,
                data=encode(report),
                headers={**self._headers, "Content-Type": "application/json"},
            ) as r:
                if r.status == 401:
                    raise Revoked
                r.raise_for_status()
        self.reports_sent += 1


def applied(value: Any) -> KeyOutcome:
    """The outcome of a key applied with ``value``."""
    return KeyOutcome(status="applied", digest=value_digest(value), at_ms=time.time_ns() // 1_000_000)
