"""Token estimates: tiktoken's real encodings, loaded with no network."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from adapters.canonical import ChatRequest, ImagePart, ImageURL, Message, TextPart
from ingress.quota.estimate import estimate_prompt_tokens, output_budget

ROOT = Path(__file__).resolve().parents[2]


def test_encodings_load_offline_from_a_fresh_cache(tmp_path: Path) -> None:
    # A fresh process whose sockets all fail: tiktoken must find its BPE
    # files in the cache we seeded, or it would try to download them.
    code = textwrap.dedent(
        """
        import socket
        def refuse(*a, **k):
            raise OSError("network disabled in this test")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        from ingress.quota.estimate import encoding
        for name in ("cl100k_base", "o200k_base"):
            print(name, encoding(name).encode_ordinary("hello world, tokenizers!"))
        """
    )
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(tmp_path / "tk")}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    # Reference ids from OpenAI's tokenizer for this text.
    assert "cl100k_base [15339, 1917, 11, 4037, 12509, 0]" in out.stdout
    assert "o200k_base [24912, 2375, 11, 6602, 24223, 0]" in out.stdout
    assert len(list((tmp_path / "tk").iterdir())) == 2


def test_chat_estimate_follows_openai_framing_and_rounds_up_elsewhere() -> None:
    req = ChatRequest(
        model="gpt-4o",
        messages=[
            Message(role="system", content="You are a helpful assistant."),
            Message(role="user", content="What is the capital of France?"),
        ],
    )
    # OpenAI: content tokens (6 + 7) + 3 per message + 3 reply priming.
    assert estimate_prompt_tokens(req, "openai", "gpt-4o") == 6 + 7 + 3 * 2 + 3
    # No offline Claude tokenizer: the estimate must lean high, never low.
    assert estimate_prompt_tokens(req, "anthropic") > estimate_prompt_tokens(req, "openai", "gpt-4o")
    with_image = ChatRequest(
        model="gpt-4o",
        messages=[
            Message(
                role="user",
                content=[
                    TextPart(text="what is this?"),
                    ImagePart(image_url=ImageURL(url="https://x/y.png")),
                ],
            )
        ],
    )
    assert estimate_prompt_tokens(with_image, "openai", "gpt-4o") > 1105


def test_output_budget_prefers_the_callers_limit() -> None:
    req = ChatRequest(model="m", messages=[], max_tokens=200, n=2)
    assert output_budget(req, 1000, 4096) == 400
    assert output_budget(ChatRequest(model="m", messages=[]), 1000, 4096) == 1000
    assert output_budget(ChatRequest(model="m", messages=[]), 0, 4096) == 4096


def test_stream_meter_counts_only_once_the_cap_could_be_near() -> None:
    from ingress.quota import StreamMeter
    from ingress.quota.estimate import count_text, counting_rule

    meter = StreamMeter(4096)
    deltas = ["Hello", " there", ", how", " can", " I", " help", "?"] * 10
    assert all(meter.add(d) for d in deltas)
    assert meter._tokens == 0 and meter._pending  # nothing counted: 70 deltas, far below 4,096
    # Read, the count is that of the text as a whole.
    assert meter.tokens == count_text("".join(deltas), counting_rule("openai"))
    # Near the cap it counts, and stops the stream at it.
    small = StreamMeter(20, "anthropic")
    sent = 0
    for _ in range(100):
        if not small.add(" word"):
            break
        sent += 1
    assert 12 <= sent < 20 and small.exhausted  # anthropic's factor 1.25 counts ahead
