"""The gateway as a thing of the fleet (``hub.fleet``): what it says it
runs (its posture, in every report) and the fleet keys it applies.

Keys it applies (from its type's template or its own overrides):

- ``log_level``: ``debug``, ``info``, ``warning`` or ``error``: the level of
  this process's log (e.g. turned up on one node while chasing a problem,
  with the override's expiry turning it down again).

Any other key is reported ``unsupported``: the Hub shows it pending rather
than pretending the node runs it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from streams.config import NexusConfig
from streams.fleet_wire import KeyOutcome, Posture, software_version, value_digest

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class GatewayThing:
    """Fed what the gateway applied; answers its posture and applies keys."""

    def __init__(self) -> None:
        self.config: NexusConfig | None = None
        self.revision = 0
        self.applied_at_ms = 0

    def applied(self, config: NexusConfig, revision: int) -> None:
        self.config, self.revision, self.applied_at_ms = config, revision, _now_ms()

    def posture(self) -> Posture:
        out: Posture = {
            "software_version": software_version(),
            "log_level": logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower(),
        }
        cfg = self.config
        if cfg is None:
            return out
        out.update(
            {
                "revision": self.revision,
                "config_age_s": round((_now_ms() - self.applied_at_ms) / 1000, 1),
                "enabled.hooks": cfg.hooks.enabled,
                "hooks": sum(1 for h in cfg.hooks.pipeline if h.enabled),
                "kill_switch": cfg.hooks.kill_switch.engaged,
                "enabled.cache": cfg.cache.enabled,
                "enabled.semantic_cache": cfg.cache.enabled and cfg.cache.semantic.enabled,
                "quotas": len(cfg.quotas.budgets) + len(cfg.quotas.rate_limits),
                "providers": len(cfg.providers),
                "virtual_keys": len(cfg.virtual_keys),
            }
        )
        return out

    async def apply_keys(self, keys: dict[str, Any]) -> dict[str, KeyOutcome]:
        out: dict[str, KeyOutcome] = {}
        for key, value in keys.items():
            if key == "log_level":
                level = _LEVELS.get(str(value).lower()) if isinstance(value, str) else None
                if level is None:
                    out[key] = KeyOutcome(status="failed", error=f"one of {', '.join(_LEVELS)}")
                    continue
                logging.getLogger().setLevel(level)
                out[key] = KeyOutcome(status="applied", digest=value_digest(value), at_ms=_now_ms())
            else:
                out[key] = KeyOutcome(status="unsupported", error="the gateway does not apply this key")
        return out
