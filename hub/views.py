"""What an item looks like from outside the Hub: the admin API's answer and
the Postgres read model's row.  One function for both, so the API and the
read model can never show different things.

Secrets stay inside: a key's hashes and a user's password hash are never
part of a view (a key shows its prefix and status; a user whether it has a
password).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Generic, TypeVar

import msgspec

from hub.state import CREDENTIAL, KEY, THING, USER, Resource

_WITH_KEY = (KEY, "api-token")  # virtual keys, admin API and SCIM tokens

T = TypeVar("T")


class KeyState(msgspec.Struct, frozen=True, kw_only=True):
    # pending | active | expired | rejected | revoked (expired: the spec's
    # expires_at has passed; nodes refuse it by the same rule)
    status: str
    prefix: str
    previous_key_valid_until: dt.datetime | None = None
    status_reason: str = ""
    status_by: str = ""
    status_at: dt.datetime | None = None


class SecretState(msgspec.Struct, frozen=True, kw_only=True):
    """What is shown of a credential's secret: never the secret, nor its
    ciphertext; a keyed fingerprint to tell two secrets apart, and the
    last four characters of a long one."""

    fingerprint: str
    last4: str = ""
    set_at: dt.datetime
    set_by: str


class OverrideState(msgspec.Struct, frozen=True, kw_only=True):
    value: Any
    reason: str
    set_by: str
    set_at: dt.datetime
    expires_at: dt.datetime | None = None


class ThingState(msgspec.Struct, frozen=True, kw_only=True):
    """A thing's standing as the CONFIG stream has it (active or revoked;
    online, offline and drift come from its reports: the shadow), how it
    joined and its own config overrides.  Never its token's hash."""

    standing: str  # active | revoked
    enrolled_how: str
    overrides: dict[str, OverrideState] = {}
    status_reason: str = ""
    status_by: str = ""
    status_at: dt.datetime | None = None


class Item(msgspec.Struct, Generic[T], frozen=True, kw_only=True):
    id: str
    version: int  # also the ETag: send it back in If-Match to edit
    created_at: dt.datetime
    updated_at: dt.datetime
    created_by: str
    updated_by: str
    spec: T
    key: KeyState | None = None  # virtual keys and tokens
    has_password: bool | None = None  # users
    secret: SecretState | None = None  # credentials
    thing: ThingState | None = None  # things


def _t(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def key_status(res: Resource, now_ms: int | None) -> str:
    assert res.key is not None
    status = res.key.status
    expires = getattr(res.spec, "expires_at", None)
    if (
        status == "active"
        and expires is not None
        and now_ms is not None
        and expires.timestamp() * 1000 <= now_ms
    ):
        return "expired"
    return status


def view(res: Resource, *, now_ms: int | None = None) -> Item[Any]:
    """The item as shown.  ``now_ms`` turns an active key past its expiry
    into ``expired`` (the read model, written without a clock, keeps the
    stored status: a replay must write what the live writer wrote)."""
    key = None
    if res.aggregate in _WITH_KEY and res.key is not None:
        m = res.key
        key = KeyState(
            status=key_status(res, now_ms),
            prefix=m.prefix,
            previous_key_valid_until=_t(m.previous_hash_expires_at_ms) if m.previous_hash else None,
            status_reason=m.status_reason,
            status_by=m.status_by,
            status_at=_t(m.status_at_ms) if m.status_at_ms else None,
        )
    return Item(
        id=res.id,
        version=res.version,
        created_at=_t(res.created_at_ms),
        updated_at=_t(res.updated_at_ms),
        created_by=res.created_by,
        updated_by=res.updated_by,
        spec=res.spec,
        key=key,
        has_password=bool(res.password_hash) if res.aggregate == USER else None,
        secret=_secret_state(res) if res.aggregate == CREDENTIAL else None,
        thing=_thing_state(res) if res.aggregate == THING else None,
    )


def _thing_state(res: Resource) -> ThingState | None:
    t = res.thing
    if t is None:
        return None
    return ThingState(
        standing=t.status,
        enrolled_how=t.how,
        overrides={
            k: OverrideState(
                value=o.value,
                reason=o.reason,
                set_by=o.set_by,
                set_at=_t(o.set_at_ms),
                expires_at=_t(o.expires_at_ms) if o.expires_at_ms else None,
            )
            for k, o in sorted(t.overrides.items())
        },
        status_reason=t.status_reason,
        status_by=t.status_by,
        status_at=_t(t.status_at_ms) if t.status_at_ms else None,
    )


def _secret_state(res: Resource) -> SecretState | None:
    s = res.secret
    if s is None:
        return None
    return SecretState(fingerprint=s.fingerprint, last4=s.last4, set_at=_t(s.set_at_ms), set_by=s.set_by)


def owning_org(res: Resource) -> str:
    """The org an item belongs to ("" for global items)."""
    if res.aggregate == "org":
        return res.id
    if res.aggregate == "quota":
        return res.spec.match.org or ""
    org = getattr(res.spec, "org", "")
    return org if isinstance(org, str) else ""
