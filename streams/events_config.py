"""The CONFIG stream's events: every admin change the Hub accepted.

One event per command, on the subject of the aggregate it changes
(``Topology.config_subject(aggregate, id)``), published with
``Nats-Msg-Id`` = the command id (a retried command is stored once) and
``Nats-Expected-Last-Subject-Sequence`` = the version the change was decided
against (a concurrent edit of the same item is refused).  The Hub's state is
the fold of these events (``hub.evolve``); nothing else writes it.

Most aggregates are plain specs (an org, a provider, a routing rule...):
their events carry the whole new spec as JSON, typed by ``SPEC_TYPES`` and
decoded with :func:`decode_spec`.  Virtual keys and user passwords have
their own events because what they carry is not an admin-editable spec.

Evolution rules as for every event (streams/events.py): new fields get
defaults, nothing is reordered or retyped, unknown fields are tolerated.
"""

from __future__ import annotations

import typing
from typing import Any, Final

import msgspec

from streams.config import Auth, Gateway, Model, Org, Project, ProjectionsConfig, Provider
from streams.config_alerts import AlertsConfig
from streams.config_cache import CacheConfig
from streams.config_fleet import ThingSpec, ThingTemplate
from streams.config_hooks import HooksConfig, HookSpec
from streams.config_hub import (
    ApiTokenSpec,
    GroupSpec,
    IdentityProviderSpec,
    KeySpec,
    PolicySpec,
    PriceSpec,
    QuotaSpec,
    SigninSettings,
    UserSpec,
)
from streams.config_proxy import ProxyConfig
from streams.config_quota import QuotaConfig
from streams.config_routing import RoutingConfig
from streams.config_routing import Rule as RoutingRule
from streams.config_siem import AuditConfig, Sink
from streams.config_vault import CredentialSpec, KeyVersion, SealedSecret
from streams.events import now_ms, uuid7


class ConfigEvent(msgspec.Struct, kw_only=True, tag_field="type", omit_defaults=True):
    id: str = msgspec.field(default_factory=uuid7)
    v: int = 1
    occurred_at_ms: int = msgspec.field(default_factory=now_ms)
    command_id: str = ""
    request_id: str = ""
    # Who: a principal NRN, or system:<what> for the Hub's own commands
    # (system:bootstrap, system:import).
    actor: str = ""
    aggregate: str = ""  # org | project | user | ... (SPEC_TYPES' keys)
    aggregate_id: str = ""


class ResourceCreated(ConfigEvent, tag="resource.created"):
    spec: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"{}"))


class ResourceUpdated(ConfigEvent, tag="resource.updated"):
    """The whole new spec (not a diff): the fold never needs the old one."""

    spec: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"{}"))


class ResourceDeleted(ConfigEvent, tag="resource.deleted"):
    pass


class KeyIssued(ConfigEvent, tag="key.issued"):
    """A virtual key (or an admin API / SCIM token: aggregate ``api-token``)
    came to exist: its spec, the HMAC of the key (the key
    itself was shown once to whoever created it, and is nowhere), and the
    status it starts in (pending when it awaits approval)."""

    spec: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"{}"))
    hash: str = ""
    prefix: str = ""
    status: str = "active"


class KeyRotated(ConfigEvent, tag="key.rotated"):
    """A new key replaces the old one; the old hash keeps working until
    ``previous_hash_expires_at_ms`` (0: not at all)."""

    hash: str = ""
    prefix: str = ""
    previous_hash: str = ""
    previous_hash_expires_at_ms: int = 0


class KeyStatusChanged(ConfigEvent, tag="key.status_changed"):
    """approved (-> active), rejected, revoked; expired (the key-expiry job,
    once the key is past its expires_at)."""

    status: str = ""
    reason: str = ""


class PasswordSet(ConfigEvent, tag="user.password_set"):
    """A local user's password hash (scrypt, self-describing: parameters,
    salt and digest); never the password."""

    password_hash: str = ""


class CredentialStored(ConfigEvent, tag="credential.stored"):
    """A provider credential came to exist (aggregate ``credential``): its
    spec, and its secret sealed under a new data key (the wrapped data key
    is in the vault bucket under ``sealed.dek``; streams.vault).  Never the
    secret: its keyed fingerprint and, for a long one, its last four
    characters, so operators can tell secrets apart."""

    spec: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"{}"))
    sealed: SealedSecret | None = None
    fingerprint: str = ""
    last4: str = ""


class CredentialSecretReplaced(ConfigEvent, tag="credential.secret_replaced"):
    """A new secret for an existing credential, under a new data key (the
    previous data key is purged from the vault bucket once this is stored)."""

    sealed: SealedSecret | None = None
    fingerprint: str = ""
    last4: str = ""


class VaultKeyAdded(ConfigEvent, tag="vault.key_added"):
    """A key-encryption key version (aggregate ``vault-key``, id = the
    version): new data keys and rewraps use it from now on.  Its key is
    derived from the master key it names; the event carries only the
    check value."""

    key: KeyVersion | None = None


class VaultKeyRetired(ConfigEvent, tag="vault.key_retired"):
    """A key version is out of service: nothing wrapped by it is opened
    again, anywhere (fail closed)."""

    version: int = 0
    reason: str = ""


class ThingEnrolled(ConfigEvent, tag="thing.enrolled"):
    """A thing joined the fleet (aggregate ``thing``): its spec, and the
    sha256 of the token it speaks the sync protocol with ("" for a node
    inside the NATS trust boundary that registered itself by reporting);
    ``how``: admin | token | report."""

    spec: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"{}"))
    token_hash: str = ""
    how: str = "admin"


