"""Google Gemini API (generateContent, streamGenerateContent?alt=sse,
embedContent / batchEmbedContents); also the body codec Vertex reuses."""

from adapters.gemini.codec import GeminiCodec

__all__ = ["GeminiCodec"]
