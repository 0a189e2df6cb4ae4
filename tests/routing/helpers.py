"""A small config with routed models, built through the real loader."""

from __future__ import annotations

from typing import Any

import msgspec

from streams.config import NexusConfig
from streams.config_validation import parse_config


def routing_config(
    strategy: dict[str, Any], *, extra_rules: list[dict[str, Any]] | None = None
) -> NexusConfig:
    config = {
        "orgs": [{"id": "acme"}],
        "projects": [{"id": "web", "org": "acme"}],
        "providers": [
            {"name": "p1", "base_url": "http://127.0.0.1:1/v1", "allow_private_network": True},
            {"name": "p2", "base_url": "http://127.0.0.1:2/v1", "allow_private_network": True},
        ],
        "models": [
            {"name": "a", "provider": "p1"},
            {"name": "b", "provider": "p1"},
            {"name": "c", "provider": "p2"},
            {"name": "d", "provider": "p2"},
        ],
        "routing": {"rules": [{"name": "r", "match": ["auto"], "strategy": strategy}, *(extra_rules or [])]},
    }
    return parse_config(msgspec.json.encode(config))
