"""The Bedrock provider codec: Converse and ConverseStream, SigV4-signed
(or a Bedrock API key as a bearer token).

Credentials ride in Target.api_key: "ACCESS_KEY_ID:SECRET[:SESSION_TOKEN]"
signs with SigV4; a key without colons is a Bedrock API key.  The region
comes from options.region.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from datetime import UTC, datetime

from adapters.base import Capability, CodecBase, StreamDecoder, Target, WireRequest
from adapters.bedrock import embeddings, errors, request, response
from adapters.bedrock import wire as w
from adapters.bedrock.sigv4 import Credentials, sign
from adapters.bedrock.stream import BedrockStreamDecoder
from adapters.canonical import CanonicalError, ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse
from adapters.wirekit.errors import unsupported
from adapters.wirekit.jsonio import decode_upstream, encode


def credentials(api_key: str) -> Credentials | None:
    parts = api_key.split(":")
    if len(parts) in (2, 3) and all(parts[:2]):
        return Credentials(parts[0], parts[1], parts[2] if len(parts) == 3 and parts[2] else None)
    return None


def signing_time(target: Target) -> datetime:
    # Tests pin the clock through options; production signs with now.
    pinned = target.options.get("signing_time")
    return pinned if isinstance(pinned, datetime) else datetime.now(UTC)


class BedrockCodec(CodecBase):
    name = "bedrock"
    capabilities = frozenset(
        {
            Capability.TEXT,
            Capability.STREAM,
            Capability.TOOLS,
            Capability.TOOLS_STREAM,
            Capability.VISION,
            Capability.JSON_SCHEMA,
            Capability.REASONING,
            Capability.EMBEDDINGS,
        }
    )

    def url(self, target: Target, action: str) -> str:
        region = target.options.get("region")
        if not region and not target.base_url:
            raise unsupported(self.name, "the provider config needs options.region")
        base = (target.base_url or f"https://bedrock-runtime.{region}.amazonaws.com").rstrip("/")
        model = urllib.parse.quote(target.provider_model, safe="")
        return f"{base}/model/{model}/{action}"

    def _signed(self, target: Target, url: str, body: bytes, accept: str) -> WireRequest:
        headers = {"content-type": "application/json", "accept": accept, **target.headers}
        creds = credentials(target.api_key or "")
        if creds is not None:
            region = str(target.options.get("region") or _region_from_url(url))
            headers = sign(
                "POST",
                url,
                headers,
                body,
                credentials=creds,
                region=region,
                service="bedrock",
                now=signing_time(target),
            )
        elif target.api_key:
            headers["authorization"] = f"Bearer {target.api_key}"
        return WireRequest(url=url, headers=headers, body=body)

    def encode_chat(self, request_: ChatRequest, target: Target) -> WireRequest:
        if request_.stream:
            url, accept = self.url(target, "converse-stream"), "application/vnd.amazon.eventstream"
        else:
            url, accept = self.url(target, "converse"), "application/json"
        return self._signed(target, url, encode(request.build(request_, target.provider_model)), accept)

    def decode_chat(self, body: bytes, target: Target) -> ChatResponse:
        return response.to_canonical(
            decode_upstream(body, w.ConverseResponse, self.name), target.provider_model
        )

    def stream_decoder(self, target: Target) -> StreamDecoder:
        return BedrockStreamDecoder(target.provider_model)

    def encode_embeddings(self, request_: EmbeddingRequest, target: Target) -> WireRequest:
        body = encode(embeddings.body(request_, target.provider_model))
        return self._signed(target, self.url(target, "invoke"), body, "application/json")

    def decode_embeddings(self, body: bytes, target: Target) -> EmbeddingResponse:
        return embeddings.decode(body, target.provider_model)

    def normalise_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> CanonicalError:
        return errors.normalise(status, body, headers)


def _region_from_url(url: str) -> str:
    host = urllib.parse.urlsplit(url).hostname or ""
    parts = host.split(".")
    return parts[1] if len(parts) > 2 and parts[0].startswith("bedrock") else "us-east-1"
