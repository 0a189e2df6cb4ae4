"""The route table: every path the gateway serves, in one place."""

from __future__ import annotations

from aiohttp import web

from ingress.gateway.chat import chat_completions, messages
from ingress.gateway.embeddings import embeddings
from ingress.gateway.models import list_models
from ingress.gateway.ops import healthz, metrics
from ingress.gateway.quota import usage
from ingress.gateway.responses_api import responses
from ingress.gateway.routing_api import explain
from ingress.gateway.semantic import feedback


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/responses", responses)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/usage", usage)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/internal/routing/explain", explain)
    app.router.add_post("/internal/cache/semantic-feedback", feedback)
