"""Asking a provider what it offers, and whether a credential works: the
wire side of the Hub's provider and credential probes (pure, as every
codec; ``ingress.probe`` sends the requests).

Where the provider's API lists models (OpenAI and the OpenAI-compatible
family: ``GET {base}/models``; Anthropic: ``GET /v1/models``), the probe is
that call, authenticated exactly as the codec authenticates a chat call
(its headers are the codec's own). Elsewhere it is the smallest chat call
the codec can make (one token), which tells whether the credential works
but lists nothing.
"""

from __future__ import annotations

from typing import Any

import msgspec

from adapters.base import Codec, Target, WireRequest
from adapters.canonical import ChatRequest, Message
from adapters.registry import OPENAI_FAMILY
from adapters.wirekit.jsonio import join_url

_ANTHROPIC_DEFAULT = "https://api.anthropic.com"
_PROBE_PROMPT = "ping"


class _Listed(msgspec.Struct):
    id: str = ""


class _ModelList(msgspec.Struct):
    data: list[_Listed] = []


def smallest_chat(model: str) -> ChatRequest:
    return ChatRequest(model=model, messages=[Message(role="user", content=_PROBE_PROMPT)], max_tokens=1)


def _auth_headers(codec: Codec, target: Target) -> dict[str, str]:
    """The headers the codec sends with a chat call (its authentication
    and version headers), without the body's content type."""
    wire = codec.encode_chat(smallest_chat(target.provider_model or "probe"), target)
    return {k: v for k, v in wire.headers.items() if k.lower() not in ("content-type", "content-length")}


def models_request(codec: Codec, target: Target) -> WireRequest | None:
    """The provider's models listing, or None when its API has none."""
    if codec.name in OPENAI_FAMILY and codec.name != "azure":
        url = join_url(target.base_url, "/models")
    elif codec.name == "anthropic":
        url = join_url(target.base_url or _ANTHROPIC_DEFAULT, "/v1/models")
    else:
        return None
    return WireRequest(method="GET", url=url, headers=_auth_headers(codec, target), body=b"")


def decode_models(body: bytes) -> list[str]:
    """The model ids of a listing (OpenAI's and Anthropic's share the
    ``data[].id`` shape); unknown fields are ignored."""
    listed = msgspec.json.decode(body, type=_ModelList)
    return sorted({m.id for m in listed.data if m.id})


def chat_request(codec: Codec, target: Target) -> WireRequest:
    """The one-token chat call a provider without a listing is probed with."""
    return codec.encode_chat(smallest_chat(target.provider_model), target)


def error_code(codec: Codec, status: int, body: bytes, headers: Any) -> str:
    """The canonical code of a refusal (``authentication_error``,
    ``rate_limit``...), never the provider's message: providers quote part
    of a rejected key in theirs."""
    return str(codec.normalise_error(status, body, headers).code)
