"""A real OpenID Connect provider for the tests: the npm package
``oidc-provider`` (pinned in tests/fixtures/oidc/package.json, installed by
scripts/install-test-deps) run by the machine's Node on a free loopback
port, with a config this module writes: static clients, signing keys the
test generated (so it can sign tokens of its own with the provider's real
key, or with another), and test accounts with a groups claim.

``drive`` plays the browser: it follows redirects by hand, posts the
provider's login and consent forms, and stops at the URL the provider sends
the browser back to (or follows it to the Hub's callback)."""

from __future__ import annotations

import asyncio
import html
import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import aiohttp
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.services import free_port

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "oidc"


def node_ready() -> str | None:
    """Why the provider cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not (FIXTURE / "node_modules" / "oidc-provider").is_dir():
        return "oidc-provider is not installed: run scripts/install-test-deps"
    return None


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any  # a cryptography private key
    private_jwk: dict[str, Any]
    public_jwk: dict[str, Any]


def make_key(kid: str, alg: str = "RS256") -> SigningKey:
    if alg.startswith("ES"):
        priv: Any = ec.generate_private_key(ec.SECP256R1())
        algo: Any = ECAlgorithm(ECAlgorithm.SHA256)
    else:
        priv = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        algo = RSAAlgorithm(RSAAlgorithm.SHA256)
    private_jwk = json.loads(algo.to_jwk(priv))
    public_jwk = json.loads(algo.to_jwk(priv.public_key()))
    for jwk in (private_jwk, public_jwk):
        jwk.update(kid=kid, use="sig", alg=alg)
    return SigningKey(kid, alg, priv, private_jwk, public_jwk)


@dataclass
class OidcProvider:
    workdir: Path
    clients: list[dict[str, Any]]
    accounts: dict[str, dict[str, Any]]
    keys: list[SigningKey]
    port: int = field(default_factory=free_port)
    id_token_ttl: int = 300
    proc: subprocess.Popen[bytes] | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.workdir / "oidc-provider.log"

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "oidc-provider.json"
        config.write_text(
            json.dumps(
                {
                    "issuer": self.issuer,
                    "port": self.port,
                    "clients": self.clients,
                    "jwks": {"keys": [k.private_jwk for k in self.keys]},
                    "accounts": self.accounts,
                    "idTokenTtl": self.id_token_ttl,
                }
            )
        )
        config.chmod(0o600)
        self.proc = subprocess.Popen(
            ["node", str(FIXTURE / "provider.mjs"), str(config)],
            cwd=FIXTURE,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as s:
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(f"oidc-provider exited:\n{self.log.read_text()[-3000:]}")
                try:
                    async with s.get(f"{self.issuer}/.well-known/openid-configuration") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"oidc-provider did not start:\n{self.log.read_text()[-3000:]}")
                await asyncio.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    async def restart(self, keys: list[SigningKey]) -> None:
        """The same issuer (same port) with another key set: a rotation."""
        self.stop()
        self.keys = keys
        await self.start()


_FORM = re.compile(r'<form[^>]*action="([^"]+)"[^>]*method="post"', re.I)
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', re.I)


def browser() -> aiohttp.ClientSession:
    # unsafe: keep cookies for IP-address hosts (127.0.0.1)
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def drive(
    session: aiohttp.ClientSession, url: str, *, account: str, stop_at: str
) -> tuple[str, aiohttp.ClientResponse | None]:
    """Follow ``url`` like a browser, signing in as ``account`` at the
    provider and consenting; returns the first URL starting with
    ``stop_at`` (not fetched)."""
    method, data = "GET", None
    for _ in range(20):
        async with session.request(method, url, data=data, allow_redirects=False) as resp:
            body = await resp.text()
            if resp.status in (301, 302, 303, 307):
                url = urljoin(url, resp.headers["Location"])
                method, data = "GET", None
                if url.startswith(stop_at):
                    return url, None
                continue
            if resp.status != 200:
                raise AssertionError(f"{method} {url}: {resp.status} {body[:500]}")
            form = _FORM.search(body)
            if form is None:
                raise AssertionError(f"no form at {url}: {body[:500]}")
            fields = {k: html.unescape(v) for k, v in _HIDDEN.findall(body)}
            if fields.get("prompt") == "login":
                fields.update(login=account, password="any")
            url, method, data = urljoin(url, html.unescape(form.group(1))), "POST", fields
    raise AssertionError("too many steps")
