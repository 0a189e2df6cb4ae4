"""The fleet's periodic work, as jobs of the Hub's scheduler (run on the
leader only, each run recorded and its changes audited):

- ``fleet-drift``: the sync pass (``hub.fleet.drift.sync_pass``): re-push a
  thing that does not converge, at most three times, then mark it drift.
- ``thing-override-expiry``: a per-thing override whose expiry passed is
  cleared, one ``ClearOverride`` command each (an event, audited with the
  job as actor), so the desired state never depends on a clock.
"""

from __future__ import annotations

import datetime as dt

from hub.authz import nrn_of
from hub.commands import DomainError
from hub.fleet.commands import ClearOverride
from hub.fleet.drift import sync_pass
from hub.fleet.registry import Registry as Fleet
from hub.jobs.registry import JobContext
from hub.jobs.registry import Registry as Jobs
from hub.state import THING


def register_fleet_jobs(
    jobs: Jobs, fleet: Fleet, *, drift_every_s: float, expiry_every_s: float = 30
) -> None:
    async def drift(ctx: JobContext) -> str:
        result = await sync_pass(fleet, ctx.now_ms(), fleet.policy)
        counts = {action: len(ids) for action, ids in result.actions.items()}
        ctx.stats.update(assessed=result.assessed, **counts)
        ctx.idle = not any(counts.values())  # every thing converged: nothing re-pushed or marked
        return f"{result.assessed} things assessed" + "".join(
            f", {n} {action}" for action, n in sorted(counts.items())
        )

    async def expire(ctx: JobContext) -> str:
        cleared = 0
        for thing, key, o in fleet.expired_overrides(ctx.now_ms()):
            when = dt.datetime.fromtimestamp(o.expires_at_ms / 1000, tz=dt.UTC).isoformat(timespec="seconds")
            cmd = ClearOverride(
                # one command per override instance: a repeated run stores it once
                **ctx.envelope("expire", thing.id, key, o.set_at_ms),
                rid=thing.id,
                key=key,
                reason=f"expired at {when}",
            )
            try:
                out = await ctx.execute(cmd, nrn_of(ctx.state, THING, thing.id))
            except DomainError:
                ctx.count("skipped")  # changed meanwhile: the next run looks again
                continue
            if out.seq:
                cleared += 1
                ctx.count("cleared")
        ctx.idle = not ctx.stats  # none cleared nor skipped
        return f"{cleared} expired overrides cleared"

    jobs.add(
        "fleet-drift",
        every_s=drift_every_s,
        run=drift,
        description="things that do not converge are re-pushed (at most 3 times), then marked drift",
    )
    jobs.add(
        "thing-override-expiry",
        every_s=expiry_every_s,
        run=expire,
        description="per-thing config overrides whose expiry passed are cleared",
    )
