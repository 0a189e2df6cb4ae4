"""One module per provider wire format.  Each exposes ``register(app)``,
which adds that provider's routes; the server registers every module in
``FORMATS``."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from nexus.sim.formats import openai

FORMATS: dict[str, Callable[[web.Application], None]] = {
    "openai": openai.register,
}
