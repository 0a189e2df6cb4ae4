"""MiniMax over its OpenAI-compatible endpoint.  Two differences: an
optional GroupId query parameter, and errors that arrive as HTTP 200 with
``base_resp.status_code`` set, which must not pass as an empty answer."""

from __future__ import annotations

import urllib.parse

import msgspec

from adapters.base import Capability, CodecError, Target, WireRequest
from adapters.canonical import ChatRequest, ChatResponse, ErrorCode
from adapters.compat.codec import CompatCodec
from adapters.compat.table import PLAIN, CompatProvider
from adapters.wirekit.errors import make

C = Capability

MINIMAX = CompatProvider(
    name="minimax",
    base_url="https://api.minimax.io/v1",
    capabilities=frozenset({C.TEXT, C.STREAM, C.TOOLS, C.TOOLS_STREAM}),
    quirks=PLAIN,
)

# https://platform.minimax.io/docs — base_resp status codes.
STATUS_CODES: dict[int, ErrorCode] = {
    1000: "upstream_error",
    1001: "timeout",
    1002: "rate_limited",
    1004: "auth_failed",
    1008: "auth_failed",  # insufficient balance: the gateway's account, not the caller
    1013: "upstream_error",
    1027: "invalid_request",  # output blocked by moderation
    1039: "invalid_request",  # token limit
    2013: "invalid_request",
}


class _BaseResp(msgspec.Struct):
    status_code: int = 0
    status_msg: str = ""


class _Envelope(msgspec.Struct):
    base_resp: _BaseResp | None = None


_envelope = msgspec.json.Decoder(_Envelope).decode


class MiniMaxCodec(CompatCodec):
    def __init__(self) -> None:
        super().__init__(MINIMAX)

    def encode_chat(self, request: ChatRequest, target: Target) -> WireRequest:
        wire = super().encode_chat(request, target)
        group = target.options.get("group_id")
        if group:
            sep = "&" if "?" in wire.url else "?"
            wire = msgspec.structs.replace(
                wire, url=f"{wire.url}{sep}{urllib.parse.urlencode({'GroupId': group})}"
            )
        return wire

    def decode_chat(self, body: bytes, target: Target) -> ChatResponse:
        check_base_resp(body)
        return super().decode_chat(body, target)


def check_base_resp(body: bytes) -> None:
    try:
        env = _envelope(body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return  # the OpenAI decoder reports unreadable bodies
    br = env.base_resp
    if br is None or br.status_code == 0:
        return
    code = STATUS_CODES.get(br.status_code, "upstream_error")
    raise CodecError(make(code, f"minimax: base_resp status_code {br.status_code}"))
