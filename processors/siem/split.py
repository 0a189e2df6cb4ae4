"""Fitting a record into a sink's maximum message size, as a pure function.

A receiver cuts what is longer than its limit (rsyslog: 8 KiB by default);
the JSON arrives broken and, octet-counted, the rest is read as bogus
messages.  So a record that renders too long is

1. split on its largest list (a verdict's findings, a stage's tags): parts
   that each carry the event's id and type and a slice of the list, marked
   ``nexus.part = {"index": i, "count": n, "field": name}`` (receivers that
   deduplicate by id keep every (id, part)); then
2. any part still too long (a long string: a body, a reason) has its
   longest strings shortened, the paths named in ``nexus.truncated``.

Every message that leaves is at most ``limit`` bytes and renders like any
other: it parses as RFC 5424 and as JSON or CEF.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import msgspec

Record = dict[str, Any]
Render = Callable[[Record], bytes]

_json = msgspec.json.Encoder()
# A string is never cut below this many characters; past that the record
# is reduced to what identifies it.
_MIN_STRING = 32
_ELLIPSIS = "…"


def fit(record: Record, render: Render, limit: int) -> list[bytes]:
    """The messages ``record`` becomes, each at most ``limit`` bytes."""
    message = render(record)
    if len(message) <= limit:
        return [message]
    parts = _split(record, render, limit)
    out: list[bytes] = []
    for part in parts:
        message = render(part)
        if len(message) > limit:
            message = render(_shorten(part, render, limit))
        out.append(message)
    return out


def _nexus(record: Record) -> dict[str, Any]:
    meta = record.get("nexus")
    if not isinstance(meta, dict):
        meta = record["nexus"] = {}
    return meta


def _largest_list(record: Record) -> str | None:
    best, size = None, 0
    for key, value in record.items():
        if isinstance(value, list) and len(value) > 1:
            n = len(_json.encode(value))
            if n > size:
                best, size = key, n
    return best


def _split(record: Record, render: Render, limit: int) -> list[Record]:
    field = _largest_list(record)
    if field is None:
        return [record]
    items: list[Any] = record[field]
    base = dict(record)
    base[field] = []
    if len(render(base)) >= limit:  # the list is not what makes it long (or not rendered at all)
        return [record]
    chunks: list[list[Any]] = []

    def place(chunk: list[Any]) -> None:
        candidate = dict(base)
        candidate[field] = chunk
        if len(chunk) == 1 or len(render(candidate)) <= limit:
            chunks.append(chunk)
            return
        mid = len(chunk) // 2
        place(chunk[:mid])
        place(chunk[mid:])

    place(items)
    # Halving leaves some parts far from full: merge neighbours that fit.
    merged: list[list[Any]] = []
    for chunk in chunks:
        if merged:
            candidate = dict(base)
            candidate[field] = merged[-1] + chunk
            if len(render(candidate)) <= limit:
                merged[-1] = merged[-1] + chunk
                continue
        merged.append(chunk)
    parts = []
    for i, chunk in enumerate(merged):
        part = copy.deepcopy(base)
        part[field] = chunk
        _nexus(part)["part"] = {"index": i, "count": len(merged), "field": field}
        parts.append(part)
    return parts


def _strings(value: Any, path: str) -> list[tuple[int, str, Any, Any]]:
    """(length, path, container, key) of every string inside ``value``."""
    found: list[tuple[int, str, Any, Any]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            p = f"{path}.{k}" if path else str(k)
            if isinstance(v, str):
                found.append((len(v), p, value, k))
            else:
                found.extend(_strings(v, p))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            p = f"{path}[{i}]"
            if isinstance(v, str):
                found.append((len(v), p, value, i))
            else:
                found.extend(_strings(v, p))
    return found


def _shorten(record: Record, render: Render, limit: int) -> Record:
    record = copy.deepcopy(record)
    cut: list[str] = []
    for _ in range(64):
        over = len(render(record)) - limit
        if over <= 0:
            return record
        strings = [s for s in _strings(record, "") if s[1] not in ("id", "type") and s[0] > _MIN_STRING]
        if not strings:
            break
        length, path, container, key = max(strings, key=lambda s: s[0])
        # Cut what is over (plus room for the marker and escapes), at least
        # a quarter, never below the minimum.
        keep = max(_MIN_STRING, min(length - over - 64, length * 3 // 4))
        container[key] = container[key][:keep] + _ELLIPSIS
        if path not in cut:
            cut.append(path)
        _nexus(record)["truncated"] = cut
    # Still too long (thousands of fields): what identifies it, and why.
    found = record.get("nexus")
    meta: dict[str, Any] = found if isinstance(found, dict) else {}
    return {
        "id": record.get("id", ""),
        "type": record.get("type", ""),
        "nexus": {**meta, "truncated": ["*"], "reason": f"over the sink's {limit}-byte message limit"},
    }
