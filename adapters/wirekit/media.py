"""Image/file references in the canonical shape: https URLs or data: URIs."""

from __future__ import annotations

import base64
import binascii


def parse_data_uri(url: str) -> tuple[str, str] | None:
    """(media_type, base64 data) of a base64 data: URI, else None."""
    if not url.startswith("data:"):
        return None
    head, sep, data = url[5:].partition(",")
    if not sep or not head.endswith(";base64"):
        return None
    media_type = head[: -len(";base64")] or "application/octet-stream"
    return media_type, data


def data_uri(media_type: str, b64: str) -> str:
    return f"data:{media_type};base64,{b64}"


def is_valid_base64(data: str) -> bool:
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True
