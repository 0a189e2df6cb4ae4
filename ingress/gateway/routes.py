"""The route table: every path the gateway serves, in one place."""

from __future__ import annotations

from aiohttp import web

from ingress.gateway.breakglass import delete_break_glass, get_break_glass, put_break_glass
from ingress.gateway.feedback import feedback
from ingress.gateway.front import gemini_call, model_call, read
from ingress.gateway.ops import healthz, metrics, tenant_metrics
from ingress.gateway.routing_api import explain

_GEMINI_METHODS = "(?:generateContent|streamGenerateContent|countTokens|embedContent|batchEmbedContents)"


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", model_call("chat"))
    app.router.add_post("/v1/messages", model_call("messages"))
    app.router.add_post("/v1/messages/count_tokens", model_call("count_tokens"))
    app.router.add_post("/v1/responses", model_call("responses"))
    app.router.add_post("/v1/embeddings", model_call("embeddings"))
    app.router.add_get("/v1/models", read("models", anthropic="models_anthropic"))
    app.router.add_get("/v1/usage", read("usage"))
    # Gemini: /v1beta/models/{model}:generateContent (and :streamGenerateContent,
    # :countTokens, :embedContent, :batchEmbedContents); the model is in the path.
    for version in ("v1beta", "v1"):
        app.router.add_post(f"/{version}/models/{{call:[^/]+:{_GEMINI_METHODS}}}", gemini_call)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/metrics/tenants", tenant_metrics)
    app.router.add_post("/internal/routing/explain", explain)
    app.router.add_post("/internal/cache/semantic-feedback", feedback)
    app.router.add_get("/internal/break-glass", get_break_glass)
    app.router.add_put("/internal/break-glass", put_break_glass)
    app.router.add_delete("/internal/break-glass", delete_break_glass)
