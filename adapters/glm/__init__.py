"""Zhipu GLM (open.bigmodel.cn /api/paas/v4): OpenAI-shaped chat and
embeddings; token-array embedding input is refused."""

from adapters.glm.codec import GLM, GLMCodec

__all__ = ["GLM", "GLMCodec"]
