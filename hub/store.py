"""The CONFIG stream as an event store: append with the two expectations,
read from a sequence on.

``append`` sets ``Nats-Msg-Id`` (the command id: a retry inside the
duplicate window is stored once and answered with the first one's
sequence), ``Nats-Expected-Last-Subject-Sequence`` (the aggregate's version
the change was decided against: an edit of the same item in between is
refused) and ``Nats-Expected-Last-Sequence`` (the stream position the state
was at: a change to anything else in between makes the writer re-decide
against the newer state, so invariants that span aggregates hold with
several writers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import NamedTuple

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError, NotFoundError

from streams.events_config import ConfigEvent, encode_event
from streams.jetstream import ensure_control_streams
from streams.topology import Topology

log = logging.getLogger("nexus.hub")

_WRONG_LAST_SEQUENCE = 10071  # JSStreamWrongLastSequenceErrF


class Appended(NamedTuple):
    seq: int
    duplicate: bool  # the command id was already stored (at ``seq``)


class WrongSequence(Exception):
    """The stream, or the aggregate's subject, moved since the decision."""


class ConfigStore:
    def __init__(self, js: JetStreamContext, topology: Topology) -> None:
        self._js = js
        self.topology = topology

    async def ensure(self) -> None:
        await ensure_control_streams(self._js, self.topology)

    async def append(
        self, event: ConfigEvent, *, msg_id: str, expected_subject_seq: int, expected_stream_seq: int
    ) -> Appended:
        subject = self.topology.config_subject(event.aggregate, event.aggregate_id)
        headers = {
            "Nats-Msg-Id": msg_id,
            "Nats-Expected-Last-Subject-Sequence": str(expected_subject_seq),
            "Nats-Expected-Last-Sequence": str(expected_stream_seq),
        }
        try:
            ack = await self._js.publish(
                subject, encode_event(event), stream=self.topology.config_stream, headers=headers
            )
        except APIError as exc:
            if exc.err_code == _WRONG_LAST_SEQUENCE:
                raise WrongSequence(exc.description or "wrong last sequence") from None
            raise
        return Appended(int(ack.seq), bool(ack.duplicate))

    async def last_seq(self) -> int:
        info = await self._js.stream_info(self.topology.config_stream)
        return int(info.state.last_seq)

    async def read(
        self,
        from_seq: int = 1,
        *,
        until: int | None = None,
        batch: int = 1000,
        stop: asyncio.Event | None = None,
    ) -> AsyncIterator[tuple[int, bytes]]:
        """(sequence, payload) from ``from_seq`` on, in order.  With
        ``until`` it ends there; without it, it follows the stream until
        ``stop`` is set, recreating its consumer after any error at the next
        sequence.  (``stop`` rather than a cancel: nats-py's fetch can
        swallow a cancellation.)"""
        nxt = max(1, from_seq)
        stopping = stop or asyncio.Event()
        while (until is None or nxt <= until) and not stopping.is_set():
            psub = None
            try:
                psub = await self._consumer(nxt)
                while (until is None or nxt <= until) and not stopping.is_set():
                    want = batch if until is None else min(batch, until - nxt + 1)
                    try:
                        msgs = await psub.fetch(want, timeout=1.0)
                    except TimeoutError:
                        continue
                    for m in msgs:
                        seq = m.metadata.sequence.stream
                        if seq < nxt:
                            continue
                        nxt = seq + 1
                        yield seq, m.data
            except (nats.errors.Error, OSError, APIError) as exc:
                log.warning(
                    "hub: reading the CONFIG stream failed (%s); resuming at %d", type(exc).__name__, nxt
                )
                await asyncio.sleep(0.5)
            finally:
                if psub is not None:
                    with contextlib.suppress(Exception):
                        await psub.unsubscribe()

    async def _consumer(self, start: int) -> JetStreamContext.PullSubscription:
        cfg = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=60.0,
        )
        return await self._js.pull_subscribe(
            self.topology.config_wildcard, durable=None, stream=self.topology.config_stream, config=cfg
        )

    async def exists(self) -> bool:
        try:
            await self._js.stream_info(self.topology.config_stream)
        except NotFoundError:
            return False
        return True
