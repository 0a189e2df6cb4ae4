"""The config file: strict, cross-checked, and turned into one snapshot."""

from __future__ import annotations

from importlib import resources

import pytest

from streams.config_base import ConfigError
from streams.config_snapshot import load_snapshot
from streams.config_validation import parse_config
from streams.keys import hash_key, is_well_formed, new_key

DEMO_KEY = "nvk_ebb5cfb0b7432f688ccfefffa828d8f98b8d20dbabf18acfd8666afdf0b46f7b"

BASE = """
orgs: [{id: o1}]
projects: [{id: p1, org: o1}]
providers: [{name: up, base_url: "https://api.example.com/v1"}]
models: [{name: m1, provider: up, provider_model: real-m1}]
virtual_keys: [{id: k1, hash: "%s", org: o1, project: p1, allowed_models: [m1]}]
""" % ("a" * 64)


def test_demo_config_loads_and_its_key_matches() -> None:
    path = resources.files("nexus.demo") / "config.yaml"
    snap = load_snapshot(str(path), env={})
    assert is_well_formed(DEMO_KEY)
    key = snap.keys_by_hash[hash_key(DEMO_KEY, snap.hmac_secret)]
    assert (key.org, key.project) == ("demo-org", "demo-project")
    assert snap.models["gpt-4o-mini"].provider == "sim"


def test_snapshot_is_immutable_and_versioned() -> None:
    cfg = parse_config(BASE)
    from streams.config_snapshot import ConfigSnapshot

    a = ConfigSnapshot(cfg, b"x" * 20)
    b = ConfigSnapshot(parse_config(BASE.replace("real-m1", "real-m2")), b"x" * 20)
    assert a.version != b.version
    with pytest.raises(AttributeError):
        a.models = {}  # type: ignore[misc]


@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        pytest.param(BASE + "\nbogus: 1\n", "unknown field `bogus`", id="unknown-top-level-key"),
        pytest.param(
            BASE.replace("{id: o1}", "{id: o1, colour: red}"),
            "unknown field `colour`",
            id="unknown-nested-key",
        ),
        pytest.param(
            BASE.replace("org: o1}]\nproviders", "org: nope}]\nproviders"),
            "projects[0].org",
            id="unknown-org",
        ),
        pytest.param(
            BASE.replace("provider: up,", "provider: nope,"), "models[0].provider", id="unknown-provider"
        ),
        pytest.param(
            BASE.replace("allowed_models: [m1]", "allowed_models: [zz]"),
            "allowed_models",
            id="unknown-allowed-model",
        ),
        pytest.param(
            BASE.replace('"' + "a" * 64 + '"', "plaintext"), "virtual_keys[0].hash", id="key-not-hashed"
        ),
        pytest.param(
            BASE.replace("https://api.example.com/v1", "http://127.0.0.1:9/v1"),
            "providers[0].base_url",
            id="ssrf-loopback",
        ),
        pytest.param(
            BASE.replace("https://api.example.com/v1", "http://169.254.169.254/latest"),
            "non-public",
            id="ssrf-metadata",
        ),
        pytest.param(
            BASE.replace("https://api.example.com/v1", "http://10.0.0.5/v1"), "non-public", id="ssrf-private"
        ),
        pytest.param(
            BASE.replace("https://api.example.com/v1", "file:///etc/passwd"), "http or https", id="bad-scheme"
        ),
        pytest.param(
            BASE.replace("{id: o1}", "{id: o1, timezone: Mars/Base}"), "orgs[0].timezone", id="bad-timezone"
        ),
        pytest.param("orgs: [", "not valid YAML", id="bad-yaml"),
    ],
)
def test_bad_config_is_rejected_naming_the_field(mutation: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(mutation)
    assert message in str(err.value)


def test_private_provider_allowed_when_declared() -> None:
    text = BASE.replace(
        'base_url: "https://api.example.com/v1"',
        'base_url: "http://127.0.0.1:9/v1", allow_private_network: true',
    )
    assert parse_config(text).providers[0].allow_private_network


def test_secret_from_environment_wins_and_is_required(tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "c.yaml"
    p.write_text(BASE)
    with pytest.raises(ConfigError, match="NEXUS_KEY_HMAC_SECRET"):
        load_snapshot(p, env={})
    snap = load_snapshot(p, env={"NEXUS_KEY_HMAC_SECRET": "s" * 32})
    assert snap.hmac_secret == b"s" * 32
    assert is_well_formed(new_key())
