"""The job table: what runs, how often, and what a run may reach.

Registering a job is one call, from anywhere that holds the registry (the
Hub's own jobs in ``hub.jobs.standard``; another part of the Hub adds its
periodic work the same way)::

    registry.add("drift-repush", every_s=10, run=repush, description="...")

A job is an ``async def run(ctx) -> str`` (the returned line is the run's
detail; a run that found nothing to do sets ``ctx.idle``).  It changes
state only through ``ctx.execute`` (a command, decided like an admin's,
audited with the job as actor) and counts what it did with ``ctx.count`` /
``ctx.progress``.  A run may be repeated after a leader
dies mid-run, so a job must be idempotent: ``ctx.command_id(...)`` gives the
same command id for the same change, which JetStream stores once.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from hub.commands import Command
from hub.control import ControlPlane, Outcome
from hub.state import HubState

_NAME = re.compile(r"^[a-z][a-z0-9-]{1,62}$")


@dataclass
class JobContext:
    """What one run sees: the control state, the clock (injectable), and
    the ways to record what it did."""

    job: str
    run_id: str
    fence: int
    control: ControlPlane
    clock: Callable[[], int]  # wall clock, ms
    # (command, resource NRN, the item before, the outcome) -> an audit
    # record (the scheduler's)
    audit: Callable[[Command, str, Any, Outcome], None]
    report: Callable[[JobContext], None]  # progress: a 'running' record (throttled)
    holds_lease: Callable[[], bool]
    number: int = 0  # the n-th run of this job claimed, across replicas
    # (resource NRN, what was done) -> an audit record, for a change that is
    # not a command (a record removed from a KV bucket)
    note: Callable[[str, str], None] = lambda resource, what: None
    stats: dict[str, int] = field(default_factory=dict)
    # Set by a run that found nothing to do and did nothing: a scheduled one
    # that succeeded is then left out of the ADMIN stream (the job's slot
    # counts it), so a job every 10 s is not ~17,000 records a day that say
    # nothing.  A run that failed, was asked for by a person, or emitted
    # anything (an audited change, a progress report) is recorded anyway.
    idle: bool = False
    _reported: float = 0.0

    @property
    def actor(self) -> str:
        return f"system:job/{self.job}"

    @property
    def state(self) -> HubState:
        return self.control.state

    def now_ms(self) -> int:
        return self.clock()

    def command_id(self, *parts: object) -> str:
        """The same change gets the same id in every run and on every
        replica: a repeated run's command is stored once."""
        return ":".join(("job", self.job, *(str(p) for p in parts)))[:128]

    def envelope(self, *parts: object) -> dict[str, Any]:
        return {
            "id": self.command_id(*parts),
            "actor": self.actor,
            "at_ms": self.clock(),
            "request_id": self.run_id,
        }

    async def execute(self, cmd: Command, resource: str) -> Outcome:
        """Decide and store ``cmd``, the change to the item ``resource``
        names (its NRN); the change is audited (an ``admin.action`` record
        naming the job, the resource and the item's digests before and
        after)."""
        agg, rid = item_of(resource)
        before = self.control.state.get(agg, rid)
        out = await self.control.execute(cmd)
        self.audit(cmd, resource, before, out)
        return out

    def count(self, name: str, n: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + n

    def progress(self, **counts: int) -> None:
        """Set counts and publish a 'running' record (at most every second)."""
        self.stats.update(counts)
        now = time.monotonic()
        if now - self._reported >= 1.0:
            self._reported = now
            self.report(self)


class JobFailed(Exception):
    """A run that could not do its work, for a reason its message says (no
    traceback in the log: the run history holds the message)."""


def item_of(resource: str) -> tuple[str, str]:
    """(aggregate, id) of an item's NRN (``nrn:nexus:<service>:<org>:<type>/<id>``;
    an id's ':' is written '=' in an NRN)."""
    rtype, _, rid = resource.rsplit(":", 1)[-1].partition("/")
    return rtype, rid.replace("=", ":")


Run = Callable[[JobContext], Awaitable[str]]


@dataclass(frozen=True)
class Job:
    name: str
    every_s: float
    run: Run
    description: str = ""


class Registry:
    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}

    def add(self, name: str, *, every_s: float, run: Run, description: str = "") -> Job:
        if not _NAME.match(name):
            raise ValueError(f"job name {name!r}: lower-case letters, digits and '-'")
        if every_s <= 0:
            raise ValueError(f"job {name}: every_s must be positive")
        if name in self._jobs:
            raise ValueError(f"job {name!r} is registered already")
        job = self._jobs[name] = Job(name, every_s, run, description)
        return job

    def get(self, name: str) -> Job | None:
        return self._jobs.get(name)

    def __iter__(self) -> Iterator[Job]:
        return iter(sorted(self._jobs.values(), key=lambda j: j.name))

    def __len__(self) -> int:
        return len(self._jobs)
