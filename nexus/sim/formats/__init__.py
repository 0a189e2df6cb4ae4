"""One module per provider wire format.  Each exposes ``register(app)``,
which adds that provider's routes; the server registers every module in
``FORMATS``.  OpenAI is served at the root (``/v1``) and every other
format under a prefix named after it (``/anthropic/v1/messages``,
``/gemini/v1beta/...``, ``/bedrock/model/...``, ...), so a provider's
``base_url`` in the gateway config is ``<sim>/<format>``; the
OpenAI-compatible providers live under ``/<name>/v1`` and Azure under
``/azure/openai/deployments/...`` (see ``formats.openai``)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from nexus.sim.formats import anthropic, bedrock, cohere, gemini, google_oauth, openai, replicate, voyage

FORMATS: dict[str, Callable[[web.Application], None]] = {
    "openai": openai.register,
    "anthropic": anthropic.register,
    "gemini": gemini.register,  # and vertex
    "bedrock": bedrock.register,
    "cohere": cohere.register,
    "replicate": replicate.register,
    "voyage": voyage.register,
    "google_oauth": google_oauth.register,  # service-account tokens for /vertex
}
