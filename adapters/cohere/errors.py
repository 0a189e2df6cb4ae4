"""Cohere errors ({"message": ...} with an HTTP status) -> canonical codes.
Cohere's non-standard statuses: 498 (invalid token), 499 (request cancelled)."""

from __future__ import annotations

from collections.abc import Mapping

from adapters.canonical import CanonicalError
from adapters.wirekit import errors as e


def normalise(status: int, body: bytes, headers: Mapping[str, str]) -> CanonicalError:
    if status == 498:
        return e.make(
            "auth_failed", "cohere: upstream returned HTTP 498 (invalid token)", provider_status=status
        )
    if status == 499:
        return e.make(
            "upstream_error", "cohere: upstream returned HTTP 499 (cancelled)", provider_status=status
        )
    return e.from_status("cohere", status, None, headers)
