"""The gateway loads only the token encodings its models count with, and
keeps one copy of each BPE table (tiktoken's Rust core), not two."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

from ingress.pipeline.stages.quota import encodings_needed
from streams.config_snapshot import snapshot_from_config
from streams.config_validation import parse_config

ROOT = Path(__file__).resolve().parents[2]

PROVIDERS = """
providers:
  - {name: oa, kind: openai, base_url: "https://api.openai.com/v1"}
  - {name: an, kind: anthropic, base_url: "https://api.anthropic.com"}
"""


def _needed(models: str) -> set[str]:
    cfg = parse_config(PROVIDERS + "models:\n" + textwrap.indent(textwrap.dedent(models), "  "))
    return encodings_needed(snapshot_from_config(cfg, b"x" * 32))


def test_only_the_configured_families_are_prewarmed() -> None:
    assert _needed("- {name: fast, provider: oa, provider_model: gpt-4o-mini}\n") == {"o200k_base"}
    assert _needed("- {name: claude, provider: an, provider_model: claude-sonnet-4}\n") == {"cl100k_base"}
    # A legacy OpenAI model counts with cl100k, under either of its names.
    assert _needed("- {name: old, provider: oa, provider_model: gpt-3.5-turbo}\n") == {
        "o200k_base",
        "cl100k_base",
    }
    assert _needed("- {name: gpt-4, provider: oa}\n") == {"cl100k_base"}


def test_encoding_without_the_python_ranks_counts_the_same_and_pickles() -> None:
    code = textwrap.dedent(
        """
        import pickle, tiktoken
        from ingress.quota.estimate import encoding
        text = "hello world, tokenizers! Zahlung für Jürgen 1234567 <|endoftext|>"
        ours = encoding("o200k_base")
        assert ours._mergeable_ranks == {}, "the Python copy of the ranks is kept"
        assert tiktoken.get_encoding("o200k_base") is ours
        blob = pickle.dumps(ours)
        assert len(blob) < 200, "a registered encoding pickles by name"
        assert pickle.loads(blob).encode_ordinary(text) == ours.encode_ordinary(text)
        assert ours.n_vocab == 200019 and ours.max_token_value == 200018
        special = ours.encode(text, allowed_special="all")
        print(ours.encode_ordinary(text), special, ours.decode([24912, 2375]))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    import tiktoken
    from tiktoken_ext import openai_public

    from ingress.quota.estimate import seed_tiktoken_cache

    seed_tiktoken_cache()
    ref = tiktoken.Encoding(**openai_public.o200k_base())
    text = "hello world, tokenizers! Zahlung für Jürgen 1234567 <|endoftext|>"
    expected = f"{ref.encode_ordinary(text)} {ref.encode(text, allowed_special='all')} hello world"
    assert out.stdout.strip() == expected
    assert pickle.loads(pickle.dumps(ref)).encode_ordinary(text) == ref.encode_ordinary(text)
