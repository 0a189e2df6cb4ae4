"""From a stream message to the record a SIEM receives, and the per-sink
filter: pure functions, no I/O.

The record is the event as JSON (any type, including ones this forwarder
has never seen), with three things done to it: credentials are removed
(fields named like one, and anything shaped like a virtual key), bodies are
reduced to their digest unless the sink's policy includes them, and a
``nexus`` member says which stream position it came from.  The event ``id``
always travels, so receivers can deduplicate.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
from typing import Any

import msgspec

from streams import codec
from streams.config_siem import SinkFilter

_any = msgspec.json.Decoder()

# Field names that hold a credential.  Anchored so that "prompt_tokens" or
# "key_id" (an identifier, not a key) are kept.
_SECRET_NAME = re.compile(
    r"^(.*[_-])?(api[_-]?key|apikey|password|passwd|secret|token|authorization|cookie|set[_-]cookie"
    r"|private[_-]?key|credentials?|bearer)$",
    re.IGNORECASE,
)
# A virtual key anywhere in a string value (a user agent, a reason): never
# let one leave, whatever field it hides in.
_VIRTUAL_KEY = re.compile(r"nvk_[0-9a-fA-F]{16,}")
# Provider keys that commonly leak into error strings.
_PROVIDER_KEY = re.compile(r"\b(sk-[A-Za-z0-9_-]{16,}|sk-ant-[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16})\b")
REDACTED = "[redacted]"


class Undecodable(ValueError):
    """The message is not a JSON object with an id and a type."""


def _is_body(value: Any) -> bool:  # a dict shaped like streams.events.Body
    return isinstance(value, dict) and ("inline" in value or "ref" in value) and "size" in value


def _scrub_str(value: str) -> str:
    # Substring checks first: the regexes run only on candidate strings.
    if "nvk_" in value:
        value = _VIRTUAL_KEY.sub(REDACTED, value)
    if "sk-" in value or "AKIA" in value:
        value = _PROVIDER_KEY.sub(REDACTED, value)
    return value


@functools.lru_cache(maxsize=4096)
def _secret_name(name: str) -> bool:
    return _SECRET_NAME.match(name) is not None


def _clean(value: Any, include_bodies: bool) -> Any:
    if isinstance(value, str):
        return _scrub_str(value)
    if isinstance(value, list):
        return [_clean(v, include_bodies) for v in value]
    if not isinstance(value, dict):
        return value
    if _is_body(value):
        out = {k: v for k, v in value.items() if k != "inline"}
        inline = value.get("inline")
        if isinstance(inline, str):
            try:
                data = base64.b64decode(inline, validate=True)
            except (binascii.Error, ValueError):
                data = inline.encode()
            out["sha256"] = hashlib.sha256(data).hexdigest()
            if include_bodies:
                out["inline"] = inline
        return out
    return {k: _clean(v, include_bodies) for k, v in value.items() if not _secret_name(k)}


def _full(event: msgspec.Struct) -> dict[str, Any]:
    # Events are encoded with omit_defaults; a SIEM record states every
    # field (a 200 status, an "approve" verdict) so receivers can filter.
    out: dict[str, Any] = {"type": type(event).__struct_config__.tag}
    for name in event.__struct_fields__:
        out[name] = msgspec.to_builtins(getattr(event, name))
    return out


def to_record(raw: bytes, *, stream: str, seq: int, include_bodies: bool) -> dict[str, Any]:
    event: Any
    try:
        typed = codec.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        typed = None
    if typed is not None and not isinstance(typed, codec.UnknownEvent):
        event = _full(typed)
    else:
        # A type this forwarder does not know (a newer producer's): forward
        # it as it came.
        try:
            event = _any.decode(raw)
        except msgspec.DecodeError:
            raise Undecodable("not JSON") from None
        except UnicodeDecodeError:
            raise Undecodable("not UTF-8") from None
        except RecursionError:
            raise Undecodable("nested too deeply") from None
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not event.get("type"):
        raise Undecodable("not an event (no id or type)")
    record: dict[str, Any] = _clean(event, include_bodies)
    record["nexus"] = {"stream": stream, "seq": seq}
    return record


def _status_matches(status: Any, wanted: tuple[str, ...]) -> bool:
    if not isinstance(status, int) or isinstance(status, bool):
        return False
    text = str(status)
    return any(w == text or (w.endswith("xx") and w[0] == text[0] and len(text) == 3) for w in wanted)


def _type_matches(event_type: str, wanted: tuple[str, ...]) -> bool:
    return any(event_type == w or (w.endswith("*") and event_type.startswith(w[:-1])) for w in wanted)


def verdict_of(record: dict[str, Any]) -> str:
    """The compliance outcome an event carries: a hook verdict, a stage
    decision, or "" for events that carry none."""
    for field in ("verdict", "decision", "effective"):
        v = record.get(field)
        if isinstance(v, str) and v:
            return v
    return ""


def matches(f: SinkFilter, record: dict[str, Any]) -> bool:
    if f.event_types and not _type_matches(str(record.get("type", "")), f.event_types):
        return False
    if f.statuses and not _status_matches(record.get("status"), f.statuses):
        return False
    if f.verdicts and verdict_of(record) not in f.verdicts:
        return False
    if f.orgs:
        tenant = record.get("tenant")
        org = tenant.get("org_id", "") if isinstance(tenant, dict) else ""
        if org not in f.orgs:
            return False
    return True


def severity(record: dict[str, Any]) -> int:
    """RFC 5424 severity: 3 error, 4 warning, 5 notice, 6 informational."""
    event_type = str(record.get("type", ""))
    status = record.get("status")
    if event_type == "request.failed":
        return 3 if isinstance(status, int) and status >= 500 else 4
    verdict = verdict_of(record)
    if verdict == "block":
        return 4
    if verdict in ("redact", "error", "timeout"):
        return 5
    if event_type.startswith("quota."):
        return 4
    return 6
