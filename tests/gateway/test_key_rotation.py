"""A rotated virtual key: the new key works, the old one works until its
grace period ends and never after (the Hub's ``/rotate``)."""

from __future__ import annotations

import datetime as dt

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from ingress.pipeline.errors import GatewayError
from ingress.pipeline.stages.authentication import authenticate
from streams.config import NexusConfig, Org, Project, VirtualKey
from streams.config_base import ConfigError
from streams.config_snapshot import ConfigSnapshot
from streams.config_validation import validate_config
from streams.keys import hash_key, new_key

SECRET = b"a-test-secret-of-enough-length"


def snapshot(*keys: VirtualKey) -> ConfigSnapshot:
    cfg = NexusConfig(orgs=(Org(id="acme"),), projects=(Project(id="web", org="acme"),), virtual_keys=keys)
    validate_config(cfg)
    return ConfigSnapshot(cfg, SECRET)


def bearer(key: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict({"Authorization": f"Bearer {key}"}))


def rotated(old: str, new: str, grace_end: dt.datetime, vid: str = "k1") -> VirtualKey:
    return VirtualKey(
        id=vid,
        hash=hash_key(new, SECRET),
        org="acme",
        project="web",
        previous_hash=hash_key(old, SECRET),
        previous_hash_expires_at=grace_end,
    )


def test_both_keys_work_during_the_grace_period() -> None:
    old, new = new_key(), new_key()
    snap = snapshot(rotated(old, new, dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)))
    assert authenticate(bearer(new), snap).id == "k1"
    assert authenticate(bearer(old), snap).id == "k1"


def test_the_old_key_is_refused_once_the_grace_period_is_over() -> None:
    old, new = new_key(), new_key()
    snap = snapshot(rotated(old, new, dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))
    assert authenticate(bearer(new), snap).id == "k1"
    with pytest.raises(GatewayError) as err:
        authenticate(bearer(old), snap)
    assert (err.value.status, err.value.code) == (401, "invalid_api_key")


def test_a_revoked_rotated_key_refuses_both() -> None:
    old, new = new_key(), new_key()
    key = rotated(old, new, dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5))
    from msgspec.structs import replace

    snap = snapshot(replace(key, status="revoked"))
    for k in (old, new):
        with pytest.raises(GatewayError) as err:
            authenticate(bearer(k), snap)
        assert err.value.code == "key_revoked"


def test_an_old_hash_never_shadows_another_keys_current_one() -> None:
    a, b = new_key(), new_key()
    # k2's previous hash is k1's current one (a pathological file): k1 wins.
    k1 = VirtualKey(id="k1", hash=hash_key(a, SECRET), org="acme", project="web")
    k2 = rotated(a, b, dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5), vid="k2")
    assert authenticate(bearer(a), snapshot(k1, k2)).id == "k1"


def test_previous_hash_and_its_end_go_together() -> None:
    key = VirtualKey(id="k1", hash="a" * 64, org="acme", project="web", previous_hash="b" * 64)
    with pytest.raises(ConfigError, match="previous_hash_expires_at"):
        snapshot(key)
