"""The OpenAI wire format (and every OpenAI-compatible provider's)."""

from adapters.openai.codec import CODEC, OpenAICodec, OpenAIStreamDecoder

__all__ = ["CODEC", "OpenAICodec", "OpenAIStreamDecoder"]
