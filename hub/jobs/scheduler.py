"""The scheduler: every Hub replica runs one; only the holder of the leader
lease (``hub.jobs.lease``) starts runs.

Each job has a slot in the jobs KV bucket (``job.<name>``): how many runs
were claimed, the last run and its status, the fence of the leader that
claimed it, and manual run requests waiting.  A run starts only after the
leader *claimed* it by compare-and-set on the slot's revision, so one due
run is claimed once however many replicas believe they lead; a slot claimed
under a larger fence makes an older leader step down instead of claiming.

Runs are recorded as ``admin.job_run`` events (running, progress,
succeeded / failed; ``abandoned`` for a run whose leader died before it
ended, written by the next leader) on the ADMIN stream: the audit chain
holds them, and the run history (``hub.jobs.history``) is their fold.  A
scheduled run is recorded when it ends, or as it reports progress; one
that succeeded having found nothing to do (``JobContext.idle``) and emitted
nothing is only counted in its slot (``quiet_runs``; its time and status
are the slot's last run as for any other).  A manual run is recorded from
its start, like a failed one at its end, always.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import msgspec
import nats.errors
from nats.js.errors import Error as JetStreamError
from nats.js.errors import KeyWrongLastSequenceError

from hub.commands import Command, DomainError
from hub.control import ControlPlane, Outcome
from hub.jobs.lease import Lease
from hub.jobs.registry import Job, JobContext, JobFailed, Registry, item_of
from hub.signin.kv import Bucket
from hub.views import view
from streams.events import Node, now_ms, uuid7
from streams.events_admin import AdminAction, JobRun
from streams.tasks import stop_tasks

log = logging.getLogger("nexus.hub.jobs")

MAX_WAITING = 10  # manual run requests queued per job


class Emitter(Protocol):
    """The Hub's admin-event publisher (its outbox keeps what NATS refuses)."""

    def emit(self, event: msgspec.Struct) -> None: ...


_canonical = msgspec.json.Encoder(order="sorted")


class Request(msgspec.Struct, frozen=True, kw_only=True):
    run_id: str
    actor: str
    at_ms: int


class Slot(msgspec.Struct, frozen=True, kw_only=True):
    runs: int = 0  # runs claimed so far
    fence: int = 0  # the lease fence of the last claim
    last_run_id: str = ""
    last_status: str = ""  # running | succeeded | failed | abandoned
    last_started_ms: int = 0
    last_finished_ms: int = 0
    holder: str = ""  # the replica that claimed the last run
    waiting: tuple[Request, ...] = ()
    quiet_runs: int = 0  # scheduled runs that found nothing to do: not recorded


class Busy(Exception):
    """Too many manual runs of a job are waiting already."""


def slot_key(job: str) -> str:
    return f"job.{job}"


