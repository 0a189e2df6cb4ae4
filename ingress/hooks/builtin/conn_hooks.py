"""Hooks that need no text: request size, IP and domain allow/deny lists,
rate limits.

None of them finds anything in a stream's text, so a stream guard holds
nothing back for them (``hold_patterns`` is empty)."""

from __future__ import annotations

import fnmatch
import ipaddress
import uuid

from ingress.hooks.builtin.base import BaseHook, BuildContext
from ingress.hooks.holdback import HoldPattern
from ingress.hooks.types import HookInput, HookOutcome, Verdict
from streams.config_hooks import (
    DomainFilterSettings,
    HookSpec,
    IpFilterSettings,
    RateLimitSettings,
    RequestSizeSettings,
)


class _Textless(BaseHook):
    def hold_patterns(self) -> list[HoldPattern] | None:
        return []


class RequestSizeHook(_Textless):
    settings: RequestSizeSettings

    def evaluate(self, data: HookInput) -> HookOutcome:
        s = self.settings
        size = data.body_bytes or len(data.text.encode())
        if size > s.max_bytes:
            return HookOutcome(
                Verdict.BLOCK,
                "request_too_large",
                f"request is {size} bytes; the limit is {s.max_bytes}",
                rule="max_bytes",
                severity="medium",
                tags=("limit:size",),
            )
        if s.max_messages and data.message_count > s.max_messages:
            return HookOutcome(
                Verdict.BLOCK,
                "too_many_messages",
                f"request has {data.message_count} messages; the limit is {s.max_messages}",
                rule="max_messages",
                severity="medium",
                tags=("limit:messages",),
            )
        return HookOutcome()


class IpFilterHook(_Textless):
    settings: IpFilterSettings

    def __init__(self, spec: HookSpec, settings: IpFilterSettings, ctx: BuildContext) -> None:
        super().__init__(spec, settings, ctx)
        self._nets = [ipaddress.ip_network(c, strict=False) for c in settings.cidrs]

    def _listed(self, ip: str) -> bool | None:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr.version == n.version and addr in n for n in self._nets)

    def evaluate(self, data: HookInput) -> HookOutcome:
        listed = self._listed(data.conn.client_ip)
        allow = self.settings.mode == "allow"
        if listed is None:
            if not allow:
                return HookOutcome(tags=("ip:unknown",))
            return HookOutcome(Verdict.BLOCK, "ip_unknown", "client address unknown", rule="allowlist")
        if allow and not listed:
            return HookOutcome(
                Verdict.BLOCK, "ip_denied", "client address not on the allow list", "allowlist"
            )
        if not allow and listed:
            return HookOutcome(Verdict.BLOCK, "ip_denied", "client address is on the deny list", "denylist")
        return HookOutcome()


class DomainFilterHook(_Textless):
    settings: DomainFilterSettings

    def __init__(self, spec: HookSpec, settings: DomainFilterSettings, ctx: BuildContext) -> None:
        super().__init__(spec, settings, ctx)
        self._globs = [h.lower().rstrip(".") for h in settings.hosts]

    def evaluate(self, data: HookInput) -> HookOutcome:
        host = data.conn.target_host.lower().rstrip(".")
        if not host:
            return HookOutcome()  # no target (the gateway): nothing to judge
        matched = next((g for g in self._globs if fnmatch.fnmatchcase(host, g)), None)
        if self.settings.mode == "allow" and matched is None:
            return HookOutcome(
                Verdict.BLOCK, "domain_denied", "target host not on the allow list", "allowlist"
            )
        if self.settings.mode == "deny" and matched is not None:
            return HookOutcome(Verdict.BLOCK, "domain_denied", "target host is on the deny list", matched)
        return HookOutcome()


# A sliding window log per identity in one sorted set, atomically: trim what
# left the window, count, admit (or not), all with the server's clock so
# every gateway node shares one notion of "now".
_SLIDING_WINDOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) + 1000)
  return {1, count + 1, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, count, math.ceil((tonumber(oldest[2]) + window - now) / 1000)}
"""


class RateLimitHook(_Textless):
    is_async = True
    settings: RateLimitSettings

    def __init__(self, spec: HookSpec, settings: RateLimitSettings, ctx: BuildContext) -> None:
        super().__init__(spec, settings, ctx)
        if ctx.valkey is None:
            raise ValueError(f"hook {spec.id!r}: rate-limiter needs a Valkey connection")
        self._script = ctx.valkey.register_script(_SLIDING_WINDOW)
        self._window_us = int(settings.window_seconds * 1_000_000)

    def _identity(self, data: HookInput) -> str:
        c = data.conn
        return {"key": c.key_id, "org": c.org_id, "project": c.project_id, "ip": c.client_ip}[
            self.settings.key_type
        ]

    async def aevaluate(self, data: HookInput) -> HookOutcome:
        s = self.settings
        ident = self._identity(data)
        if not ident:
            return HookOutcome(tags=(f"ratelimit:no-{s.key_type}",))
        key = f"{self.ctx.key_prefix}rl:{self.spec.id}:{s.key_type}:{ident}"
        admitted, count, retry_ms = await self._script(
            keys=[key], args=[self._window_us, s.max_requests, uuid.uuid4().hex]
        )
        if int(admitted):
            return HookOutcome(tags=(f"ratelimit:{int(count)}/{s.max_requests}",))
        return HookOutcome(
            Verdict.BLOCK,
            "rate_limited",
            f"{int(count)} requests in the last {s.window_seconds:g}s; the limit is {s.max_requests}",
            rule=f"{s.key_type}:{s.max_requests}/{s.window_seconds:g}s",
            severity="low",
            tags=(f"retry_after_ms:{max(0, int(retry_ms))}",),
        )

    def evaluate(self, data: HookInput) -> HookOutcome:
        raise TypeError("rate-limiter is asynchronous")
