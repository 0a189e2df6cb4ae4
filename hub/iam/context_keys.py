"""The condition keys a policy may use, their types, and value conversion.

Every key has one type, so a policy that compares an IP key with a string
operator (or a typo'd key) is refused when it is written, not silently false
at evaluation.  Key names are case-insensitive (as in AWS IAM); values are not.
Multi-valued keys (a principal's groups and projects, a key's requested
models) take the ``ForAnyValue:`` / ``ForAllValues:`` qualifiers, and only
they do.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Final, Literal

KeyType = Literal["string", "numeric", "date", "bool", "ip"]
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddr = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class ContextKey:
    name: str
    type: KeyType
    multi: bool = False
    doc: str = ""


_KEYS: Final = (
    ContextKey("nexus:SourceIp", "ip", doc="the caller's IP address"),
    ContextKey("nexus:CurrentTime", "date", doc="when the request arrived (UTC)"),
    ContextKey("nexus:EpochTime", "numeric", doc="the same instant in seconds since 1970"),
    ContextKey("nexus:SecureTransport", "bool", doc="the request came over TLS"),
    ContextKey("nexus:MultiFactorAuthPresent", "bool", doc="the session was opened with a second factor"),
    ContextKey("nexus:MultiFactorAuthAge", "numeric", doc="seconds since the second factor"),
    ContextKey("nexus:UserAgent", "string"),
    ContextKey("nexus:RequestedRegion", "string", doc="the data region a change targets"),
    ContextKey("nexus:PrincipalNrn", "string", doc="derived from the request when absent"),
    ContextKey("nexus:PrincipalId", "string", doc="derived from the principal's NRN when absent"),
    ContextKey("nexus:PrincipalType", "string", doc="user or service; derived from the NRN when absent"),
    ContextKey("nexus:PrincipalOrgPath", "string", doc="derived from the principal's NRN when absent"),
    ContextKey("nexus:PrincipalGroups", "string", multi=True, doc="ids of the principal's groups"),
    ContextKey("nexus:PrincipalProjects", "string", multi=True, doc="ids of the principal's projects"),
    ContextKey("nexus:ResourceNrn", "string", doc="derived from the request when absent"),
    ContextKey("nexus:ResourceOrgPath", "string", doc="derived from the resource's NRN when absent"),
    ContextKey("nexus:ResourceType", "string", doc="derived from the resource's NRN when absent"),
    ContextKey("nexus:ResourceId", "string", doc="derived from the resource's NRN when absent"),
    ContextKey("nexus:ResourceOwner", "string", doc="the user id owning the resource (personal keys)"),
    ContextKey("nexus:ResourceProject", "string", doc="the project id the resource belongs to"),
    ContextKey("nexus:VirtualKeyType", "string", doc="personal or application"),
    ContextKey("nexus:RequestedModels", "string", multi=True, doc="models a key change asks for"),
)

CONTEXT_KEYS: Final[dict[str, ContextKey]] = {k.name.lower(): k for k in _KEYS}

# Families of keys with a caller-chosen suffix: nexus:ResourceTag/team
TAG_PREFIXES: Final = ("nexus:PrincipalTag/", "nexus:ResourceTag/", "nexus:RequestTag/")
_TAG_PREFIXES_LOWER: Final = tuple(p.lower() for p in TAG_PREFIXES)


def lookup_key(name: str) -> ContextKey | None:
    """The catalogue entry of a key, or None for an unknown key."""
    lowered = name.lower()
    found = CONTEXT_KEYS.get(lowered)
    if found is not None:
        return found
    for prefix, lower_prefix in zip(TAG_PREFIXES, _TAG_PREFIXES_LOWER, strict=True):
        if lowered.startswith(lower_prefix) and len(lowered) > len(lower_prefix):
            return ContextKey(prefix + name[len(prefix) :], "string")
    return None


# -- policy values (strict: a bad one is an error naming the field) ----------

PolicyScalar = str | int | float | bool


def policy_number(value: PolicyScalar) -> float | int:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, int | float):
        number: float | int = value
    else:
        try:
            number = int(value)
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"{value!r} is not a number") from None
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def policy_instant(value: PolicyScalar) -> datetime:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a date")
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    parsed = _iso(value)
    if parsed is None:
        raise ValueError(f"{value!r} is not an ISO 8601 date or epoch seconds")
    return parsed


def policy_bool(value: PolicyScalar) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"{value!r} is not true or false")


def policy_network(value: PolicyScalar) -> IpNetwork:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not an IP address or CIDR range")
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or CIDR range") from None


def policy_string(value: PolicyScalar) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    return value


# -- context values (lenient: a value that does not convert matches nothing) --


def _iso(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            parsed = datetime.combine(date.fromisoformat(text), datetime.min.time())
        except ValueError:
            return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def context_string(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return None


def context_number(value: object) -> float | int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value if not isinstance(value, float) or math.isfinite(value) else None
    if isinstance(value, str):
        try:
            return policy_number(value)
        except ValueError:
            return None
    return None


def context_instant(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        return _iso(value)
    return None


def context_bool(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def context_ip(value: object) -> IpAddr | None:
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value
    if isinstance(value, str):
        try:
            return ipaddress.ip_address(value)
        except ValueError:
            return None
    return None
