"""The example in docs/routing-and-cache.md is a valid config."""

from __future__ import annotations

import re
from pathlib import Path

from streams.config_validation import parse_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "routing-and-cache.md"


def test_the_documented_example_loads() -> None:
    (block,) = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)
    cfg = parse_config(block, source=str(DOC))
    assert [r.name for r in cfg.routing.rules] == ["chat-auto", "prompt-experiment"]
    assert cfg.cache.enabled and cfg.cache.coalesce
