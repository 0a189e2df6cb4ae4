"""GLM is OpenAI-shaped: a compat row of its own plus one refusal."""

from __future__ import annotations

from adapters.base import Capability, Target, WireRequest
from adapters.canonical import EmbeddingRequest
from adapters.compat.codec import CompatCodec
from adapters.compat.table import MAX_TOKENS, CompatProvider
from adapters.wirekit.errors import unsupported

C = Capability

GLM = CompatProvider(
    name="glm",
    base_url="https://open.bigmodel.cn/api/paas/v4",
    # Not VISION: GLM-4V documents raw base64 in image_url, not the data:
    # URIs the canonical shape carries; unverified, so not claimed.
    capabilities=frozenset({C.TEXT, C.STREAM, C.TOOLS, C.TOOLS_STREAM, C.REASONING, C.EMBEDDINGS}),
    quirks=(MAX_TOKENS,),
    # GLM-4.5+ thinking switch: {"type": "enabled" | "disabled"}.
    ext_fields=("thinking", "do_sample", "request_id"),
)


class GLMCodec(CompatCodec):
    def __init__(self) -> None:
        super().__init__(GLM)

    def encode_embeddings(self, request: EmbeddingRequest, target: Target) -> WireRequest:
        if not isinstance(request.input, str) and any(not isinstance(x, str) for x in request.input):
            raise unsupported(self.name, "token-array embedding input is not accepted; send text")
        return super().encode_embeddings(request, target)
