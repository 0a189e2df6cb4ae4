"""Replicate predictions (/v1/predictions, `Authorization: Token`), and the
prediction stream's SSE events output / done / error."""

from adapters.replicate.codec import ReplicateCodec

__all__ = ["ReplicateCodec"]
