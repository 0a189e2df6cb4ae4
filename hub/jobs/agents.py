"""The agent CA's jobs:

- ``enrolment-token-expiry``: an enrolment token that expired unused is
  removed from the enrolment bucket (it was refused at enrolment already;
  this keeps the list to what can still be used), each removal audited
  (an ``admin.action`` record naming the token).
- ``certificate-expiry``: agents whose certificates end within
  ``warn_days`` (and the agent CA itself) are counted and named in the
  run's record, and logged as a warning: the run history and the audit
  chain carry it, so an alert rule on ``admin.job_run`` can page someone.
"""

from __future__ import annotations

import logging

from hub.agents.ca import AgentCA
from hub.agents.enrolment import Enrolment
from hub.iam import resource_nrn
from hub.jobs.registry import JobContext, Registry

log = logging.getLogger("nexus.hub.jobs")

DAY_MS = 24 * 3600 * 1000


def register_agent_jobs(
    registry: Registry, enrolment: Enrolment, ca: AgentCA, *, warn_days: int = 14
) -> None:
    async def expire_tokens(ctx: JobContext) -> str:
        now = ctx.now_ms()
        removed = []
        for record in await enrolment.list_tokens():
            if record.used_at_ms or record.revoked_at_ms or record.expires_at_ms > now:
                continue
            found = await enrolment.get_token(record.id)
            if found is None:
                continue
            key, _ = found
            await enrolment.tokens.delete(key)
            # The token's org path is not needed for the record: the id names it.
            ctx.note(resource_nrn("enrolment-token", "", record.id), "expired_removed")
            removed.append(record.id)
            ctx.count("expired_removed")
        ctx.idle = not removed
        return f"{len(removed)} expired enrolment tokens removed" + (
            f": {', '.join(removed[:20])}" if removed else ""
        )

    async def certificate_warnings(ctx: JobContext) -> str:
        now = ctx.now_ms()
        horizon = now + warn_days * DAY_MS
        agents = [a for a in await enrolment.list_agents() if not a.revoked]
        soon = [a for a in agents if a.not_after_ms and a.not_after_ms <= horizon]
        ctx.count("agents_checked", len(agents))
        ctx.count("certificates_expiring", len(soon))
        ctx.count("certificates_expired", sum(1 for a in soon if a.not_after_ms <= now))
        ca_end = int(ca.cert.not_valid_after_utc.timestamp() * 1000)
        ca_soon = ca_end <= horizon
        ctx.count("ca_expiring", int(ca_soon))
        parts = [
            f"{a.id} ({'expired' if a.not_after_ms <= now else 'ends in'} "
            f"{max(0, (a.not_after_ms - now) // DAY_MS)} d)"
            for a in soon[:20]
        ]
        if ca_soon:
            parts.insert(0, f"the agent CA ends in {max(0, (ca_end - now) // DAY_MS)} d")
        if parts:
            log.warning("jobs: certificates ending within %d days: %s", warn_days, "; ".join(parts))
        ctx.idle = not parts  # nothing to warn of
        return (
            f"{len(soon)} agent certificates end within {warn_days} days"
            + (", and the agent CA" if ca_soon else "")
            + (f": {'; '.join(parts)}" if parts else "")
        )

    registry.add(
        "enrolment-token-expiry",
        every_s=600,
        run=expire_tokens,
        description="enrolment tokens that expired unused are removed (each audited)",
    )
    registry.add(
        "certificate-expiry",
        every_s=6 * 3600,
        run=certificate_warnings,
        description=f"agent certificates (and the agent CA) ending within {warn_days} days are reported",
    )
