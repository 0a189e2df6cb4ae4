"""Connecting to NATS and creating the streams, idempotently, at start-up."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from streams.topology import StreamSpec, Topology

log = logging.getLogger("nexus.streams")


_last_said: dict[str, float] = {}


async def say_nats_error(exc: Exception) -> None:
    """nats-py's error callback, quiet: its default logs a whole traceback
    for every failed reconnect (twice a second while NATS is away).  One
    line per kind of error a minute; whoever uses the client reports what
    it means for them."""
    kind = type(exc).__name__
    now = time.monotonic()
    if now - _last_said.get(kind, -math.inf) >= 60.0:
        _last_said[kind] = now
        log.warning("NATS: %s (%s); reconnecting", kind, str(exc)[:120] or "no detail")


async def connect(url: str, *, name: str, **kwargs: Any) -> NATS:
    """A client that reconnects forever: a node must outlive a NATS restart."""
    opts: dict[str, Any] = {
        "name": name,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "connect_timeout": 2,
        "allow_reconnect": True,
        "error_cb": say_nats_error,
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
    """Create every event stream, or bring an existing one to the declared config."""
    await ensure_specs(js, topology.streams())


async def ensure_control_streams(js: JetStreamContext, topology: Topology) -> None:
    """The Hub's CONFIG stream (only the Hub and its tools need it)."""
    await ensure_specs(js, topology.control_streams())


async def ensure_specs(js: JetStreamContext, specs: list[StreamSpec]) -> None:
    for spec in specs:
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
