"""Deterministic output and token counting.

The completion is a pure function of (model, prompt): the same request
always gets the same words, so tests and benchmarks can predict responses.
One word is one completion token; prompt tokens are estimated at four
characters per token plus a small per-message overhead (close enough to
real tokenizers for accounting tests to be meaningful).
"""

from __future__ import annotations

import hashlib
import math
import struct

_PROSE = (
    "the quick brown fox jumps over lazy dogs while nexus routes every request "
    "through one audit pipeline and counts tokens with care so budgets hold "
    "under load streams flow events settle projections rebuild from history "
    "latency stays low keys stay secret models answer prompts deterministically "
    "simulated providers never tire and always tell the same story"
)
_WORDS = tuple(_PROSE.split())

MIN_WORDS = 8
MAX_WORDS = 24
MESSAGE_OVERHEAD = 4
REQUEST_OVERHEAD = 3


def count_text_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def count_prompt_tokens(texts: list[str]) -> int:
    return REQUEST_OVERHEAD + sum(count_text_tokens(t) + MESSAGE_OVERHEAD for t in texts)


def _stream_of_bytes(seed: bytes) -> bytes:
    out = b""
    counter = 0
    while len(out) < MAX_WORDS + 1:
        out += hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return out


def completion_words(model: str, prompt: str, *, choice: int = 0) -> list[str]:
    """The words the sim answers with: 8-24 of them, chosen by the prompt's hash."""
    stream = _stream_of_bytes(f"{model}\x00{choice}\x00{prompt}".encode())
    n = MIN_WORDS + stream[0] % (MAX_WORDS - MIN_WORDS + 1)
    return [_WORDS[b % len(_WORDS)] for b in stream[1 : n + 1]]


def completion_text(words: list[str]) -> str:
    return " ".join(words)


def embedding(model: str, text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for ``text``."""
    raw = b""
    counter = 0
    while len(raw) < dimensions * 4:
        raw += hashlib.sha256(f"{model}\x00{counter}\x00{text}".encode()).digest()
        counter += 1
    ints = struct.unpack(f"<{dimensions}i", raw[: dimensions * 4])
    vec = [i / 2**31 for i in ints]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]
