"""The block page a browser gets, and proceeding past it with a
justification.

A refused CONNECT shows in a browser as a bare network error, so when a
connection-stage hook blocks a browser (its CONNECT carries a ``Mozilla/``
user agent) the proxy answers 200, terminates TLS with a leaf of its own and
answers every request on that connection with an HTML page naming the rule
(a 403; a non-page request gets the same in JSON).  Nothing reaches the
host.

When the blocking hook is one ``proxy.block_page.justify_hooks`` names, the
page carries a form: the user writes why, the proxy records it (a
``proxy.justification`` event) and, for ``justification_ttl_s``, runs those
hooks in monitor mode for that user (else source address) and host
(``Bypass.excused``: verdicts still recorded, as ``justified``), on every
proxy node when they share a Valkey.  The form
carries a token bound to the user, host, hooks and time (HMAC under a key
derived from the node's secret, checked in constant time), and a post from
another origin is refused, so a page elsewhere cannot justify in the
user's name.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import html
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import msgspec

from ingress.http1 import Headers, Request, Responder
from streams.config_proxy import ProxyBlockPage
from streams.events import Node, Tenant
from streams.events_proxy import ProxyJustification

log = logging.getLogger("nexus.proxy")

JUSTIFY_PATH = "/.well-known/nexus/justify"
TOKEN_TTL_S = 900.0  # a block page's form is good for this long
MAX_JUSTIFICATION = 1000

_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class BlockNotice:
    """Why a connection is served the block page."""

    rule: str  # what the page names: the rule, else the hook
    hook: str  # the hook that blocked
    justifiable: bool


def is_browser(headers: Headers) -> bool:
    """A browser's CONNECT says Mozilla/... (every engine does, for history's
    sake); SDKs and command-line clients do not."""
    return (headers.get("user-agent") or "").startswith("Mozilla/")


class Justifications:
    """Hooks excused per (who, host) until a time.  With Valkey they are
    shared by every proxy node (one key per user and host, expiring with the
    justification, under the node's key prefix); without it, or while it
    is away, this node's memory keeps them."""

    def __init__(
        self, valkey: Any = None, prefix: str = "nexus:", clock: Callable[[], float] = time.time
    ) -> None:
        self.valkey = valkey
        self.prefix = prefix
        self.clock = clock
        self._by: dict[tuple[str, str], tuple[frozenset[str], float]] = {}

    def _key(self, who: str, host: str) -> str:
        digest = hashlib.sha256(f"{who}\0{host.lower()}".encode()).hexdigest()
        return f"{self.prefix}proxy:justified:{digest}"

    async def excused(self, who: str, host: str) -> frozenset[str]:
        local = self._local(who, host)
        if self.valkey is None:
            return local
        try:
            raw = await self.valkey.get(self._key(who, host))
        except Exception as exc:  # Valkey away: what this node knows
            log.warning("justifications: Valkey unavailable (%s)", type(exc).__name__)
            return local
        shared = frozenset(raw.decode().split(",")) - {""} if raw else frozenset()
        return local | shared

    def _local(self, who: str, host: str) -> frozenset[str]:
        key = (who, host.lower())
        found = self._by.get(key)
        if found is None:
            return frozenset()
        hooks, until = found
        if self.clock() >= until:
            del self._by[key]
            return frozenset()
        return hooks

    async def add(self, who: str, host: str, hooks: frozenset[str], ttl_s: float) -> float:
        hooks = hooks | await self.excused(who, host)
        until = self.clock() + ttl_s
        if len(self._by) >= 100_000:
            now = self.clock()
            self._by = {k: v for k, v in self._by.items() if v[1] > now}
        self._by[(who, host.lower())] = (hooks, until)
        if self.valkey is not None:
            try:
                await self.valkey.set(self._key(who, host), ",".join(sorted(hooks)), px=int(ttl_s * 1000))
            except Exception as exc:
                log.warning("justifications: Valkey unavailable (%s): kept on this node", type(exc).__name__)
        return until


class FormTokens:
    """The token a block page's form carries: issued-at and an HMAC over
    (who, host, hook, issued-at)."""

    def __init__(self, secret: bytes, clock: Callable[[], float] = time.time) -> None:
        self._key = hmac.new(secret, b"nexus-proxy-justify", hashlib.sha256).digest()
        self.clock = clock

    def _mac(self, who: str, host: str, hook: str, issued: int) -> str:
        msg = f"{who}\0{host.lower()}\0{hook}\0{issued}".encode()
        return (
            base64.urlsafe_b64encode(hmac.new(self._key, msg, hashlib.sha256).digest()).decode().rstrip("=")
        )

    def issue(self, who: str, host: str, hook: str) -> str:
        issued = int(self.clock())
        return f"{issued}.{self._mac(who, host, hook, issued)}"

    def valid(self, token: str, who: str, host: str, hook: str) -> bool:
        issued_text, _, mac = token.partition(".")
        if not issued_text.isdigit() or not mac:
            return False
        issued = int(issued_text)
        if not 0 <= self.clock() - issued <= TOKEN_TTL_S:
            return False
        return hmac.compare_digest(mac.encode(), self._mac(who, host, hook, issued).encode())


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;background:#f4f5f7;color:#1d2330;margin:0}
main{max-width:640px;margin:8vh auto;background:#fff;border-radius:10px;padding:32px 40px;
box-shadow:0 2px 12px rgba(0,0,0,.08)}
h1{font-size:1.5rem;margin:0 0 12px}.tag{display:inline-block;background:#fde8e8;color:#a61b1b;
border-radius:4px;padding:2px 8px;font-weight:600}.ok{background:#e6f4ea;color:#1e6b33}
code{background:#eef0f3;border-radius:4px;padding:1px 5px}textarea{width:100%;min-height:90px;
box-sizing:border-box;font:inherit;padding:8px}button,a.button{margin-top:12px;background:#1d4ed8;
color:#fff;border:0;border-radius:6px;padding:9px 16px;font:inherit;cursor:pointer;text-decoration:none;
display:inline-block}.error{color:#a61b1b}.small{color:#5b6475;font-size:.9rem}
"""


def _page(title: str, body: str) -> bytes:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>"
    ).encode()


def block_html(
    host: str, notice: BlockNotice, cfg: ProxyBlockPage, *, token: str = "", back: str = "/", error: str = ""
) -> bytes:
    e = html.escape
    parts = [
        '<p><span class="tag">Blocked by policy</span></p>',
        f"<h1>{e(host)} is not available</h1>",
        f"<p>Your organisation's policy blocks this site (rule <code>{e(notice.rule)}</code>).</p>",
    ]
    if notice.justifiable and token:
        parts += [
            "<h2>Proceed with a justification</h2>",
            f"<p>If you need this site for your work, say why. Your justification is recorded with your "
            f"name, address and this site, and lets you through for "
            f"{int(cfg.justification_ttl_s // 60)} minutes.</p>",
            f'<form method="post" action="{JUSTIFY_PATH}">',
            f'<input type="hidden" name="token" value="{e(token)}">',
            f'<input type="hidden" name="back" value="{e(back)}">',
            f'<textarea name="reason" required minlength="{cfg.min_justification_chars}" '
            f'maxlength="{MAX_JUSTIFICATION}" placeholder="Why you need this site"></textarea>',
            f'<p class="error">{e(error)}</p>' if error else "",
            '<button type="submit" id="proceed">Proceed</button></form>',
        ]
    if cfg.contact:
        parts.append(f'<p class="small">Questions: {e(cfg.contact)}</p>')
    return _page(f"Blocked: {host}", "".join(parts))


def recorded_html(host: str, until: float, back: str) -> bytes:
    e = html.escape
    when = dt.datetime.fromtimestamp(until, dt.UTC).strftime("%H:%M UTC")
    target = f"https://{host}{back}"
    return _page(
        f"Justification recorded: {host}",
        '<p><span class="tag ok">Justification recorded</span></p>'
        f"<h1>You may proceed to {e(host)}</h1>"
        f"<p>Your justification was recorded. Access is allowed until {e(when)}; "
        "what you send is still checked and recorded.</p>"
        f'<a class="button" id="continue" href="{e(target)}">Continue to {e(host)}</a>',
    )


def _safe_back(value: str) -> str:
    """A path on the same host only (never another site: no open redirect)."""
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value[:2048]


class BlockPageHandler:
    """The http1 handler of a connection bumped only to show the block page."""

    def __init__(
        self,
        *,
        host: str,
        notice: BlockNotice,
        cfg: ProxyBlockPage,
        who: str,
        tokens: FormTokens,
        justified: Justifications,
        emit: Callable[[ProxyJustification], None],
        node: Node,
        tenant: Tenant,
        connection_id: str,
        client_ip: str,
    ) -> None:
        self.host = host
        self.notice = notice
        self.cfg = cfg
        self.who = who
        self.tokens = tokens
        self.justified = justified
        self.emit = emit
        self.node = node
        self.tenant = tenant
        self.connection_id = connection_id
        self.client_ip = client_ip
        self.justifications = 0

    async def __call__(self, req: Request, resp: Responder) -> None:
        if req.method == "POST" and req.path == JUSTIFY_PATH and self.notice.justifiable:
            await self._justify(req, resp)
            return
        if "text/html" not in (req.headers.get("accept") or ""):
            body = _encoder.encode(
                {
                    "error": {
                        "message": f"Blocked by Nexus policy (rule: {self.notice.rule}).",
                        "type": "blocked_by_policy",
                        "code": "blocked_by_policy",
                    }
                }
            )
            await resp.send(403, Headers([("Content-Type", "application/json")]), body)
            return
        page = block_html(
            self.host,
            self.notice,
            self.cfg,
            token=self.tokens.issue(self.who, self.host, self.notice.hook),
            back=_safe_back(req.target),
        )
        await resp.send(403, _html_headers(), page)

    async def _justify(self, req: Request, resp: Responder) -> None:
        origin = req.headers.get("origin")
        site = req.headers.get("sec-fetch-site")
        if (origin is not None and origin.lower() != f"https://{self.host.lower()}") or site not in (
            None,
            "same-origin",
        ):
            await resp.send(
                403, _html_headers(), _page("Refused", "<h1>Refused: not sent from this page</h1>")
            )
            return
        try:
            form = parse_qs(req.body.decode("utf-8"), max_num_fields=8)
        except (UnicodeDecodeError, ValueError):
            form = {}
        token = (form.get("token") or [""])[0]
        back = _safe_back((form.get("back") or ["/"])[0])
        reason = (form.get("reason") or [""])[0].strip()
        if not self.tokens.valid(token, self.who, self.host, self.notice.hook):
            page = block_html(
                self.host,
                self.notice,
                self.cfg,
                token=self.tokens.issue(self.who, self.host, self.notice.hook),
                back=back,
                error="This form has expired: please write your justification again.",
            )
            await resp.send(400, _html_headers(), page)
            return
        if not self.cfg.min_justification_chars <= len(reason) <= MAX_JUSTIFICATION:
            page = block_html(
                self.host,
                self.notice,
                self.cfg,
                token=self.tokens.issue(self.who, self.host, self.notice.hook),
                back=back,
                error=f"Please write at least {self.cfg.min_justification_chars} characters.",
            )
            await resp.send(400, _html_headers(), page)
            return
        hooks = frozenset({self.notice.hook})
        until = await self.justified.add(self.who, self.host, hooks, self.cfg.justification_ttl_s)
        self.justifications += 1
        self.emit(
            ProxyJustification(
                request_id=self.connection_id,
                node=self.node,
                tenant=self.tenant,
                host=self.host,
                hooks=sorted(hooks),
                rule=self.notice.rule,
                justification=reason,
                client_ip=self.client_ip,
                user_agent=(req.headers.get("user-agent") or "")[:256],
                until_ms=int(until * 1000),
            )
        )
        # This connection stays a block page's: the browser must open a new
        # one (which the justification now lets through).
        await resp.send(200, _html_headers(), recorded_html(self.host, until, back), close=True)


def _html_headers() -> Headers:
    return Headers(
        [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Cache-Control", "no-store"),
            ("X-Frame-Options", "DENY"),
            ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"),
        ]
    )
