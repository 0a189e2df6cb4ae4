"""Keyset pagination over the Hub's state: items in id order, a page of
``limit`` after the cursor (the last id of the previous page, opaque to
the caller), filters applied before the page is cut.  One pass over a
sorted index, never an offset scan."""

from __future__ import annotations

import base64
import binascii
import bisect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

import msgspec

from hub.api.errors import ApiError
from hub.state import HubState, Resource

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


class Page(msgspec.Struct, Generic[T], kw_only=True):
    items: list[T]
    # Pass as ?after= to get the next page; null on the last one.
    next: str | None = None


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ApiError("invalid_query", "after: not a cursor this API returned", field="after") from None


def limit_of(raw: str) -> int:
    if not raw:
        return DEFAULT_LIMIT
    try:
        n = int(raw)
    except ValueError:
        raise ApiError("invalid_query", "limit: a number from 1 to 500", field="limit") from None
    if not 1 <= n <= MAX_LIMIT:
        raise ApiError("invalid_query", "limit: a number from 1 to 500", field="limit")
    return n


class _Index:
    """Sorted ids of one aggregate, rebuilt only when it changed (the state
    shares an unchanged aggregate's dict between versions)."""

    def __init__(self) -> None:
        # The table itself is kept (not its id()): a freed dict's address
        # can be reused by a newer one.
        self._cache: dict[str, tuple[Mapping[str, Resource], list[str]]] = {}

    def ids(self, state: HubState, aggregate: str) -> list[str]:
        table = state.items.get(aggregate, {})
        hit = self._cache.get(aggregate)
        if hit is not None and hit[0] is table:
            return hit[1]
        ids = sorted(table)
        self._cache[aggregate] = (table, ids)
        return ids


_index = _Index()


def page(
    state: HubState,
    aggregate: str,
    *,
    after: str,
    limit: int,
    keep: Callable[[Resource], bool],
    show: Callable[[Resource], Any],
) -> Page[Any]:
    ids = _index.ids(state, aggregate)
    start = bisect.bisect_right(ids, decode_cursor(after)) if after else 0
    items: list[Any] = []
    last = ""
    for rid in _iter(ids, start):
        res = state.get(aggregate, rid)
        if res is None or not keep(res):
            continue
        if len(items) == limit:
            return Page(items=items, next=encode_cursor(last))
        items.append(show(res))
        last = rid
    return Page(items=items, next=None)


def _iter(ids: list[str], start: int) -> Iterator[str]:
    for i in range(start, len(ids)):
        yield ids[i]
