"""Google's generative APIs as the proxy meets them: which decrypted request
is a call the pipeline serves, and how the codec addresses it again.

One body grammar (Gemini's), several addresses:

- the Gemini API (the ``gemini`` adapter: generativelanguage.googleapis.com):
  ``/{v1beta,v1}/models/{m}:{method}`` and a tuned model's
  ``/{v}/tunedModels/{m}:{method}`` (generate, stream, count only);
- Vertex AI (the ``vertex`` adapter: ``{location}-aiplatform.googleapis.com``,
  ``aiplatform.googleapis.com``):
  ``/{v1,v1beta1}/projects/{p}/locations/{l}/publishers/google/models/{m}:{method}``,
  and express mode (an API key, no project): ``/{v}/publishers/google/models/{m}:{method}``
  (generate, stream, count, embedContent, batchEmbedContents; and ``:predict``
  of a text embedding model);
- the cached contents of either: ``POST /{v}/cachedContents`` (Vertex:
  ``/{v}/projects/{p}/locations/{l}/cachedContents``) and ``PATCH`` of one
  (``.../cachedContents/{id}``): a stored prompt, screened like a call's.

Anything else on these hosts (listing models, the Files API, batch jobs,
other publishers' models) is relayed and recorded as ``proxy.request``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ingress.translate.gemini_generate import METHODS, addressed
from ingress.translate.gemini_generate import address as gemini_address

_GEMINI = re.compile(r"/(v1|v1beta)/(models|tunedModels)/([^/:]+):([A-Za-z]+)")
_VERTEX = re.compile(
    r"/(v1|v1beta1)/(?:projects/([^/]+)/locations/([^/]+)/)?publishers/google/models/([^/:]+):([A-Za-z]+)"
)
_GEMINI_CACHE = re.compile(r"/(?:v1|v1beta)/cachedContents(/[^/:]+)?")
_VERTEX_CACHE = re.compile(r"/(?:v1|v1beta1)/projects/[^/]+/locations/[^/]+/cachedContents(/[^/:]+)?")
# What a tuned model serves (it has no embeddings).
_TUNED = frozenset({"generateContent", "streamGenerateContent", "countTokens"})
# What Vertex serves in the Gemini grammar, or one the proxy reads: a Gemini
# embedding model's embedContent and batchEmbedContents (another body than
# the Gemini API's: ingress.translate.vertex_embed); and :predict of a text
# embedding model (ingress.translate.vertex_predict).
_VERTEX_METHODS = frozenset(
    {"generateContent", "streamGenerateContent", "countTokens", "embedContent", "batchEmbedContents"}
)
# The interception entry's adapter names for Vertex AI (the catalogue's
# service name is vertex-ai; the codec's kind is vertex).
VERTEX = frozenset({"vertex", "vertex-ai"})


@dataclass(frozen=True, slots=True)
class ModelCall:
    """A model call's address: the model as the codec names it, the method,
    and what the codec needs to build the same URL."""

    model: str
    method: str
    base_path: str  # the base URL's path ("/v1beta" on the Gemini API; "" on Vertex)
    options: dict[str, Any]


def model_call(adapter: str, path: str) -> ModelCall | None:
    """The model call ``path`` is on a host of ``adapter``, or None."""
    if adapter == "gemini":
        m = _GEMINI.fullmatch(path)
        if m is None:
            return None
        version, collection, model, method = m.groups()
        if method not in METHODS or (collection == "tunedModels" and method not in _TUNED):
            return None
        name = model if collection == "models" else f"tunedModels/{model}"
        return ModelCall(name, method, f"/{version}", {})
    if adapter in VERTEX:
        m = _VERTEX.fullmatch(path)
        if m is None:
            return None
        version, project, location, model, method = m.groups()
        # :predict serves many models; a text embedding model's body is one
        # the proxy reads (ingress.translate.vertex_predict).
        embeds = method == "predict" and "embedding" in model
        if method not in _VERTEX_METHODS and not embeds:
            return None
        options: dict[str, Any] = {"api_version": version, "publisher": "google"}
        if project:
            options.update(project=project, location=location)
        else:
            options["express"] = True
        return ModelCall(model, method, "", options)
    return None


def cache_call(adapter: str, method: str, path: str) -> bool:
    """Whether this is a cached content stored (POST of the collection) or
    updated (PATCH of one) on a host of ``adapter``."""
    pattern = _GEMINI_CACHE if adapter == "gemini" else _VERTEX_CACHE if adapter in VERTEX else None
    m = pattern.fullmatch(path) if pattern is not None else None
    if m is None:
        return False
    one = m.group(1) is not None
    return (method == "POST" and not one) or (method == "PATCH" and one)


def address(path: str, query: str) -> tuple[str, bool]:
    """The model and stream flag a Google model URL names (the endpoints'
    ``addressed`` for the proxy): as ``gemini_generate.address`` on every
    address above."""
    for adapter in ("gemini", "vertex"):
        call = model_call(adapter, path)
        if call is not None:
            return (
                (call.model, False) if call.method == "predict" else addressed(call.model, call.method, query)
            )
    return gemini_address(path, query)  # raises the 400 naming the URL it expects


__all__ = ["VERTEX", "ModelCall", "address", "cache_call", "model_call"]
