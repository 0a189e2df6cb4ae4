"""What every projection store offers the worker and ``replay``.

A store owns its position: ``apply`` writes the rows of a batch and the
checkpoint (projection, stream, last sequence) in one transaction and skips
whatever the checkpoint already covers, so a redelivered or overlapping batch
changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from projections import schema
from projections.traffic import fold

# (stream sequence, decoded event); events a projection ignores are simply
# absent, the batch's ``last_seq`` still covers them.
Item = tuple[int, object]


class StoreError(RuntimeError):
    """A store problem with a message fit for an operator."""


class StoreBusy(StoreError):
    """Another writer (a running projector, a replay) holds the store."""


class Store(Protocol):
    name: str

    async def open(self) -> None:
        """Connect, take the writer lock and apply pending migrations."""

    async def close(self) -> None: ...

    async def position(self, stream: str) -> int:
        """The last stream sequence applied (0 when none)."""

    async def apply(self, stream: str, items: Sequence[Item], last_seq: int) -> int:
        """Apply the items with a sequence above the checkpoint and move the
        checkpoint to ``last_seq``, atomically.  Returns how many items were
        new."""

    async def reset(self) -> None:
        """Drop every table the projections own and re-create them empty."""

    async def rows(self) -> list[dict[str, Any]]:
        """The whole ``traffic_event`` table ordered by request id."""

    def refuses(self, exc: BaseException) -> bool:
        """True when ``apply`` failed because of a value the store cannot
        hold (the lane then isolates the event and dead-letters it), false
        for a connection, lock or schema problem (the lane retries)."""


def fresh_items(items: Sequence[Item], checkpoint: int) -> Sequence[Item]:
    if not items or items[0][0] > checkpoint:
        return items
    return [it for it in items if it[0] > checkpoint]


class FoldedItems(list[Item]):
    """A batch with its fold (one list per ``traffic_event`` column, in
    ``COLUMNS`` order) computed once for every store the lane hands it to;
    the stores only read it."""

    def __init__(self, items: Sequence[Item]) -> None:
        super().__init__(items)
        self.columns = schema.columnar(list(fold(ev for _, ev in items).values()))


def fold_columns(items: Sequence[Item], checkpoint: int) -> tuple[int, list[list[object]]]:
    """(how many items lie above ``checkpoint``, their fold as one list per
    column); the fold a ``FoldedItems`` carries when all of it is new."""
    fresh = fresh_items(items, checkpoint)
    if fresh is items and isinstance(items, FoldedItems):
        return len(items), items.columns
    return len(fresh), schema.columnar(list(fold(ev for _, ev in fresh).values()))
