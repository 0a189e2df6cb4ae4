"""Voyage AI embeddings (/v1/embeddings); chat is not served."""

from adapters.voyage.codec import VoyageCodec

__all__ = ["VoyageCodec"]
