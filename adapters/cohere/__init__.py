"""Cohere v2 (/v2/chat, /v2/embed) and its v2 stream events."""

from adapters.cohere.codec import CohereCodec

__all__ = ["CohereCodec"]