class Scheduler:
    def __init__(
        self,
        registry: Registry,
        bucket: Bucket,
        control: ControlPlane,
        events: Emitter,
        node: Node,
        *,
        lease_ttl_s: float = 6.0,
        tick_s: float = 0.5,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.registry = registry
        self.bucket = bucket
        self.control = control
        self.events = events
        self.node = node
        self.lease = Lease(bucket, node.id, ttl_s=lease_ttl_s)
        self.tick_s = tick_s
        self.clock = clock
        self.running: dict[str, asyncio.Task[None]] = {}
        self._emitted: dict[str, int] = {}  # run id -> events emitted naming it, while it runs
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._poke = asyncio.Event()

    # --- life --------------------------------------------------------------------

    async def start(self) -> None:
        await self.bucket.kv()
        self._task = asyncio.create_task(self._loop(), name="hub-jobs")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await stop_tasks(self._task, within_s=5)
            self._task = None
        with contextlib.suppress(Exception):
            await stop_tasks(*self.running.values(), within_s=5)
        await self.lease.release()

    def leader(self) -> bool:
        return self.lease.held()

    async def _loop(self) -> None:
        next_lease = 0.0
        while not self._stopping.is_set():
            try:
                if time.monotonic() >= next_lease:
                    held = await self.lease.step()
                    next_lease = time.monotonic() + (self.lease.renew_every_s if held else self.tick_s * 2)
                if self.lease.held():
                    await self._schedule()
            except (nats.errors.Error, JetStreamError, OSError, TimeoutError) as exc:
                log.warning("jobs: scheduling failed (%s); retrying", type(exc).__name__)
            except Exception:
                # Never let the loop die: a dead loop stops renewing (the
                # lease lapses and a follower takes over) but also never
                # tries again.
                log.exception("jobs: scheduling failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self.tick_s)
            self._poke.clear()

    # --- claiming runs -----------------------------------------------------------

    async def read_slot(self, job: str) -> tuple[Slot, int]:
        slot, revision = await self.bucket.read(slot_key(job), Slot)
        return slot or Slot(), revision

    async def _schedule(self) -> None:
        for job in self.registry:
            if job.name in self.running or not self.lease.held():
                continue
            slot, revision = await self.read_slot(job.name)
            if slot.fence > self.lease.fence:
                self.lease.lost(f"job {job.name} was claimed under fence {slot.fence}")
                return
            now = self.clock()
            request = slot.waiting[0] if slot.waiting else None
            due = request is not None or now >= slot.last_started_ms + job.every_s * 1000
            if not due:
                continue
            run_id = request.run_id if request is not None else uuid7()
            claimed = Slot(
                runs=slot.runs + 1,
                fence=self.lease.fence,
                last_run_id=run_id,
                last_status="running",
                last_started_ms=now,
                holder=self.node.id,
                waiting=slot.waiting[1:] if request is not None else slot.waiting,
                quiet_runs=slot.quiet_runs,
            )
            if not self.lease.held():
                return
            kv = await self.bucket.kv()
            try:
                if revision:
                    await kv.update(slot_key(job.name), msgspec.json.encode(claimed), last=revision)
                else:
                    await kv.create(slot_key(job.name), msgspec.json.encode(claimed))
            except KeyWrongLastSequenceError:
                continue  # the slot moved (a request, another leader): look again next tick
            if slot.last_status == "running" and slot.last_run_id:
                # Its leader stopped before the run ended (we hold the lease now).
                self._record(
                    job,
                    slot.last_run_id,
                    slot.runs,
                    "abandoned",
                    fence=slot.fence,
                    started=slot.last_started_ms,
                    detail=f"its leader ({slot.holder}) stopped before it ended",
                )
            self.running[job.name] = asyncio.create_task(
                self._run(job, claimed, request), name=f"hub-job-{job.name}"
            )

    async def request(self, job: str, actor: str) -> str:
        """A manual run, asked on any replica: queued in the job's slot for
        the leader to claim; returns the run's id."""
        run_id = uuid7()

        def add(slot: Slot | None) -> Slot:
            slot = slot or Slot()
            if len(slot.waiting) >= MAX_WAITING:
                raise Busy(f"{len(slot.waiting)} runs of {job} are waiting already")
            req = Request(run_id=run_id, actor=actor, at_ms=now_ms())
            return msgspec.structs.replace(slot, waiting=(*slot.waiting, req))

        await self.bucket.change(slot_key(job), Slot, add)
        self._poke.set()
        return run_id

    # --- one run -----------------------------------------------------------------

    async def _run(self, job: Job, slot: Slot, request: Request | None) -> None:
        run_id, number = slot.last_run_id, slot.runs
        trigger, by = ("manual", request.actor) if request is not None else ("schedule", "")

        def record(status: str, **what: Any) -> None:
            self._record(
                job,
                run_id,
                number,
                status,
                fence=slot.fence,
                started=slot.last_started_ms,
                trigger=trigger,
                by=by,
                **what,
            )

        ctx = JobContext(
            job=job.name,
            run_id=run_id,
            fence=slot.fence,
            control=self.control,
            clock=self.clock,
            audit=lambda cmd, resource, before, out: self._audit(job, run_id, cmd, resource, before, out),
            report=lambda c: record("running", stats=c.stats),
            holds_lease=self.lease.held,
            number=number,
            note=lambda resource, what: self._note(job, run_id, resource, what),
        )
        self._emitted[run_id] = 0
        if request is not None:  # a person waits for it: in the history from its start
            record("running")
        status, detail, error = "succeeded", "", ""
        try:
            detail = await job.run(ctx)
        except asyncio.CancelledError:
            status, error = "failed", "the Hub stopped during the run"
        except JobFailed as exc:
            status, error = "failed", str(exc)
        except (DomainError, nats.errors.Error, JetStreamError, OSError, TimeoutError) as exc:
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        except Exception as exc:
            log.exception("jobs: %s (run %s) failed", job.name, run_id)
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        finished = self.clock()
        emitted = self._emitted.pop(run_id, 0)
        quiet = request is None and status == "succeeded" and ctx.idle and not emitted
        if not quiet:
            record(status, finished=finished, stats=ctx.stats, detail=detail, error=error)
        try:
            await self.bucket.change(
                slot_key(job.name), Slot, lambda s: _finished(s, run_id, status, finished, quiet=quiet)
            )
        except (nats.errors.Error, JetStreamError, OSError, TimeoutError) as exc:
            log.warning("jobs: the end of %s run %s was not noted in its slot (%s)", job.name, run_id, exc)
        finally:
            self.running.pop(job.name, None)

    def _record(
        self,
        job: Job,
        run_id: str,
        number: int,
        status: str,
        *,
        fence: int,
        started: int,
        finished: int = 0,
        stats: dict[str, int] | None = None,
        detail: str = "",
        error: str = "",
        trigger: str = "",
        by: str = "",
    ) -> None:
        self._emit(
            run_id,
            JobRun(
                node=self.node,
                request_id=run_id,
                job=job.name,
                run_id=run_id,
                run_number=number,
                status=status,
                trigger=trigger,
                requested_by=by,
                fence=fence,
                started_at_ms=started,
                finished_at_ms=finished,
                stats=dict(stats or {}),
                detail=detail[:1000],
                error=error[:1000],
            ),
        )

    def _emit(self, run_id: str, event: msgspec.Struct) -> None:
        if run_id in self._emitted:
            self._emitted[run_id] += 1
        self.events.emit(event)

    def _audit(self, job: Job, run_id: str, cmd: Command, resource: str, before: Any, out: Outcome) -> None:
        """A change a job made, in the admin trail like an admin's."""
        after = out.state.get(*item_of(resource))
        self._emit(
            run_id,
            AdminAction(
                node=self.node,
                request_id=run_id,
                actor=f"system:job/{job.name}",
                action=f"job:{job.name}",
                resource=resource,
                decision="system",
                method="JOB",
                route=f"job/{job.name}",
                status=200,
                outcome="ok" if out.seq else "unchanged",
                command_id=cmd.id if out.seq else "",
                config_seq=out.seq,
                # Of the item's public view (a key's status is not in its spec).
                before_sha256=_sha256(view(before)) if before is not None else "",
                after_sha256=_sha256(view(after)) if after is not None else "",
            ),
        )

    def _note(self, job: Job, run_id: str, resource: str, what: str) -> None:
        self._emit(
            run_id,
            AdminAction(
                node=self.node,
                request_id=run_id,
                actor=f"system:job/{job.name}",
                action=f"job:{job.name}",
                resource=resource,
                decision="system",
                method="JOB",
                route=f"job/{job.name}",
                status=200,
                outcome=what,
            ),
        )

    def status(self) -> dict[str, Any]:
        current = self.lease.current
        return {
            "replica": self.node.id,
            "leader": current.holder if current is not None else "",
            "fence": current.fence if current is not None else 0,
            "this_replica_leads": self.leader(),
        }


def _sha256(value: Any) -> str:
    return hashlib.sha256(_canonical.encode(value)).hexdigest()


def _finished(slot: Slot | None, run_id: str, status: str, at: int, *, quiet: bool) -> Slot | None:
    if slot is None or slot.last_run_id != run_id:
        return None  # a newer run was claimed meanwhile
    return msgspec.structs.replace(
        slot, last_status=status, last_finished_ms=at, quiet_runs=slot.quiet_runs + int(quiet)
    )
