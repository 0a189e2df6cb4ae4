"""The dead-letter subject: where a consumer puts a message it cannot apply,
so that it never blocks the messages behind it and an operator can see it,
fix the cause and send it again.

One stream per installation, ``<PREFIX>_DEADLETTER``, on subjects
``<prefix>.deadletter.<consumer>.<code>``.  Each entry is the original
payload (the exact bytes, whatever they are) with headers saying where it
came from and why:

* ``Nexus-Consumer``: who gave up on it (``projections``, ``quota``,
  ``audit``, ``siem_<sink>``, ...);
* ``Nexus-Stream``, ``Nexus-Stream-Seq``, ``Nexus-Subject``: its place;
* ``Nexus-Code`` (``streams.poison.CODES``) and ``Nexus-Reason`` (our words,
  never the payload);
* ``Nexus-Disposition``: ``skipped`` (not applied) or ``sanitised``
  (applied with the changes in the reason; the original is kept here).

Entries are deduplicated by (consumer, stream, sequence) inside the
stream's duplicate window, so a crash between recording and acknowledging
does not record twice.  A per-subject limit keeps a flood of one kind from
pushing out the others.

A re-drive (``redrive``) publishes the original back on its subject with a
``Nexus-Redrive-For`` header naming the consumer that dead-lettered it:
that consumer applies it again, every other consumer passes it
(``streams.consumer``), so nothing is counted twice elsewhere.  The entry is
removed once the message is back on its stream; a consumer that still
cannot apply it records it again.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Any

import msgspec
import nats.errors
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError
from prometheus_client import Counter

from streams.pull import REDRIVE_HEADER, REDRIVE_ID_PREFIX
from streams.topology import Topology

log = logging.getLogger("nexus.deadletter")

SKIPPED = "skipped"
SANITISED = "sanitised"

DEAD_LETTERS = Counter(
    "nexus_dead_letters_total",
    "Messages a consumer put on the dead-letter subject (disposition: skipped = not applied, "
    "sanitised = applied with changes, original kept)",
    ["consumer", "code", "disposition"],
)
REDRIVES = Counter("nexus_dead_letter_redrives_total", "Dead letters sent back to their stream", ["consumer"])

_MAX_AGE_S = 30 * 24 * 3600
_PER_SUBJECT = 100_000
_REASON_MAX = 500
# Room left for the headers below the server's max_payload (1 MB default).
_HEADROOM = 2048


def stream_name(topology: Topology) -> str:
    return f"{topology.prefix}_DEADLETTER"


def subject(topology: Topology, consumer: str, code: str) -> str:
    return f"{topology.subject_root}.deadletter.{consumer}.{code}"


def stream_config(topology: Topology) -> StreamConfig:
    return StreamConfig(
        name=stream_name(topology),
        description="Messages a consumer could not apply, with where they came from and why",
        subjects=[f"{topology.subject_root}.deadletter.>"],
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        max_age=float(_MAX_AGE_S),
        max_msgs_per_subject=_PER_SUBJECT,
        duplicate_window=3600.0,
    )


async def ensure_stream(js: JetStreamContext, topology: Topology) -> None:
    try:
        await js.stream_info(stream_name(topology))
    except NotFoundError:
        await js.add_stream(stream_config(topology))


class DeadLetter(msgspec.Struct, frozen=True):
    dlq_seq: int
    consumer: str
    stream: str
    stream_seq: int
    subject: str
    code: str
    reason: str
    disposition: str
    at_ms: int
    event_id: str
    event_type: str
    data: bytes
    payload_kept: bool = True


class DeadLetters:
    """Records dead letters for one consumer."""

    def __init__(self, js: JetStreamContext, topology: Topology, consumer: str) -> None:
        self._js = js
        self._topology = topology
        self.consumer = consumer
        self._ready = False

    async def put(
        self,
        *,
        stream: str,
        seq: int,
        subject_: str,
        data: bytes,
        code: str,
        reason: str,
        disposition: str = SKIPPED,
        max_payload: int = 1024 * 1024,
    ) -> None:
        """Record one dead letter; returns once JetStream has stored it (the
        caller acknowledges the original only then).  Raises on NATS
        trouble: the caller holds the message and tries again."""
        if not self._ready:
            await ensure_stream(self._js, self._topology)
            self._ready = True
        headers = {
            "Nats-Msg-Id": f"{self.consumer}:{stream}:{seq}",
            "Nexus-Consumer": self.consumer,
            "Nexus-Stream": stream,
            "Nexus-Stream-Seq": str(seq),
            "Nexus-Subject": subject_,
            "Nexus-Code": code,
            "Nexus-Reason": _one_line(reason)[:_REASON_MAX],
            "Nexus-Disposition": disposition,
            "Nexus-At": str(time.time_ns() // 1_000_000),
        }
        if len(data) > max_payload - _HEADROOM:
            # Too big to copy with its headers: the original stays in its
            # stream (until its retention ends), the entry points at it.
            headers["Nexus-Payload"] = "omitted"
            data = b""
        await self._js.publish(subject(self._topology, self.consumer, code), data, headers=headers)
        DEAD_LETTERS.labels(self.consumer, code, disposition).inc()
        log.warning(
            "%s: stream %s seq %d dead-lettered (%s, %s): %s",
            self.consumer,
            stream,
            seq,
            code,
            disposition,
            _one_line(reason)[:200],
        )


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _event_facts(data: bytes) -> tuple[str, str]:
    with contextlib.suppress(msgspec.DecodeError, UnicodeDecodeError, AttributeError):
        value = msgspec.json.decode(data)
        if isinstance(value, dict):
            eid, etype = value.get("id"), value.get("type")
            return (eid if isinstance(eid, str) else ""), (etype if isinstance(etype, str) else "")
    return "", ""


def _entry(seq: int, headers: dict[str, Any], data: bytes) -> DeadLetter:
    event_id, event_type = _event_facts(data)
    return DeadLetter(
        dlq_seq=seq,
        consumer=str(headers.get("Nexus-Consumer", "")),
        stream=str(headers.get("Nexus-Stream", "")),
        stream_seq=int(headers.get("Nexus-Stream-Seq", 0) or 0),
        subject=str(headers.get("Nexus-Subject", "")),
        code=str(headers.get("Nexus-Code", "")),
        reason=str(headers.get("Nexus-Reason", "")),
        disposition=str(headers.get("Nexus-Disposition", SKIPPED)),
        at_ms=int(headers.get("Nexus-At", 0) or 0),
        event_id=event_id,
        event_type=event_type,
        data=data,
        payload_kept=headers.get("Nexus-Payload") != "omitted",
    )


async def get(js: JetStreamContext, topology: Topology, dlq_seq: int) -> DeadLetter | None:
    try:
        msg = await js.get_msg(stream_name(topology), dlq_seq)
    except NotFoundError:
        return None
    return _entry(dlq_seq, dict(msg.headers or {}), msg.data or b"")


async def entries(
    js: JetStreamContext,
    topology: Topology,
    *,
    consumer: str | None = None,
    code: str | None = None,
    limit: int | None = None,
) -> list[DeadLetter]:
    """The dead letters, oldest first, optionally of one consumer / code."""
    try:
        info = await js.stream_info(stream_name(topology))
    except NotFoundError:
        return []
    if not info.state.messages:
        return []
    out: list[DeadLetter] = []
    wanted = f"{topology.subject_root}.deadletter.{consumer or '*'}.{code or '*'}"
    seq = int(info.state.first_seq)
    last = int(info.state.last_seq)
    while seq <= last and (limit is None or len(out) < limit):
        try:
            # The next stored message at or after seq on the wanted
            # subjects: deleted entries and other consumers are skipped by
            # the server, not fetched one by one.
            msg = await js.get_msg(stream_name(topology), seq, subject=wanted, next=True)
        except NotFoundError:
            break
        if msg.seq is None:
            break
        out.append(_entry(msg.seq, dict(msg.headers or {}), msg.data or b""))
        seq = msg.seq + 1
    return out


async def redrive(
    js: JetStreamContext, topology: Topology, letters: Iterable[DeadLetter]
) -> tuple[list[DeadLetter], list[tuple[DeadLetter, str]]]:
    """Send each dead letter back on its subject for its consumer, and remove
    it.  Returns (sent, [(not sent, why)])."""
    sent: list[DeadLetter] = []
    failed: list[tuple[DeadLetter, str]] = []
    for dl in letters:
        data = dl.data
        if not dl.payload_kept:
            try:
                data = (await js.get_msg(dl.stream, dl.stream_seq)).data or b""
            except NotFoundError:
                failed.append((dl, f"its payload was not kept and {dl.stream} seq {dl.stream_seq} is gone"))
                continue
        if not dl.subject:
            failed.append((dl, "the entry does not say which subject it came from"))
            continue
        try:
            await js.publish(
                dl.subject,
                data,
                headers={
                    # A new id: the original's is inside the duplicate window
                    # of its stream for a while, and would be dropped.
                    # (It comes first: consumers recognise a re-drive by it.)
                    "Nats-Msg-Id": f"{REDRIVE_ID_PREFIX}{stream_name(topology)}:{dl.dlq_seq}",
                    REDRIVE_HEADER: dl.consumer,
                },
            )
        except (nats.errors.Error, OSError) as exc:
            failed.append((dl, f"cannot publish to {dl.subject}: {type(exc).__name__}: {exc}"))
            continue
        with contextlib.suppress(NotFoundError, nats.errors.Error):
            await js.delete_msg(stream_name(topology), dl.dlq_seq)
        REDRIVES.labels(dl.consumer).inc()
        sent.append(dl)
    return sent, failed


async def purge(js: JetStreamContext, topology: Topology, letters: Iterable[DeadLetter]) -> int:
    """Delete entries for good (the cause will not be fixed)."""
    n = 0
    for dl in letters:
        with contextlib.suppress(NotFoundError):
            await js.delete_msg(stream_name(topology), dl.dlq_seq)
            n += 1
    return n
