"""Real local receivers for the alert channels: aiohttp servers that check
what a real webhook receiver, Slack, or PagerDuty's Events API would, and
an SMTP server (aiosmtpd)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Received:
    status: int  # what the receiver answered
    headers: dict[str, str]
    body: bytes
    doc: Any = None
    error: str = ""  # why it refused ("" = accepted)


@dataclass
class HttpReceiver:
    """One POST route.  ``check`` returns "" to accept (2xx) or why not (400
    / 401); ``fail_with`` answers every request with that status instead
    (a receiver that is down in a way HTTP can say)."""

    kind: str
    secret: bytes = b""
    replay_window_s: int = 300
    fail_with: int = 0
    got: list[Received] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    @property
    def accepted(self) -> list[Received]:
        return [r for r in self.got if not r.error and 200 <= r.status < 300]

    def _check_webhook(self, request: web.Request, body: bytes) -> tuple[int, str]:
        # The recipe of docs/alerts.md, as a receiver implements it.
        ts = request.headers.get("X-Nexus-Timestamp", "")
        sig = request.headers.get("X-Nexus-Signature", "")
        if not ts.isdigit() or not sig.startswith("v1="):
            return 401, "missing signature headers"
        if abs(time.time() - int(ts)) > self.replay_window_s:
            return 401, "timestamp outside the replay window"
        expected = hmac.new(self.secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, sig[3:]):
            return 401, "bad signature"
        doc = json.loads(body)
        if doc.get("type") != "nexus.alert" or doc.get("id") != request.headers.get("X-Nexus-Alert-Id"):
            return 400, "not an alert"
        return 200, ""

    @staticmethod
    def _check_slack(doc: Any) -> tuple[int, str]:
        # What Slack's incoming webhooks refuse: no text, or malformed blocks.
        if not isinstance(doc, dict) or not isinstance(doc.get("text"), str) or not doc["text"]:
            return 400, "no_text"
        for b in doc.get("blocks", []):
            if b.get("type") not in ("header", "section", "context", "divider"):
                return 400, "invalid_blocks"
            if b["type"] == "header" and (b["text"]["type"] != "plain_text" or len(b["text"]["text"]) > 150):
                return 400, "invalid_blocks"
        return 200, ""

    @staticmethod
    def _check_pagerduty(doc: Any) -> tuple[int, str]:
        # PagerDuty Events API v2's validation (400 "Event object is invalid").
        if not isinstance(doc, dict) or not doc.get("routing_key") or len(doc["routing_key"]) != 32:
            return 400, "invalid routing_key"
        action = doc.get("event_action")
        if action not in ("trigger", "acknowledge", "resolve"):
            return 400, "invalid event_action"
        if action == "trigger":
            p = doc.get("payload") or {}
            if not p.get("summary") or not p.get("source"):
                return 400, "payload.summary and payload.source are required"
            if p.get("severity") not in ("critical", "error", "warning", "info"):
                return 400, "invalid payload.severity"
        elif not doc.get("dedup_key"):
            return 400, "dedup_key is required to resolve"
        return 202, ""

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        if self.fail_with:
            self.got.append(Received(self.fail_with, headers, body, error="failing on purpose"))
            return web.Response(status=self.fail_with)
        doc: Any = None
        try:
            doc = json.loads(body)
        except ValueError:
            self.got.append(Received(400, headers, body, error="not JSON"))
            return web.Response(status=400)
        if self.kind == "webhook":
            status, error = self._check_webhook(request, body)
        elif self.kind == "slack":
            status, error = self._check_slack(doc)
        else:
            status, error = self._check_pagerduty(doc)
        self.got.append(Received(status, headers, body, doc, error))
        if self.kind == "pagerduty" and status == 202:
            return web.json_response(
                {"status": "success", "message": "Event processed", "dedup_key": doc["dedup_key"]}, status=202
            )
        return web.Response(status=status, text=error if error else "ok")

    async def start(self) -> HttpReceiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
