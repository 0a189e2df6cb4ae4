"""The admin audit event: one per admin API request, allowed or denied.

It lands on the ADMIN stream (``Topology.admin_subject``), which the audit
processor chains like every event stream, so admin actions sit in the same
tamper-evident trail as traffic (``nexus audit verify``).  It names what was
asked and what was decided, never a secret: request and resource bodies are
represented by the sha256 of their canonical JSON (before/after), so a
reader can prove which version was in force without the trail holding it.
"""

from __future__ import annotations

from streams.events import Event


class AdminAction(Event, tag="admin.action"):
    actor: str = ""  # the caller's principal NRN ("" when not authenticated)
    actor_name: str = ""  # the e-mail it signed in with (or tried to)
    action: str = ""  # admin:<resource>.<verb>
    resource: str = ""  # the target's NRN
    # allowed | explicit_deny | implicit_deny | unauthenticated
    decision: str = ""
    # The statement that decided it: policy id and Sid (or index).
    deciding_policy: str = ""
    deciding_statement: str = ""
    missing_context_keys: list[str] = []
    source_ip: str = ""
    user_agent: str = ""
    method: str = ""
    route: str = ""  # the route template (/api/admin/virtual-keys/{id}), never a query string
    status: int = 0  # the HTTP status answered
    outcome: str = ""  # ok, or the error code answered (version_conflict, invalid_field, ...)
    command_id: str = ""
    config_seq: int = 0  # the CONFIG stream sequence the change was stored at (0: none)
    before_sha256: str = ""  # of the resource's canonical JSON before ("" : did not exist)
    after_sha256: str = ""  # ... and after ("" : deleted, or unchanged by a read)


class JobRun(Event, tag="admin.job_run"):
    """A run of one of the Hub's scheduled jobs, as it starts, as it goes
    (progress) and as it ends.  The Hub's run history (Postgres
    ``hub_job_run``) is the fold of these records, so a replay rebuilds it;
    the audit chain holds them beside the admin actions."""

    job: str = ""
    run_id: str = ""
    run_number: int = 0  # the n-th run of this job claimed, across every replica
    status: str = ""  # running | succeeded | failed | abandoned
    trigger: str = ""  # schedule | manual
    requested_by: str = ""  # the admin who asked for a manual run (principal NRN)
    fence: int = 0  # the leader lease's fencing token the run was claimed under
    started_at_ms: int = 0
    finished_at_ms: int = 0
    stats: dict[str, int] = {}  # counts: what was looked at, changed, failed
    detail: str = ""  # one line for people (what changed, what is left)
    error: str = ""
