"""First start: the secrets nexus up generates (0600, once) and the first
admin (a random one-time password, created only on a Hub without users)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from nexus.up import ensure_key_secret
from tests.hub.conftest import ADMIN_EMAIL, RunningHub, sign_in


def test_a_missing_key_secret_is_generated_once_into_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "nexus.yaml"
    cfg.write_text("version: 1\nauth:\n  secret_env: TEST_HUB_KEY_SECRET\n")
    monkeypatch.delenv("TEST_HUB_KEY_SECRET", raising=False)
    ensure_key_secret(cfg, tmp_path / "data")
    first = os.environ["TEST_HUB_KEY_SECRET"]
    path = tmp_path / "data" / "secrets" / "key-hmac-secret"
    assert path.read_text().strip() == first and len(first) >= 48
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    monkeypatch.delenv("TEST_HUB_KEY_SECRET")
    ensure_key_secret(cfg, tmp_path / "data")
    assert os.environ["TEST_HUB_KEY_SECRET"] == first  # the same one on the next start
    # A secret given in the environment (or the file) is left alone.
    monkeypatch.setenv("TEST_HUB_KEY_SECRET", "given-by-the-operator-0123456789")
    ensure_key_secret(cfg, tmp_path / "other")
    assert not (tmp_path / "other" / "secrets").exists()


@pytest.mark.integration
async def test_the_first_admin_is_made_once_with_a_random_password(hub: RunningHub) -> None:
    assert len(hub.admin_password) >= 20
    assert await hub.server.bootstrap_admin("someone-else@example.com") is None
    user = hub.control.state.get("user", "admin")
    assert user is not None and user.spec.email == ADMIN_EMAIL
    assert user.password_hash.startswith("scrypt$") and hub.admin_password not in user.password_hash
    client = await sign_in(hub.url, ADMIN_EMAIL, hub.admin_password)
    await client.close()
