"""Forward a stage to an operator's HTTP endpoint (an LLM judge, a DLP
service) and, optionally, take its verdict.

The SSRF guard runs three times: at config load (the URL as written), when
the hook is built on a node (what its host name resolves to then) and on
every connection (a resolver that refuses private,
loopback and link-local answers), so a DNS record changed after load cannot
point the gateway at an internal service.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import socket
from typing import Any

import aiohttp
import msgspec
from aiohttp.abc import AbstractResolver, ResolveResult

from ingress.hooks.builtin.base import BaseHook, BuildContext
from ingress.hooks.types import HookInput, HookOutcome, Verdict
from ingress.upstream.resolver import check_resolved_url
from streams.config_hooks import HookSpec, WebhookSettings


class WebhookError(Exception):
    """The endpoint failed; the hook's fail mode decides what follows."""


class _PublicOnlyResolver(AbstractResolver):
    def __init__(self) -> None:
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for r in results:
            ip = ipaddress.ip_address(r["host"])
            if not ip.is_global or ip.is_multicast:
                raise WebhookError(f"webhook host resolves to a non-public address ({ip})")
        return results

    async def close(self) -> None:
        await self._inner.close()


class _Reply(msgspec.Struct):
    verdict: str = "approve"
    reason: str = ""
    rule: str = ""
    tags: list[str] = []


class WebhookHook(BaseHook):
    is_async = True
    settings: WebhookSettings

    def __init__(self, spec: HookSpec, settings: WebhookSettings, ctx: BuildContext) -> None:
        super().__init__(spec, settings, ctx)
        check_resolved_url(settings.url, allow_private=settings.allow_private_network, where="url")
        self._session: aiohttp.ClientSession | None = None
        self._secret = os.environ.get(settings.secret_env, "").encode() if settings.secret_env else b""
        ctx.closers.append(self.close)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            resolver = None if self.settings.allow_private_network else _PublicOnlyResolver()
            connector = aiohttp.TCPConnector(resolver=resolver, limit=64)
            # No cookie jar: one receiver's cookies never go back with other
            # requests' payloads.
            self._session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _payload(self, data: HookInput) -> dict[str, Any]:
        c = data.conn
        meta: dict[str, Any] = {
            "hook": self.spec.id,
            "stage": data.stage,
            "request_id": c.request_id,
            "ingress": c.ingress,
            "org_id": c.org_id,
            "project_id": c.project_id,
            "key_id": c.key_id,
            "client_ip": c.client_ip,
            "body_bytes": data.body_bytes,
            "text_chars": len(data.text),
            "payload_mode": self.settings.payload_mode,
        }
        if self.settings.payload_mode == "full":
            meta["payload"] = data.payload
        elif self.settings.payload_mode == "redacted":
            # The text as earlier hooks of this stage left it.
            meta["text"] = data.text
        return meta

    async def aevaluate(self, data: HookInput) -> HookOutcome:
        s = self.settings
        body = msgspec.json.encode(self._payload(data))
        headers = {"content-type": "application/json", **s.headers}
        if self._secret:
            sig = hmac.new(self._secret, body, hashlib.sha256).hexdigest()
            headers["x-nexus-signature"] = f"sha256={sig}"
        timeout = aiohttp.ClientTimeout(total=s.timeout_ms / 1000)
        try:
            async with self._client().post(s.url, data=body, headers=headers, timeout=timeout) as resp:
                raw = await resp.read()
                if resp.status >= 300:
                    raise WebhookError(f"webhook answered HTTP {resp.status}")
        except aiohttp.ClientError as exc:
            raise WebhookError(f"webhook unreachable: {type(exc).__name__}") from None
        if not s.use_verdict:
            return HookOutcome(tags=("webhook:forwarded",), mode=s.payload_mode)
        try:
            reply = msgspec.json.decode(raw, type=_Reply) if raw.strip() else _Reply()
            verdict = Verdict.parse(reply.verdict)
        except (msgspec.DecodeError, KeyError):
            raise WebhookError("webhook reply is not {verdict: approve|block}") from None
        if verdict is Verdict.REDACT:
            # A remote service cannot give spans in our coordinates; a
            # redact answer without them is treated as the stricter block.
            verdict = Verdict.BLOCK
        return HookOutcome(
            verdict,
            "webhook_verdict" if verdict is not Verdict.APPROVE else "",
            reply.reason[:200],
            rule=reply.rule or self.spec.id,
            tags=tuple(reply.tags[:16]),
            mode=s.payload_mode,
        )

    def evaluate(self, data: HookInput) -> HookOutcome:
        raise TypeError("webhook-forward is asynchronous")
