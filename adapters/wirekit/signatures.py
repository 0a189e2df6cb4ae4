"""Thought signatures ride inside tool-call ids.

Gemini (2.5 with thinking, and strictly Gemini 3) returns a
``thoughtSignature`` on functionCall parts and requires it back on the same
part in the next turn; Anthropic (and Claude on Bedrock) requires the signed
thinking block back before tool_use blocks when thinking is on.  The
canonical (OpenAI) shape has nowhere to keep a signature,
but every client echoes tool-call ids verbatim, so the signature is appended
to the id in URL-safe base64 (which also satisfies Anthropic's tool_use id
pattern ``[a-zA-Z0-9_-]+``) and split off again when the call comes back.
"""

from __future__ import annotations

SEP = "__ts_"


def join(call_id: str, signature: str | None) -> str:
    if not signature:
        return call_id
    return call_id + SEP + signature.replace("+", "-").replace("/", "_").rstrip("=")


def split(tool_call_id: str) -> tuple[str, str | None]:
    base, sep, packed = tool_call_id.partition(SEP)
    if not sep or not packed:
        return tool_call_id, None
    sig = packed.replace("-", "+").replace("_", "/")
    return base, sig + "=" * (-len(sig) % 4)
