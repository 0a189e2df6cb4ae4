"""The semantic cache in the gateway: what a request's partition is, the
start-up of the cache, and the poison feedback endpoint.

A prompt may reuse an answer only when everything but the wording of its
last user message is the same: the partition is a digest of the config
version, the endpoint (the answer is replayed in the caller's format), the
scope (key / project / org, as the exact cache's), the model (requested,
provider and provider model; left out with ``allow_cross_model``), whether
it streams, and the whole request with the last user message blanked
(system prompt, earlier turns, tools, temperature...).  Only the last user
message is embedded.  Prompts with images, audio or files in that message
are not looked up (the text alone would not say what was asked)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from adapters.canonical import ChatRequest, Message, TextPart
from ingress.pipeline.exchange import Exchange
from streams.config_cache import CacheConfig

if TYPE_CHECKING:
    # The cache itself (numpy, ~11 MB resident) is imported when it starts.
    from ingress.cache.semantic.cache import SemanticCache
    from ingress.cache.semantic.embedder import Embedder

log = logging.getLogger("nexus.cache.semantic")

ENTRY_HEADER = "X-Nexus-Cache-Entry"  # a semantic hit's entry: what poison feedback names
# A caller's own thumbs-down: "the answer of this entry was bad" on its next
# request; honoured only for an entry of the caller's own scope.
POISON_HEADER = "x-nexus-cache-poison"
SIMILARITY_HEADER = "X-Nexus-Cache-Similarity"

_any: msgspec.json.Decoder[Any] = msgspec.json.Decoder()
_sorted = msgspec.json.Encoder(order="sorted")

_loaded: dict[str, Embedder] = {}
_load_lock = threading.Lock()


def load_embedder(model_path: str = "") -> Embedder:
    """One model per process, whatever the number of apps (the tests run
    many gateways in one process; each node runs one)."""
    with _load_lock:
        emb = _loaded.get(model_path)
        if emb is None:
            from ingress.cache.semantic.embedder import MiniLMEmbedder

            emb = _loaded[model_path] = MiniLMEmbedder(Path(model_path) if model_path else None)
        return emb


async def start(client: Any, prefix: str, config: CacheConfig) -> SemanticCache | None:
    from ingress.cache.semantic.cache import SemanticCache
    from ingress.cache.semantic.embedder import EmbedderError

    sem = config.semantic
    try:
        embedder = await asyncio.get_running_loop().run_in_executor(None, load_embedder, sem.model_path)
    except EmbedderError as exc:
        log.warning("the semantic cache is enabled but its model cannot be loaded (%s): it stays off", exc)
        return None
    cache = SemanticCache(
        client,
        prefix,
        embedder,
        threshold=sem.threshold,
        ttl_s=config.ttl_s,
        max_entries=sem.max_entries,
        max_entry_bytes=config.max_entry_bytes,
        timeout_s=config.lookup_timeout_ms / 1000,
        embed_timeout_s=sem.embed_timeout_ms / 1000,
        workers=sem.embed_workers,
        breaker=sem.breaker,
    )
    await cache.start()
    return cache


def _blank(value: Any, text: str) -> Any:
    if isinstance(value, str):
        return "" if value == text else value
    if isinstance(value, list):
        return [_blank(v, text) for v in value]
    if isinstance(value, dict):
        return {k: _blank(v, text) for k, v in value.items()}
    return value


def partition(ex: Exchange, chat: ChatRequest, scope: str, config: CacheConfig) -> tuple[str, str] | None:
    """(partition, text to embed), or None when the request is not one the
    semantic cache answers."""
    last = next((i for i in range(len(chat.messages) - 1, -1, -1) if chat.messages[i].role == "user"), None)
    if last is None:
        return None
    msg = chat.messages[last]
    if isinstance(msg.content, list) and not all(isinstance(p, TextPart) for p in msg.content):
        return None
    text = msg.text().strip()
    if not text:
        return None
    cross = config.semantic.allow_cross_model
    messages = list(chat.messages)
    messages[last] = Message(role="user", content="")
    rest = msgspec.structs.replace(chat, messages=messages, model="" if cross else chat.model, user=None)
    try:
        caller: Any = _blank(_any.decode(ex.raw), msg.text())
    except msgspec.DecodeError:
        caller = ex.raw.decode("utf-8", "replace")
    if cross and isinstance(caller, dict):
        caller.pop("model", None)
    h = hashlib.sha256(b"nexus-semantic/v1")
    models = ("", "", "") if cross else (ex.requested_model, ex.provider, ex.provider_model)
    for part in (ex.rt.snapshot.version, ex.endpoint, scope, *models, "stream" if ex.stream else "unary"):
        h.update(b"\n" + part.encode())
    for blob in (_sorted.encode(rest), _sorted.encode(caller)):
        h.update(b"\n%d\n" % len(blob))
        h.update(blob)
    return h.hexdigest(), text


def entry_id_ok(value: str) -> bool:
    return 0 < len(value) <= 64 and value.isalnum() and value.isascii()


async def poison_own(cache: SemanticCache, exact_prefix: str, eid: str, scope: str) -> bool:
    if not entry_id_ok(eid):
        return False
    found = await cache.get(eid)
    if found is None or found.scope != scope:
        return False  # another scope's entry (or none): the caller may not touch it
    try:
        return await cache.poison(eid, exact_prefix)
    except Exception as exc:
        log.warning("semantic cache poison failed (%s)", type(exc).__name__)
        return False
