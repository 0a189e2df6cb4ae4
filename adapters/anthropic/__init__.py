"""Anthropic Messages API (/v1/messages): the provider codec and, in
``ingress``, the reverse direction for Anthropic clients calling Nexus."""

from adapters.anthropic.codec import AnthropicCodec

__all__ = ["AnthropicCodec"]
