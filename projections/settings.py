"""Where the projector reads from and writes to: defaults < environment <
flags (the CLI applies flags with ``dataclasses.replace``)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from streams.config import ConfigError, NexusConfig
from streams.topology import Topology

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_DUCKDB_PATH = "~/.nexus/analytics.duckdb"
STORES = ("postgres", "duckdb")
_PREFIX = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


@dataclass(frozen=True)
class ProjectorSettings:
    nats_url: str = DEFAULT_NATS_URL
    # None disables the store.
    postgres_dsn: str | None = None
    duckdb_path: str | None = DEFAULT_DUCKDB_PATH
    topology: Topology = field(default_factory=Topology)
    # Events per transaction at most, while catching up (a batch is written
    # as soon as the stream has nothing more, so this never delays a row).
    # DuckDB pays milliseconds per statement whatever the batch size: 20,000
    # events per batch project ~40 % faster than 5,000 for ~45 MB more
    # memory during a catch-up.  The fetch timeout bounds how long a partly
    # filled batch waits under light traffic (the row-visible latency).
    batch_size: int = 20_000
    fetch_timeout_s: float = 0.2
    name: str = "nexus-projector"

    @classmethod
    def load(
        cls, env: Mapping[str, str] | None = None, config: NexusConfig | None = None
    ) -> ProjectorSettings:
        """Defaults, then the config file's ``projections`` section, then the
        environment."""
        env = os.environ if env is None else env
        prefix = env.get("NEXUS_STREAM_PREFIX") or "NEXUS"
        if not _PREFIX.match(prefix):
            raise ConfigError("NEXUS_STREAM_PREFIX: letters, digits, '_' and '-' only (at most 32)")
        section = config.projections if config is not None else None
        if section is not None and section.batch_size < 1:
            raise ConfigError("projections.batch_size: must be at least 1")
        return cls(
            nats_url=env.get("NEXUS_NATS_URL") or DEFAULT_NATS_URL,
            postgres_dsn=env.get("NEXUS_POSTGRES_DSN") or None,
            duckdb_path=(
                env.get("NEXUS_DUCKDB_PATH")
                or (section.duckdb_path if section is not None else "")
                or DEFAULT_DUCKDB_PATH
            ),
            topology=Topology(prefix=prefix),
            batch_size=section.batch_size if section is not None else cls.batch_size,
        )

    def enabled_stores(self) -> list[str]:
        out = []
        if self.postgres_dsn:
            out.append("postgres")
        if self.duckdb_path:
            out.append("duckdb")
        return out
