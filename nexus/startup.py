"""The one error a start-up failure becomes (``nexus up``, and what it starts)."""

from __future__ import annotations


class StartupError(Exception):
    """A start-up failure, said in one line with what to do about it."""
