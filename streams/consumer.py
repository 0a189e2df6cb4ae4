"""The one consumer helper: every worker that reads a stream (the projection
lanes, the quota processor, the audit trail, the SIEM forwarder, the
reconciler and those to come) reads it through a ``Consumer``.

What it does, once, for all of them:

* creates, binds or re-creates the JetStream consumer (durable or
  ephemeral, from a start sequence), and deletes an ephemeral one after use;
* reads it through the lean pull reader (``streams.pull`` on the wire core
  ``streams.natswire``), falling back to nats-py where the wire core does
  not speak the server's setup; acknowledgements go back the same way;
* notices a consumer that vanished (a NATS restart drops ephemeral ones,
  a pull against it just never answers) and a reader gone silent on a
  half-open socket, and says so (``ConsumerGone`` / ``ConnectionError``)
  so the worker re-opens from its own position;
* passes re-driven messages meant for another consumer;
* records dead letters (``streams.deadletter``) and, through ``isolate``,
  finds the one message in a batch that a store refuses, so that a poison
  message costs a dead letter, never the lane.

Why a lean pull loop and not FastStream subscribers for these workers: the
projection lanes fold and commit batches of up to 20,000 events in stream
order (~85k events/s into Postgres, measured); the audit chain needs one
writer appending in stream order; a SIEM sink outage must hold its batch;
FastStream's per-message handlers cost ~1 ms of CPU per event on this
project's machine against ~0.1 ms here.  New, low-volume event workers are
FastStream apps (``streams.faststream_app``); this helper keeps the
measured paths lean, in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import nats.errors
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.errors import NotFoundError

from streams import deadletter
from streams.pull import ACK, NAK, PROGRESS, PULL_CHUNK, TERM, ConsumerGone, Msg, Puller, open_puller
from streams.topology import Topology

log = logging.getLogger("nexus.consumer")

AckMode = Literal["none", "all", "explicit"]
Start = int | Literal["all", "new"]

# After this long without a message, ask the server whether our consumer
# still exists and whether messages wait for it.
PROBE_AFTER_IDLE_S = 2.0

__all__ = ["PULL_CHUNK", "ConsumerGone", "Msg"]


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    stream: str
    # The durable name, or the prefix of an ephemeral consumer's name.
    name: str
    # Who this consumer is in dead letters and re-drives ("projections",
    # "quota", "audit", "siem_<sink>"): letters, digits, "_" and "-".
    identity: str
    subjects: tuple[str, ...] = ()  # filter subjects; empty = the whole stream
    durable: bool = True
    ack: AckMode = "explicit"
    ack_wait_s: float = 30.0
    max_ack_pending: int = 1000
    window: int = PULL_CHUNK  # messages requested or unread at most
    description: str = ""


class Consumer:
    def __init__(self, nc: NATS, spec: ConsumerSpec, topology: Topology) -> None:
        self._nc = nc
        self.js = nc.jetstream()
        self.spec = spec
        self.deadletters = deadletter.DeadLetters(self.js, topology, spec.identity)
        self.name = spec.name
        self._puller: Puller | None = None
        self._idle_since = time.monotonic()
        self._stalled = 0

    @property
    def stream(self) -> str:
        return self.spec.stream

    # --- lifecycle --------------------------------------------------------

    def _config(self, name: str, start: Start) -> ConsumerConfig:
        s = self.spec
        if isinstance(start, int):
            deliver, opt_start = DeliverPolicy.BY_START_SEQUENCE, max(start, 1)
        else:
            deliver, opt_start = (DeliverPolicy.ALL if start == "all" else DeliverPolicy.NEW), None
        subjects = list(s.subjects)
        config = ConsumerConfig(
            deliver_policy=deliver,
            opt_start_seq=opt_start,
            ack_policy={"none": AckPolicy.NONE, "all": AckPolicy.ALL, "explicit": AckPolicy.EXPLICIT}[s.ack],
            description=s.description or None,
            filter_subject=subjects[0] if len(subjects) == 1 else None,
            filter_subjects=subjects if len(subjects) > 1 else None,
        )
        if s.ack != "none":
            config.ack_wait = s.ack_wait_s
            config.max_ack_pending = s.max_ack_pending
        if s.durable:
            config.durable_name = name
        else:
            config.name = name
            # An ephemeral consumer lives in memory and goes away by itself
            # when nobody reads it (a crashed worker leaves nothing behind).
            config.inactive_threshold = 30.0
            config.mem_storage = True
        return config

    async def open(self, start: Start = "all", *, reset: bool = False) -> None:
        """Create (or bind) the consumer and start reading.  A durable one
        that exists is bound as it is unless ``reset``, which re-creates it
        at ``start`` (a worker whose own store holds the position)."""
        s = self.spec
        if s.durable:
            self.name = s.name
            info: ConsumerInfo | None = None
            with contextlib.suppress(NotFoundError):
                info = await self.js.consumer_info(s.stream, s.name)
            if reset and info is not None:
                with contextlib.suppress(NotFoundError):
                    await self.js.delete_consumer(s.stream, s.name)
            if reset or info is None:
                await self.js.add_consumer(s.stream, config=self._config(s.name, start))
            else:
                await self._refilter(info)
        else:
            self.name = f"{s.name}-{uuid.uuid4().hex[:12]}"
            await self.js.add_consumer(s.stream, config=self._config(self.name, start))
        try:
            self._puller = await open_puller(self._nc, s.stream, self.name, window=s.window)
        except BaseException:
            if not s.durable:
                await quietly(self.js.delete_consumer(s.stream, self.name))
            raise
        self._idle_since = time.monotonic()
        self._stalled = 0

    async def _refilter(self, info: ConsumerInfo) -> None:
        """A durable consumer made by an older version with other filter
        subjects (a worker that now reads one more event type): update it
        in place, keeping its position."""
        want = sorted(self.spec.subjects)
        cfg = info.config
        have = sorted(cfg.filter_subjects or ([cfg.filter_subject] if cfg.filter_subject else []))
        if want == have:
            return
        cfg.filter_subject = want[0] if len(want) == 1 else None
        cfg.filter_subjects = want if len(want) > 1 else None
        await self.js.add_consumer(self.spec.stream, config=cfg)
        reads = ", ".join(want) or "everything"
        log.info("%s: consumer %s now reads %s", self.spec.identity, self.name, reads)

    async def close(self) -> None:
        """Stop reading; an ephemeral consumer is deleted, a durable one
        keeps its position on the server."""
        puller, self._puller = self._puller, None
        if puller is not None:
            await quietly(puller.stop())
        if not self.spec.durable:
            await quietly(self.js.delete_consumer(self.spec.stream, self.name))

    async def info(self) -> ConsumerInfo:
        info: ConsumerInfo = await self.js.consumer_info(self.spec.stream, self.name)
        return info

    # --- reading ----------------------------------------------------------

    async def take(self, wait_s: float) -> list[Msg]:
        """The messages that have arrived (waiting up to ``wait_s`` when none
        has).  Raises ``ConsumerGone`` when the consumer no longer exists and
        ``ConnectionError`` when the reader lost its connection or went
        silent while messages wait."""
        if self._puller is None:
            raise ConnectionError("the consumer is not open")
        msgs = await self._puller.take(wait_s)
        now = time.monotonic()
        if msgs:
            self._idle_since = now
            self._stalled = 0
            return msgs
        if now - self._idle_since > PROBE_AFTER_IDLE_S:
            try:
                info = await self.info()
            except NotFoundError:
                raise ConsumerGone(f"consumer {self.name} on {self.spec.stream} no longer exists") from None
            # Messages wait for us and the consumer may deliver them, yet
            # nothing arrived since the last probe either: the reader's
            # connection or its pull requests are gone without a word.
            can_deliver = self.spec.ack == "none" or (info.num_ack_pending or 0) < self.spec.max_ack_pending
            self._stalled = self._stalled + 1 if (info.num_pending and can_deliver) else 0
            if self._stalled >= 2:
                raise ConnectionError(f"pull reader stalled with {info.num_pending} messages pending")
            self._idle_since = time.monotonic()
        return msgs

    def mine(self, msg: Msg) -> bool:
        """False for a message re-driven for another consumer."""
        return not msg.redrive_for or msg.redrive_for == self.spec.identity

    async def pass_others(self, msgs: list[Msg]) -> list[Msg]:
        """The messages for this consumer; re-drives for others are
        acknowledged (explicit acks) and left out."""
        if not any(m.redrive_for for m in msgs):
            return msgs
        mine = [m for m in msgs if self.mine(m)]
        if self.spec.ack == "explicit":
            await self.ack([m for m in msgs if not self.mine(m)])
        return mine

    # --- acknowledging ----------------------------------------------------

    async def _send(self, msgs: Sequence[Msg], body: bytes) -> None:
        if self.spec.ack == "none" or not msgs or self._puller is None:
            return
        # A lost acknowledgement means a redelivery, which every consumer
        # here handles (checkpoints, event ids): never worth failing over.
        with contextlib.suppress(ConnectionError, nats.errors.Error, OSError):
            await self._puller.acknowledge([m.reply for m in msgs], body)

    async def ack(self, msgs: Sequence[Msg]) -> None:
        await self._send(msgs, ACK)

    async def ack_through(self, msg: Msg) -> None:
        """AckPolicy ALL: acknowledges ``msg`` and everything before it."""
        await self._send([msg], ACK)

    async def nak(self, msgs: Sequence[Msg], delay_s: float = 0.0) -> None:
        body = NAK if delay_s <= 0 else b'-NAK {"delay": %d}' % int(delay_s * 1e9)
        await self._send(msgs, body)

    async def progress(self, msgs: Sequence[Msg]) -> None:
        """Still working on these: restart their ack wait."""
        await self._send(msgs, PROGRESS)

    async def term(self, msgs: Sequence[Msg]) -> None:
        await self._send(msgs, TERM)

    # --- dead letters -----------------------------------------------------

    async def dead_letter(
        self, msg: Msg, code: str, reason: str, *, disposition: str = deadletter.SKIPPED
    ) -> None:
        """Record ``msg`` on the dead-letter subject (retrying a few times on
        NATS trouble, then raising ``ConnectionError``).  A skipped message
        is acknowledged here for explicit-ack consumers; others move past it
        by their own position."""
        delay = 0.2
        for attempt in range(6):
            try:
                await self.deadletters.put(
                    stream=self.spec.stream,
                    seq=msg.seq,
                    subject_=msg.subject.decode(errors="replace"),
                    data=msg.data,
                    code=code,
                    reason=reason,
                    disposition=disposition,
                )
                break
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                if attempt == 5:
                    raise ConnectionError(f"cannot record a dead letter: {type(exc).__name__}") from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        if disposition == deadletter.SKIPPED and self.spec.ack == "explicit":
            await self.ack([msg])


_T = TypeVar("_T")

# After this many items refused one by one without any item of the batch
# going through in between, the store (not the events) is the problem:
# stop dead-lettering and let the worker retry.
_MAX_REFUSED_IN_A_ROW = 16


class StoreProblem(Exception):
    """Every item tried alone was refused: not a poison message."""


async def isolate(
    items: Sequence[_T],
    apply: Callable[[Sequence[_T]], Awaitable[object]],
    refuses: Callable[[BaseException], bool],
    poisoned: Callable[[_T, BaseException], Awaitable[None]],
) -> int:
    """Apply ``items``; when the store refuses them for what they contain
    (``refuses(exc)``), apply halves, then quarters, ..., until each refused
    item is alone, and hand those to ``poisoned`` (the dead-letter subject)
    before anything after them is applied.  ``apply`` must be atomic and
    idempotent (a store transaction with its checkpoint).  Other errors
    propagate.  Returns how many items were refused."""
    refused = 0
    in_a_row = 0

    async def run(part: Sequence[_T]) -> None:
        nonlocal refused, in_a_row
        try:
            await apply(part)
            in_a_row = 0
            return
        except Exception as exc:
            if not refuses(exc):
                raise
            if len(part) == 1:
                in_a_row += 1
                if in_a_row > _MAX_REFUSED_IN_A_ROW:
                    raise StoreProblem(
                        f"{in_a_row} items in a row refused: {type(exc).__name__}: {exc}"
                    ) from exc
                refused += 1
                await poisoned(part[0], exc)
                return
        mid = len(part) // 2
        await run(part[:mid])
        await run(part[mid:])

    await run(items)
    return refused


async def quietly(aw: Awaitable[object]) -> None:
    with contextlib.suppress(TimeoutError, NotFoundError, nats.errors.Error, OSError, ConnectionError):
        await aw
