"""The block-rate rule's reader: ``hook.stage`` through the lean shared
consumer (``streams.consumer``), not a FastStream subscriber.

Why this one source is read differently: ``hook.stage`` carries one event
per stage of every request, the traffic's own volume, where the other
sources carry a handful an hour.  Measured on this project's machine
(``tests/benchmarks/alerts_stage_rate.py``): a FastStream handler cost
~134 us of CPU per event against ~2 us for the lean consumer reading,
decoding and acknowledging the same events, so at 1,000 requests/s the
FastStream path alone would take about a third of a core.  The rule itself
(``rules.BlockRates``) is a few dictionary updates per event.

The durable consumer keeps its position across restarts, starts from "new"
when created, and is deleted by the worker when no block-rate rule is
enabled.  Poison is dead-lettered as ``alerts``, like the worker's other
subscriptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import nats.errors
from nats.aio.client import Client as NATS

from streams import poison
from streams.consumer import Consumer, ConsumerGone, ConsumerSpec
from streams.events_compliance import StageDecision
from streams.tasks import stop_tasks
from streams.topology import Topology

log = logging.getLogger("nexus.alerts")

Observe = Callable[[StageDecision], Awaitable[None]]
_RETRY_S = 2.0


class StageLane:
    def __init__(self, nc: NATS, topology: Topology, durable: str, identity: str, observe: Observe) -> None:
        self._observe = observe
        self.consumer = Consumer(
            nc,
            ConsumerSpec(
                stream=topology.traffic_stream,
                name=durable,
                identity=identity,
                subjects=(topology.traffic_subject("hook.stage"),),
                durable=True,
                ack="explicit",
                description="alerts: the block-rate rule",
            ),
            topology,
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.open("new")
        self._task = asyncio.create_task(self._run(), name="alerts-stage-lane")

    async def stop(self) -> None:
        if self._task is not None:
            await stop_tasks(self._task)
            self._task = None
        await self.consumer.close()

    async def _run(self) -> None:
        while True:
            try:
                msgs = await self.consumer.pass_others(await self.consumer.take(1.0))
                for i, msg in enumerate(msgs):
                    try:
                        event, _ = poison.decode_event(msg.data)
                    except poison.Poison as exc:
                        await self.consumer.dead_letter(msg, exc.code, exc.reason)  # acknowledges it
                        continue
                    if not isinstance(event, StageDecision):
                        continue
                    try:
                        await self._observe(event)
                    except Exception as exc:  # NATS away while raising: these come back later
                        log.warning(
                            "alerts: the block-rate rule failed (%s); the events come back in %g s",
                            type(exc).__name__,
                            _RETRY_S,
                        )
                        await self.consumer.ack([m for m in msgs[:i]])
                        await self.consumer.nak(msgs[i:], delay_s=_RETRY_S)
                        break
                else:
                    await self.consumer.ack(msgs)
            except asyncio.CancelledError:
                raise
            except (ConsumerGone, ConnectionError, nats.errors.Error, OSError) as exc:
                log.warning("alerts: reading hook.stage: %s; reading again", exc)
                await self.consumer.close()
                await asyncio.sleep(_RETRY_S)
                with contextlib.suppress(ConsumerGone, ConnectionError, nats.errors.Error, OSError):
                    await self.consumer.open("new")
