"""Azure OpenAI: /openai/deployments/{deployment}/{chat/completions|
embeddings}?api-version=…, authorised by the ``api-key`` header (or an Entra
ID bearer token when options.auth == "bearer").  Bodies are OpenAI's."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping

import msgspec

from adapters.base import Capability, CodecBase, StreamDecoder, Target, WireRequest
from adapters.canonical import CanonicalError, ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse
from adapters.compat.codec import GuardedStream, utf8_guard
from adapters.compat.table import PLAIN
from adapters.openai import CODEC as OPENAI
from adapters.openai.codec import OpenAIStreamDecoder
from adapters.wirekit.errors import unsupported

DEFAULT_API_VERSION = "2024-10-21"  # the current GA data-plane version

# Reasoning deployments (o-series, gpt-5) reject max_tokens and any
# non-default sampling; a deployment name says nothing reliable about its
# model, so options.reasoning decides, with the common names as a default.
REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")


def is_reasoning(target: Target) -> bool:
    flag = target.options.get("reasoning")
    if flag is not None:
        return bool(flag)
    name = str(target.options.get("deployment") or target.provider_model).lower()
    return name.startswith(REASONING_PREFIXES)


def reasoning_rewrite(request: ChatRequest) -> ChatRequest:
    budget = request.output_budget()
    return msgspec.structs.replace(
        request,
        max_tokens=None,
        max_completion_tokens=budget,
        temperature=None,
        top_p=None,
        presence_penalty=None,
        frequency_penalty=None,
        logprobs=None,
        top_logprobs=None,
    )


class AzureCodec(CodecBase):
    name = "azure"
    capabilities = frozenset(
        {
            Capability.TEXT,
            Capability.STREAM,
            Capability.TOOLS,
            Capability.TOOLS_STREAM,
            Capability.VISION,
            Capability.JSON_SCHEMA,
            Capability.EMBEDDINGS,
        }
    )

    def url(self, target: Target, operation: str) -> str:
        if not target.base_url:
            raise unsupported(
                self.name, "the provider config needs base_url (https://<resource>.openai.azure.com)"
            )
        deployment = str(target.options.get("deployment") or target.provider_model)
        version = str(target.options.get("api_version", DEFAULT_API_VERSION))
        base = target.base_url.rstrip("/")
        if base.endswith("/openai"):
            base = base[: -len("/openai")]
        path = f"/openai/deployments/{urllib.parse.quote(deployment, safe='')}/{operation}"
        return f"{base}{path}?{urllib.parse.urlencode({'api-version': version})}"

    def headers(self, target: Target) -> dict[str, str]:
        headers = {"content-type": "application/json", **target.headers}
        if target.api_key:
            if target.options.get("auth") == "bearer":
                headers["authorization"] = f"Bearer {target.api_key}"
            else:
                headers["api-key"] = target.api_key
        return headers

    def _rewrap(self, wire: WireRequest, target: Target, operation: str) -> WireRequest:
        return msgspec.structs.replace(wire, url=self.url(target, operation), headers=self.headers(target))

    def encode_chat(self, request: ChatRequest, target: Target) -> WireRequest:
        # The OpenAI encoder builds the body; only URL and auth differ.
        # Azure, like OpenAI, knows max_completion_tokens but not
        # reasoning_content on input messages.
        for quirk in PLAIN[1:]:
            request = quirk.apply(request)
        if is_reasoning(target):
            request = reasoning_rewrite(request)
        wire = OPENAI.encode_chat(request, msgspec.structs.replace(target, api_key=None, base_url="x"))
        return self._rewrap(wire, target, "chat/completions")

    def decode_chat(self, body: bytes, target: Target) -> ChatResponse:
        return utf8_guard(self.name, lambda: OPENAI.decode_chat(body, target))

    def stream_decoder(self, target: Target) -> StreamDecoder:
        return GuardedStream(OpenAIStreamDecoder(), self.name)

    def encode_embeddings(self, request: EmbeddingRequest, target: Target) -> WireRequest:
        wire = OPENAI.encode_embeddings(request, msgspec.structs.replace(target, api_key=None, base_url="x"))
        return self._rewrap(wire, target, "embeddings")

    def decode_embeddings(self, body: bytes, target: Target) -> EmbeddingResponse:
        return utf8_guard(self.name, lambda: OPENAI.decode_embeddings(body, target))

    def normalise_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> CanonicalError:
        err = OPENAI.normalise_error(status, body, headers)
        return msgspec.structs.replace(err, message=f"azure: {err.message}")
