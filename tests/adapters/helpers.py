"""Shared helpers for the codec tests: fixture loading, feeding a stream in
awkward pieces, and whole-structure comparison via msgspec.to_builtins."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import msgspec

from adapters.base import StreamDecoder, Target
from adapters.canonical import ChatChunk

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def fixture(provider: str, name: str) -> bytes:
    return (FIXTURES / provider / name).read_bytes()


def target(provider: str, base_url: str = "", model: str = "m", **options: Any) -> Target:
    return Target(
        provider=provider, base_url=base_url, provider_model=model, api_key="sk-test", options=options
    )


def plain(value: Any) -> Any:
    return msgspec.to_builtins(value)


def body(wire_body: bytes) -> Any:
    return msgspec.json.decode(wire_body)


def feed_in_pieces(decoder: StreamDecoder, data: bytes, sizes: list[int]) -> list[ChatChunk]:
    out: list[ChatChunk] = []
    pos = 0
    i = 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        out.extend(decoder.feed(data[pos : pos + n]))
        pos += n
        i += 1
    out.extend(decoder.close())
    return out


def split_plans(data: bytes) -> dict[str, list[int]]:
    """Ways to cut a stream: whole, byte by byte, odd primes (which land
    inside CRLF pairs, UTF-8 sequences and binary preludes), random."""
    rng = random.Random(len(data))
    return {
        "whole": [len(data) or 1],
        "bytewise": [1],
        "primes": [3, 7, 13, 2, 31],
        "random": [rng.randint(1, 64) for _ in range(50)],
    }
