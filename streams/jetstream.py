"""Connecting to NATS and creating the streams, idempotently, at start-up."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from streams.topology import StreamSpec, Topology

log = logging.getLogger("nexus.streams")


async def connect(url: str, *, name: str, **kwargs: Any) -> NATS:
    """A client that reconnects forever: a node must outlive a NATS restart."""
    opts: dict[str, Any] = {
        "name": name,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "connect_timeout": 2,
        "allow_reconnect": True,
    }
    opts.update(kwargs)
    return await nats.connect(url, **opts)


def _stream_config(spec: StreamSpec) -> StreamConfig:
    return StreamConfig(
        name=spec.name,
        description=spec.description,
        subjects=list(spec.subjects),
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        max_age=float(spec.max_age_s),
        max_bytes=spec.max_bytes,
        duplicate_window=float(spec.duplicate_window_s),
        num_replicas=spec.replicas,
    )


async def ensure_streams(js: JetStreamContext, topology: Topology) -> None:
    """Create every stream, or bring an existing one to the declared config."""
    for spec in topology.streams():
        cfg = _stream_config(spec)
        try:
            await js.stream_info(spec.name)
        except NotFoundError:
            await js.add_stream(cfg)
            log.info("created stream %s", spec.name)
        else:
            await js.update_stream(cfg)


async def delete_streams(js: JetStreamContext, topology: Topology) -> None:
    for spec in topology.streams():
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(spec.name)
