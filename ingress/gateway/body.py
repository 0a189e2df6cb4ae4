"""Reading a request body under the configured limit: refused up front when
Content-Length says it is too big, and cut off while reading when the
sender lied or used chunked encoding."""

from __future__ import annotations

from aiohttp import web

from ingress.gateway import errors


async def read_body(request: web.Request, limit: int) -> bytes:
    declared = request.content_length
    if declared is not None and declared > limit:
        raise errors.too_large(limit)
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise errors.too_large(limit)
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)
