"""Reading a request body under the configured limit (refused up front when
Content-Length says it is too big, cut off while reading when the sender
lied or used chunked encoding), and parsing it as a JSON object: a body
that is not UTF-8, not JSON or nested absurdly deep is the caller's 400,
never a 500."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web
from aiohttp.compression_utils import HAS_BROTLI, HAS_ZSTD

from ingress.pipeline import errors

# Deeper than any real request (tool schemas nest a few tens of levels),
# and far enough under Python's recursion limit that whatever walks the
# parsed body later (hooks, translation, event encoding) cannot overflow it.
MAX_DEPTH = 128

# What aiohttp's parser decodes (others reach us as raw bytes).
_DECODED = frozenset({"", "identity", "gzip", "deflate"} | ({"br"} if HAS_BROTLI else set()))
_ENCODINGS = _DECODED | ({"zstd"} if HAS_ZSTD else set())

_any: msgspec.json.Decoder[Any] = msgspec.json.Decoder()


async def read_body(request: web.Request, limit: int) -> bytes:
    if request.headers.get("Content-Encoding", "").strip().lower() not in _ENCODINGS:
        raise errors.unsupported_encoding()
    declared = request.content_length
    if declared is not None and declared > limit:
        raise errors.too_large(limit)
    parts: list[bytes] = []
    size = 0
    while True:
        try:
            chunk = await request.content.readany()
        except web.RequestPayloadError as exc:
            # Set by aiohttp's parser: a Content-Encoding that does not
            # decode, broken chunked framing, a body cut short.
            raise errors.bad_body_encoding(_payload_problem(exc)) from None
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise errors.too_large(limit)
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _payload_problem(exc: web.RequestPayloadError) -> str:
    # Our words only: aiohttp's messages can quote the body.
    cause = type(exc.__cause__).__name__ if exc.__cause__ is not None else ""
    if cause == "ContentEncodingError":
        return "does not decode with its Content-Encoding"
    if cause == "TransferEncodingError":
        return "has broken chunked Transfer-Encoding"
    return "ended before its declared length"


def nests_deeper(body: Any, raw: bytes, limit: int) -> bool:
    """Whether the parsed ``body`` nests deeper than ``limit``.  Fewer
    opening brackets in ``raw`` than the limit settle it without a look
    (almost every request); otherwise a walk over the containers, which
    costs about what parsing did (a scan of the text for the brackets
    outside strings cost four times as much)."""
    if raw.count(b"{") + raw.count(b"[") <= limit:
        return False
    stack: list[tuple[Any, int]] = [(body, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        if depth > limit:
            return True
        for child in node.values() if type(node) is dict else node:
            if type(child) is dict or type(child) is list:
                push((child, depth + 1))
    return False


def parse_json(raw: bytes) -> Any:
    """The body as JSON (any value), or the caller's 400."""
    try:
        body = _any.decode(raw)
    except msgspec.DecodeError:
        raise errors.invalid_json() from None
    except UnicodeDecodeError as exc:
        raise errors.invalid_utf8(exc.start) from None
    except RecursionError:  # the parser's own guard, about 1,000 levels down
        raise errors.too_deep(MAX_DEPTH) from None
    if isinstance(body, dict | list) and nests_deeper(body, raw, MAX_DEPTH):
        raise errors.too_deep(MAX_DEPTH)
    return body
