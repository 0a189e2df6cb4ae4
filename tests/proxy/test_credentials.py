"""Provider keys in bumped traffic (item 4): recorded only as an HMAC
fingerprint, classified ``corporate`` when the organisation holds the key
(a configured provider's environment variable, or a credential sealed in
the Hub's vault, recognised by the keyed fingerprint recorded when it was
sealed, with the master keys this node holds) and ``unknown`` otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import openai
import pytest

from ingress.http1 import Headers
from ingress.proxy.credentials import ConfigCredentials, fingerprint
from nexus.sim.server import SimServer
from streams.config import NexusConfig
from streams.config_vault import VaultCredential
from streams.events import RequestReceived
from streams.vault.envelope import Binding, seal
from streams.vault.keyring import Keyring, new_version
from streams.vault.master import MasterKeys, new_master_key, parse_master_keys
from tests.proxy.conftest import FAKE_HOSTS, SECRET, Events, MakeProxy
from tests.proxy.pki import Pki

VAULT_KEY = "sk-corp-sealed-in-the-vault-0001"
ENV_KEY = "sk-corp-from-the-environment-0002"


def _vault(secret: str, masters: MasterKeys) -> tuple[dict[str, Any], str]:
    """A vault section as the Hub compiles it: one key version, one sealed
    credential for the provider corp-openai, with its keyed fingerprint."""
    version = new_version(masters, [])
    keyring = Keyring(masters, [version])
    sealed, _ = seal(secret, Binding("vault-oai", "corp-openai"), keyring, now_ms=1)
    fp = keyring.fingerprint(secret)
    section = {
        "keys": [msgspec.to_builtins(version)],
        "credentials": [
            {
                "id": "vault-oai",
                "provider": "corp-openai",
                "sealed": msgspec.to_builtins(sealed),
                "fingerprint": fp,
            }
        ],
    }
    return section, fp


def _config(proxy_ca: tuple[Path, Path], upstream_pki: Pki, port: int, vault: dict[str, Any]) -> NexusConfig:
    raw = {
        "proxy": {
            "tls": {
                "cas": [{"cert_file": str(proxy_ca[0]), "key_file": str(proxy_ca[1])}],
                "upstream_ca_files": [str(upstream_pki.ca_path)],
            },
            "resolve": {f"{h}:443": f"127.0.0.1:{port}" for h in FAKE_HOSTS},
            "interception": [{"host": "api.openai.com", "adapter": "openai"}],
        },
        "providers": [
            {
                "name": "corp-openai",
                "kind": "openai",
                "base_url": "https://api.openai.com/v1",
                "credential": "vault-oai",
            },
            {
                "name": "corp-openai-env",
                "kind": "openai",
                "base_url": "https://api.openai.com/v1",
                "api_key_env": "CORP_OPENAI_KEY",
            },
        ],
        "vault": vault,
    }
    return msgspec.convert(raw, NexusConfig)


@pytest.mark.parametrize("with_masters", [True, False])
async def test_sdk_keys_are_classified_corporate_or_unknown(
    make_proxy: MakeProxy,
    upstream: SimServer,
    proxy_ca: tuple[Path, Path],
    upstream_pki: Pki,
    monkeypatch: pytest.MonkeyPatch,
    with_masters: bool,
) -> None:
    masters = parse_master_keys(new_master_key(), "test")
    vault, _ = _vault(VAULT_KEY, masters)
    events = Events()
    node = await make_proxy(
        config=_config(proxy_ca, upstream_pki, upstream.port, vault),
        events=events,
        env={"CORP_OPENAI_KEY": ENV_KEY},
        masters=masters if with_masters else None,
    )
    monkeypatch.setenv("HTTPS_PROXY", f"http://{node.host}:{node.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(proxy_ca[0]))
    for key in (VAULT_KEY, ENV_KEY, "sk-somebody-personal-0003"):
        client = openai.AsyncOpenAI(api_key=key, max_retries=0)
        try:
            await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
        finally:
            await client.close()
    marks = [r.interception for r in events.of(RequestReceived)]
    assert all(m is not None for m in marks)
    classes = [m.credential_class for m in marks if m is not None]
    # Without the master keys a vault credential cannot be recognised.
    assert classes == ["corporate" if with_masters else "unknown", "corporate", "unknown"]
    fps = [m.credential_fingerprint for m in marks if m is not None]
    assert fps == [fingerprint(SECRET, k) for k in (VAULT_KEY, ENV_KEY, "sk-somebody-personal-0003")]
    text = repr(events.items)
    assert VAULT_KEY not in text and ENV_KEY not in text


def test_a_rotated_master_key_still_recognises_what_the_old_one_sealed() -> None:
    old = parse_master_keys("m1:" + new_master_key(), "old")
    _, fp = _vault(VAULT_KEY, old)
    both = parse_master_keys(f"m1:{old.keys[0][1].hex()},m2:{new_master_key()}", "both")
    cred = msgspec.convert(
        {
            "id": "v",
            "provider": "p",
            "sealed": {"dek": "0" * 32, "nonce": "", "ciphertext": ""},
            "fingerprint": fp,
        },
        VaultCredential,
    )
    keys = ConfigCredentials(SECRET, [], {}, vault=[cred], masters=both)
    assert keys.inspect(Headers([("Authorization", f"Bearer {VAULT_KEY}")]))[1] == "corporate"
    assert keys.inspect(Headers([("x-api-key", "sk-other")]))[1] == "unknown"
    assert keys.inspect(Headers([("Authorization", "Bearer nvk_" + "a" * 64)]))[1] == "nexus"
    assert keys.inspect(Headers()) == ("", "")
    elsewhere = ConfigCredentials(
        SECRET, [], {}, vault=[cred], masters=parse_master_keys(new_master_key(), "x")
    )
    assert elsewhere.inspect(Headers([("x-api-key", VAULT_KEY)]))[1] == "unknown"


def test_a_key_in_the_query_string_counts_when_no_header_carries_one() -> None:
    keys = ConfigCredentials(SECRET, [], {})
    fp, cls = keys.inspect(Headers(), "alt=sse&key=AIza%2Dmine")
    assert (fp, cls) == (keys.inspect(Headers([("x-goog-api-key", "AIza-mine")]))[0], "unknown") and fp
    # A header key wins; a query without one is no credential.
    assert keys.inspect(Headers([("x-api-key", "sk-other")]), "key=AIza-mine") == keys.inspect(
        Headers([("x-api-key", "sk-other")])
    )
    assert keys.inspect(Headers(), "alt=sse&keys=x") == ("", "")