class ThingRevoked(ConfigEvent, tag="thing.revoked"):
    """The thing is out of the fleet for good: its token stops working and
    its sessions are closed."""

    reason: str = ""


class ThingOverrideSet(ConfigEvent, tag="thing.override_set"):
    """One of the thing's own config values (over its type's template)."""

    key: str = ""
    value: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"null"))
    reason: str = ""
    expires_at_ms: int = 0


class ThingOverrideCleared(ConfigEvent, tag="thing.override_cleared"):
    """The thing follows its template for ``key`` again (an admin's, or the
    override's expiry: actor system:expiry)."""

    key: str = ""
    reason: str = ""


AnyConfigEvent = (
    ResourceCreated
    | ResourceUpdated
    | ResourceDeleted
    | KeyIssued
    | KeyRotated
    | KeyStatusChanged
    | PasswordSet
    | CredentialStored
    | CredentialSecretReplaced
    | VaultKeyAdded
    | VaultKeyRetired
    | ThingEnrolled
    | ThingRevoked
    | ThingOverrideSet
    | ThingOverrideCleared
)

CONFIG_EVENT_TAGS: frozenset[str] = frozenset(
    str(t.__struct_config__.tag) for t in typing.get_args(AnyConfigEvent)
)


# --- the aggregates and their specs --------------------------------------------

# Sections of NexusConfig held whole as one ``settings`` aggregate each (id =
# the section name).  The sections whose lists are aggregates of their own
# (hooks.pipeline, quotas.budgets/rate_limits, routing.rules, siem.sinks) are
# held with those lists empty.  A section added to NexusConfig later (the
# proxy's) becomes a settings section by being listed here (a test checks
# that every section of NexusConfig is an aggregate or a settings section).
SETTINGS_SECTIONS: Final[dict[str, type[msgspec.Struct]]] = {
    "auth": Auth,
    "gateway": Gateway,
    "audit": AuditConfig,
    "projections": ProjectionsConfig,
    "cache": CacheConfig,
    "hooks": HooksConfig,
    "quotas": QuotaConfig,
    "routing": RoutingConfig,
    "proxy": ProxyConfig,
    "alerts": AlertsConfig,
}
# Settings sections only the Hub holds (never compiled into a node's
# snapshot, nor part of a config file): how people sign in.
HUB_SETTINGS_SECTIONS: Final[dict[str, type[msgspec.Struct]]] = {
    "signin": SigninSettings,
}
# The list fields each settings section must leave empty (their items are
# aggregates).
SETTINGS_LISTS: Final[dict[str, tuple[str, ...]]] = {
    "hooks": ("pipeline",),
    "quotas": ("budgets", "rate_limits"),
    "routing": ("rules",),
}

SPEC_TYPES: Final[dict[str, Any]] = {
    "org": Org,
    "project": Project,
    "user": UserSpec,
    "group": GroupSpec,
    "policy": PolicySpec,
    "virtual-key": KeySpec,
    "provider": Provider,
    "model": Model,
    "price": PriceSpec,
    "routing-rule": RoutingRule,
    "hook": HookSpec,
    "quota": QuotaSpec,
    "siem-sink": Sink,
    # Its secret is never part of the spec: it travels sealed in its own
    # events (credential.stored, credential.secret_replaced).
    "credential": CredentialSpec,
    # The fleet: a thing joins by enrolment (thing.enrolled), never as a
    # plain resource; templates are plain specs, one per thing type.
    "thing": ThingSpec,
    "thing-template": ThingTemplate,
    # Admin API and SCIM tokens: issued with key.issued (its hash, never the
    # token), revoked with key.status_changed.
    "api-token": ApiTokenSpec,
    # OpenID Connect providers, one org each (never a client secret)
    "identity-provider": IdentityProviderSpec,
}

_spec_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def spec_type(aggregate: str, aggregate_id: str = "") -> Any:
    """The spec type of an aggregate (a settings section's own type)."""
    if aggregate == "settings":
        return SETTINGS_SECTIONS.get(aggregate_id) or HUB_SETTINGS_SECTIONS[aggregate_id]
    return SPEC_TYPES[aggregate]


def decode_spec(aggregate: str, aggregate_id: str, raw: bytes | msgspec.Raw) -> Any:
    """The typed spec an event carries.  Raises KeyError for an aggregate
    this code does not know, msgspec.ValidationError for a bad spec."""
    t = spec_type(aggregate, aggregate_id)
    dec = _spec_decoders.get(t)
    if dec is None:
        dec = _spec_decoders[t] = msgspec.json.Decoder(t)
    return dec.decode(bytes(raw) if isinstance(raw, msgspec.Raw) else raw)


def encode_spec(spec: Any) -> msgspec.Raw:
    return msgspec.Raw(msgspec.json.encode(spec))


_decoder: msgspec.json.Decoder[AnyConfigEvent] = msgspec.json.Decoder(AnyConfigEvent)
_encoder = msgspec.json.Encoder()


class UnknownConfigEvent(msgspec.Struct):
    type: str = ""
    id: str = ""


_probe = msgspec.json.Decoder(UnknownConfigEvent)


def encode_event(event: ConfigEvent) -> bytes:
    return _encoder.encode(event)


def decode_event(data: bytes) -> AnyConfigEvent | UnknownConfigEvent:
    """One CONFIG event; a type this code does not know yields
    ``UnknownConfigEvent`` (a newer Hub wrote it) and the fold skips it.
    Raises msgspec.DecodeError / ValidationError for bytes that are not a
    well-formed event of a known type."""
    try:
        return _decoder.decode(data)
    except msgspec.ValidationError:
        probe = _probe.decode(data)
        if probe.type in CONFIG_EVENT_TAGS:
            raise
        return probe
