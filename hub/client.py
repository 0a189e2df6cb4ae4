"""A small client of the admin API, for ``nexus admin`` and ``nexus hub
import/export``: the same API and the same IAM as any other caller.

The session (Hub URL and bearer token) lives in ``<NEXUS_HOME>/admin-session.json``
(0600), written by ``nexus admin login``; ``NEXUS_HUB_URL`` and
``NEXUS_HUB_TOKEN`` override it (scripts, CI).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from streams.settings import load_settings

DEFAULT_URL = "http://127.0.0.1:3060"


class HubError(Exception):
    """The Hub answered with an error (its code and message), or could not be reached."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return f"{self.message} ({self.code}, HTTP {self.status})" if self.status else self.message


class Session(msgspec.Struct):
    url: str
    token: str
    email: str = ""


def home() -> Path:
    return load_settings().home_path


def session_path() -> Path:
    return home() / "admin-session.json"


def load_session() -> Session | None:
    try:
        data = session_path().read_bytes()
    except FileNotFoundError:
        return None
    try:
        return msgspec.json.decode(data, type=Session)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


def save_session(session: Session) -> Path:
    path = session_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".admin-session-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(msgspec.json.encode(session))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def forget_session() -> None:
    with contextlib.suppress(FileNotFoundError):
        session_path().unlink()


def resolve(url: str | None = None) -> tuple[str, str]:
    """(url, token) from the flags, the settings (NEXUS_HUB_URL,
    NEXUS_HUB_TOKEN), then the session file."""
    saved = load_session()
    settings = load_settings()
    base = url or settings.hub_url or (saved.url if saved else "") or DEFAULT_URL
    token = settings.hub_token or (saved.token if saved and saved.url == base else "")
    return base.rstrip("/"), token


class HubClient:
    def __init__(self, url: str, token: str = "") -> None:
        self.url = url.rstrip("/")
        self.token = token
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HubClient:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        assert self._session is not None, "use: async with HubClient(...) as c"
        h = {"Content-Type": content_type, "X-Requested-With": "nexus-cli"}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        h.update(headers or {})
        data = raw if raw is not None else (msgspec.json.encode(body) if body is not None else None)
        try:
            async with self._session.request(method, self.url + path, data=data, headers=h) as resp:
                payload = await resp.read()
                ctype = resp.headers.get("Content-Type", "")
                status = resp.status
        except aiohttp.ClientError as exc:
            raise HubError(0, "unreachable", f"cannot reach the Hub at {self.url}: {exc}") from None
        if status >= 400:
            try:
                err = msgspec.json.decode(payload)["error"]
                raise HubError(status, err.get("code", ""), err.get("message", ""), err.get("field"))
            except (msgspec.DecodeError, KeyError, TypeError):
                raise HubError(status, f"http_{status}", payload[:200].decode(errors="replace")) from None
        if not payload:
            return None
        if "json" in ctype:
            return msgspec.json.decode(payload)
        return payload.decode()

    async def get(self, path: str) -> Any:
        return await self.request("GET", path)

    async def post(self, path: str, body: Any = None) -> Any:
        return await self.request("POST", path, body if body is not None else {})

    async def put(self, path: str, body: Any) -> Any:
        return await self.request("PUT", path, body)

    async def patch(self, path: str, body: Any) -> Any:
        return await self.request("PATCH", path, body, content_type="application/merge-patch+json")

    async def delete(self, path: str) -> Any:
        return await self.request("DELETE", path)

    async def login(self, email: str, password: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.post(
            "/api/admin/auth/login", {"email": email, "password": password}
        )
        self.token = result["token"]
        return result
