"""MiniMax: OpenAI-compatible chat completions with an optional GroupId,
and business errors reported inside HTTP 200 bodies (base_resp)."""

from adapters.minimax.codec import MINIMAX, MiniMaxCodec

__all__ = ["MINIMAX", "MiniMaxCodec"]
