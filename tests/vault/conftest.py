"""The vault's tests run against the Hub's fixtures (a real NATS under a
fresh prefix, removed afterwards; a running Hub with its admin)."""

from __future__ import annotations

from tests.hub.conftest import admin, control, hub, nc

__all__ = ["admin", "control", "hub", "nc"]
