"""The semantic cache: prompt embeddings (``embedder``), the in-process
vector index (``index``) and the Valkey-shared cache around them
(``cache``)."""

from ingress.cache.semantic.cache import Probe, SemanticCache
from ingress.cache.semantic.embedder import MODEL_VERSION, Embedder, EmbedderError, MiniLMEmbedder
from ingress.cache.semantic.index import VectorIndex

__all__ = [
    "MODEL_VERSION",
    "Embedder",
    "EmbedderError",
    "MiniLMEmbedder",
    "Probe",
    "SemanticCache",
    "VectorIndex",
]
