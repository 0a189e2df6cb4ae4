"""The scheduler's admin API: the jobs (schedule, last run, leader), a
job's run history (the Postgres read model), and a manual run now.

Any replica answers: the job slots and the lease are in the shared jobs
bucket; a manual run is queued in the job's slot and started by whichever
replica leads (202 with the run's id; its progress shows in the history).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg
import msgspec
from aiohttp import web

from hub.api.errors import ApiError
from hub.api.http import Call, json_response
from hub.api.pages import limit_of
from hub.iam.actions import resource_nrn
from hub.jobs import history
from hub.jobs.scheduler import Busy, Scheduler


class JobView(msgspec.Struct, kw_only=True):
    name: str
    description: str
    every_s: float
    runs: int  # runs claimed so far
    # of them, scheduled runs that found nothing to do: counted here, not in
    # the run history (the last run's time and status are above all the same)
    quiet_runs: int
    last_run_id: str
    last_status: str
    last_started_at: dt.datetime | None
    last_finished_at: dt.datetime | None
    next_due_at: dt.datetime | None
    waiting: int  # manual runs queued
    running_here: bool  # this replica is running it now


class Leadership(msgspec.Struct, kw_only=True):
    replica: str  # the replica that answered
    leader: str  # the lease holder ("" : none)
    fence: int
    this_replica_leads: bool


class JobList(msgspec.Struct, kw_only=True):
    leadership: Leadership
    jobs: list[JobView]


class RunPage(msgspec.Struct, kw_only=True):
    items: list[history.RunRow]
    # Pass as ?before= for older runs; null on the last page.
    next: int | None = None


class RunRequested(msgspec.Struct, kw_only=True):
    job: str
    run_id: str


def _t(ms: int) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC) if ms else None


def _scheduler(call: Call) -> Scheduler:
    scheduler = call.hub.extras.get("scheduler")
    if not isinstance(scheduler, Scheduler):
        raise ApiError("unavailable", "this Hub runs no scheduler")
    return scheduler


def _job_nrn(name: str) -> str:
    return resource_nrn("job", "", name)


async def list_jobs(call: Call) -> web.Response:
    call.authorize(_job_nrn("scheduler"))
    scheduler = _scheduler(call)
    views = []
    for job in scheduler.registry:
        slot, _ = await scheduler.read_slot(job.name)
        due = slot.last_started_ms + int(job.every_s * 1000) if slot.last_started_ms else 0
        views.append(
            JobView(
                name=job.name,
                description=job.description,
                every_s=job.every_s,
                runs=slot.runs,
                quiet_runs=slot.quiet_runs,
                last_run_id=slot.last_run_id,
                last_status=slot.last_status,
                last_started_at=_t(slot.last_started_ms),
                last_finished_at=_t(slot.last_finished_ms),
                next_due_at=_t(due) if due else None,
                waiting=len(slot.waiting),
                running_here=job.name in scheduler.running,
            )
        )
    s: dict[str, Any] = scheduler.status()
    return json_response(JobList(leadership=Leadership(**s), jobs=views))


def _known(call: Call, scheduler: Scheduler) -> str:
    name = call.request.match_info["name"]
    if scheduler.registry.get(name) is None:
        raise ApiError("not_found", f"no job named {name!r}")
    return name


async def job_runs(call: Call) -> web.Response:
    scheduler = _scheduler(call)
    name = call.request.match_info["name"]
    call.authorize(_job_nrn(name if scheduler.registry.get(name) else "scheduler"))
    name = _known(call, scheduler)
    limit = limit_of(call.query("limit"))
    raw = call.query("before")
    try:
        before = int(raw) if raw else None
    except ValueError:
        raise ApiError("invalid_query", "before: a run number", field="before") from None
    dsn = call.hub.postgres_dsn
    if not dsn:
        raise ApiError("unavailable", "this Hub has no Postgres read model configured")
    try:
        conn = await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        raise ApiError("unavailable", f"the read model is not reachable ({type(exc).__name__})") from None
    try:
        try:
            rows = await history.runs(conn, name, limit=limit + 1, before=before)
        except asyncpg.UndefinedTableError:
            rows = []
    finally:
        await conn.close()
    nxt = rows[limit - 1].run_number if len(rows) > limit else None
    return json_response(RunPage(items=rows[:limit], next=nxt))


async def run_job(call: Call) -> web.Response:
    scheduler = _scheduler(call)
    name = call.request.match_info["name"]
    call.authorize(_job_nrn(name if scheduler.registry.get(name) else "scheduler"))
    name = _known(call, scheduler)
    assert call.principal is not None
    try:
        run_id = await scheduler.request(name, call.principal.nrn)
    except Busy as exc:
        raise ApiError("rate_limited", str(exc)) from None
    call.after = {"job": name, "run_id": run_id}
    return json_response(RunRequested(job=name, run_id=run_id), status=202)
