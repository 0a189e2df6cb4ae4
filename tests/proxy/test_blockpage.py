"""The block page over raw TLS: who gets it, what it refuses (a form from
another origin, a forged or stale token, another user's token), and the
pieces it is built from (tokens, the exemption store, the back link)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pytest

from ingress.proxy.blockpage import JUSTIFY_PATH, FormTokens, Justifications, _safe_back
from ingress.proxy.service import build_engine
from nexus.sim.server import SimServer
from streams.config import NexusConfig
from streams.config_snapshot import snapshot_from_config
from streams.events_proxy import ProxyJustification
from tests.proxy.conftest import FAKE_HOSTS, SECRET, Events, MakeProxy, client_context, proxy_config, tunnel
from tests.proxy.pki import Pki

BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/140.0"}


def _config(proxy_ca: tuple[Path, Path], upstream_pki: Pki, port: int) -> NexusConfig:
    resolve = {f"{h}:443": f"127.0.0.1:{port}" for h in FAKE_HOSTS}
    base = proxy_config(proxy_ca, upstream_pki, resolve, block_page={"justify_hooks": ["no-deepseek"]})
    hook = {
        "id": "no-deepseek",
        "type": "domain-filter",
        "stage": "connection",
        "settings": {"mode": "deny", "hosts": ["*.deepseek.com"]},
    }
    return msgspec.convert({**msgspec.to_builtins(base), "hooks": {"pipeline": [hook]}}, NexusConfig)


async def _exchange(
    node: Any, proxy_ca: Path, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, bytes]:
    reader, writer, status, head = await tunnel(node, "chat.deepseek.com:443", BROWSER)
    assert status == 200, head
    await writer.start_tls(client_context(proxy_ca), server_hostname="chat.deepseek.com")
    lines = [f"{method} {path} HTTP/1.1", "Host: chat.deepseek.com", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body:
        lines += ["Content-Type: application/x-www-form-urlencoded", f"Content-Length: {len(body)}"]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    data = await reader.read()
    writer.close()
    head_bytes, _, payload = data.partition(b"\r\n\r\n")
    return int(head_bytes.split(b" ", 2)[1]), payload


async def test_who_gets_the_page_and_what_the_form_refuses(
    make_proxy: MakeProxy, upstream: SimServer, proxy_ca: tuple[Path, Path], upstream_pki: Pki
) -> None:
    cfg = _config(proxy_ca, upstream_pki, upstream.port)
    engine = await build_engine(snapshot_from_config(cfg, SECRET), None, "nexus:", "px")
    events = Events()
    try:
        node = await make_proxy(config=cfg, events=events, engine=engine)
        # Not a browser: the CONNECT itself is refused.
        _, w, status, _ = await tunnel(node, "chat.deepseek.com:443", {"User-Agent": "curl/8.5"})
        w.close()
        assert status == 403
        # A browser's page load: the HTML page; its script's fetch: JSON.
        status, page = await _exchange(node, proxy_ca[0], "GET", "/chat?q=1", {"Accept": "text/html"})
        assert status == 403 and b"*.deepseek.com" in page and b'name="token"' in page
        status, body = await _exchange(node, proxy_ca[0], "GET", "/api", {"Accept": "application/json"})
        assert status == 403 and msgspec.json.decode(body)["error"]["code"] == "blocked_by_policy"
        token = page.split(b'name="token" value="', 1)[1].split(b'"', 1)[0].decode()
        form = f"token={token}&back=/chat&reason=A+long+enough+business+reason+for+this".encode()
        # From another site's page: refused.
        status, _ = await _exchange(
            node, proxy_ca[0], "POST", JUSTIFY_PATH, {"Origin": "https://evil.example"}, form
        )
        assert status == 403
        # A forged token: refused.
        forged = form.replace(token.encode(), token[:-2].encode() + b"xx")
        status, _ = await _exchange(node, proxy_ca[0], "POST", JUSTIFY_PATH, {}, forged)
        assert status == 400
        assert events.of(ProxyJustification) == []
        # The real one: recorded, and the next CONNECT goes through.
        status, page = await _exchange(
            node, proxy_ca[0], "POST", JUSTIFY_PATH, {"Origin": "https://chat.deepseek.com"}, form
        )
        assert status == 200 and b"https://chat.deepseek.com/chat" in page
        (just,) = events.of(ProxyJustification)
        assert just.client_ip == "127.0.0.1" and just.hooks == ["no-deepseek"]
        _, w, status, _ = await tunnel(node, "chat.deepseek.com:443", {"User-Agent": "curl/8.5"})
        w.close()
        assert status == 200  # the same address, justified: through for anyone from it
    finally:
        await engine.aclose()
        await asyncio.sleep(0)


def test_tokens_bind_user_host_hook_and_time() -> None:
    now = [1_000_000.0]
    tokens = FormTokens(b"s" * 32, clock=lambda: now[0])
    t = tokens.issue("alice", "chat.deepseek.com", "no-deepseek")
    assert tokens.valid(t, "alice", "CHAT.deepseek.com", "no-deepseek")
    assert not tokens.valid(t, "bob", "chat.deepseek.com", "no-deepseek")
    assert not tokens.valid(t, "alice", "other.deepseek.com", "no-deepseek")
    assert not tokens.valid(t, "alice", "chat.deepseek.com", "other-hook")
    assert not FormTokens(b"t" * 32, clock=lambda: now[0]).valid(
        t, "alice", "chat.deepseek.com", "no-deepseek"
    )
    now[0] += 901
    assert not tokens.valid(t, "alice", "chat.deepseek.com", "no-deepseek")
    assert not tokens.valid("garbage", "alice", "chat.deepseek.com", "no-deepseek")


async def test_justifications_expire_and_stay_per_user_and_host() -> None:
    now = [0.0]
    store = Justifications(clock=lambda: now[0])
    await store.add("alice", "Chat.DeepSeek.com", frozenset({"no-deepseek"}), 60)
    assert await store.excused("alice", "chat.deepseek.com") == {"no-deepseek"}
    assert await store.excused("bob", "chat.deepseek.com") == frozenset()
    assert await store.excused("alice", "api.deepseek.com") == frozenset()
    now[0] = 60
    assert await store.excused("alice", "chat.deepseek.com") == frozenset()


@pytest.mark.integration
async def test_a_justification_given_on_one_node_lets_through_on_another(
    make_proxy: MakeProxy,
    upstream: SimServer,
    proxy_ca: tuple[Path, Path],
    upstream_pki: Pki,
    valkey_url: str,
    valkey_prefix: str,
) -> None:
    import valkey.asyncio as avalkey

    client = avalkey.from_url(valkey_url)  # type: ignore[no-untyped-call]
    cfg = _config(proxy_ca, upstream_pki, upstream.port)
    engine = await build_engine(snapshot_from_config(cfg, SECRET), None, "nexus:", "px")
    try:
        shared = {"valkey": client, "valkey_prefix": valkey_prefix, "engine": engine}
        a = await make_proxy(config=cfg, node_id="px-a", **shared)
        b = await make_proxy(config=cfg, node_id="px-b", **shared)
        _, w, status, _ = await tunnel(b, "chat.deepseek.com:443", {"User-Agent": "curl/8.5"})
        w.close()
        assert status == 403
        status, page = await _exchange(a, proxy_ca[0], "GET", "/", {"Accept": "text/html"})
        token = page.split(b'name="token" value="', 1)[1].split(b'"', 1)[0].decode()
        form = f"token={token}&back=/&reason=Comparing+vendors+for+ticket+PROC-77".encode()
        status, _ = await _exchange(a, proxy_ca[0], "POST", JUSTIFY_PATH, {}, form)
        assert status == 200
        _, w, status, _ = await tunnel(b, "chat.deepseek.com:443", {"User-Agent": "curl/8.5"})
        w.close()
        assert status == 200  # node b knows what node a recorded
        keys = [k async for k in client.scan_iter(match=f"{valkey_prefix}proxy:justified:*")]
        assert len(keys) == 1 and 0 < await client.pttl(keys[0]) <= 3600 * 1000
    finally:
        await engine.aclose()
        for k in [k async for k in client.scan_iter(match=f"{valkey_prefix}*")]:
            await client.delete(k)
        await client.aclose()


@pytest.mark.parametrize(
    ("back", "safe"),
    [("/chat?x=1", "/chat?x=1"), ("//evil.example/", "/"), ("https://evil.example", "/"), ("/\\evil", "/")],
)
def test_the_back_link_stays_on_the_host(back: str, safe: str) -> None:
    assert _safe_back(back) == safe
