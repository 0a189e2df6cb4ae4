"""Where the projector reads from and writes to: the process settings
(``streams.settings``: defaults < settings file < environment < flags), with
the config file's ``projections`` section under them for what it holds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.config import NexusConfig
from streams.config_base import ConfigError
from streams.settings import DEFAULT_NATS_URL, load_settings
from streams.topology import Topology

DEFAULT_DUCKDB_PATH = "~/.nexus/analytics.duckdb"
STORES = ("postgres", "duckdb")


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
        cls,
        env: Mapping[str, str] | None = None,
        config: NexusConfig | None = None,
        flags: Mapping[str, Any] | None = None,
    ) -> ProjectorSettings:
        """Defaults, then the config file's ``projections`` section, then the
        process settings (their file, the environment, ``flags``)."""
        settings = load_settings(flags, env=env)
        section = config.projections if config is not None else None
        if section is not None and section.batch_size < 1:
            raise ConfigError("projections.batch_size: must be at least 1")
        return cls(
            nats_url=settings.nats,
            postgres_dsn=settings.postgres_dsn or None,
            duckdb_path=(
                settings.duckdb_path
                or (section.duckdb_path if section is not None else "")
                or DEFAULT_DUCKDB_PATH
            ),
            topology=Topology(prefix=settings.stream_prefix),
            batch_size=section.batch_size if section is not None else cls.batch_size,
        )

    def enabled_stores(self) -> list[str]:
        out = []
        if self.postgres_dsn:
            out.append("postgres")
        if self.duckdb_path:
            out.append("duckdb")
        return out
