"""Vertex AI: the Gemini codec behind Vertex URLs, with a service-account
OAuth2 token (the pure assertion/token-request builders and a cache)."""

from adapters.vertex.codec import VertexCodec

__all__ = ["VertexCodec"]
