"""The Hub's own jobs, registered on every replica (only the leader runs
them).  Another part of the Hub adds its periodic work with one
``registry.add(...)`` call beside these.

Others live beside what they act on and are registered by the Hub's
service: body retention (``hub.jobs.retention``), enrolment tokens and
certificates (``hub.jobs.agents``), the fleet's drift re-push and per-thing
override expiry (``hub.fleet.jobs``).
"""

from __future__ import annotations

import asyncio

from hub.jobs.expiry import expire_keys, expire_overrides
from hub.jobs.registry import JobContext, JobFailed, Registry
from hub.vault.rewrap import Progress, Rewrapper


def register_standard(registry: Registry) -> None:
    registry.add(
        "key-expiry",
        every_s=60,
        run=expire_keys,
        description="active virtual keys past their expires_at become expired (one audited command each)",
    )
    registry.add(
        "override-expiry",
        every_s=30,
        run=expire_overrides,
        description="emergency passthrough rules and break-glass entries whose time ran out are removed",
    )


def register_vault_rewrap(registry: Registry, rewrapper: Rewrapper, *, every_s: float = 3600) -> None:
    """The vault's rewrap pass (``hub.vault.rewrap``) as a job: its counts
    are published while it runs, and a pass that stopped on an error is a
    failed run."""

    async def run(ctx: JobContext) -> str:
        task = asyncio.ensure_future(rewrapper.run())
        while not task.done():
            ctx.progress(**_counts(rewrapper.progress))
            await asyncio.wait({task}, timeout=0.5)
        p = task.result()
        ctx.stats.update(_counts(p))
        if p.error and not p.target_version:
            # No key version in service yet (no credential stored): nothing
            # is wrapped, nothing to move.
            return f"nothing to rewrap ({p.error})"
        if p.error:
            raise JobFailed(p.error)
        return (
            f"rewrapped {p.rewrapped} data keys to version {p.target_version} "
            f"({p.current} already there, {p.failed} failed, {p.orphans_purged} orphans purged)"
        )

    registry.add(
        "vault-rewrap",
        every_s=every_s,
        run=run,
        description="wrapped data keys on an older key version are rewrapped to the current one",
    )


def _counts(p: Progress) -> dict[str, int]:
    return {
        "scanned": p.scanned,
        "rewrapped": p.rewrapped,
        "current": p.current,
        "failed": p.failed,
        "orphans_purged": p.orphans_purged,
    }
