"""A thing's effective config and desired state, and whether what it reports
matches (pure: the state, the published snapshot head, a report).

- Effective config = the template of the thing's type ⊕ its own overrides
  (an override replaces the template's value of its key).  An expired
  override still counts until the expiry pass clears it (an event, so the
  desired state never depends on a clock and every replica computes the
  same one).
- Desired state = the effective config, plus the key ``config`` (the
  snapshot's revision and config digest) for the types that run snapshots.
  Its version is the newest CONFIG sequence it depends on (the template's,
  the thing's, the snapshot revision): it only goes up, and every replica
  computes the same number.
- Converged = every desired key is applied with the desired value's digest,
  and ``config`` by the config digest the node says it serves: drift
  compares what the node runs, not a version number it echoes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hub.state import THING_TEMPLATE, HubState, Resource
from streams.config_fleet import CONFIG_KEY, SNAPSHOT_TYPES, ThingSpec
from streams.fleet_wire import Desired, value_digest
from streams.snapshots import NodeReport, SnapshotHead, report_key


@dataclass(frozen=True)
class EffectiveKey:
    value: Any
    source: str  # template | override | hub (the snapshot key)
    reason: str = ""
    set_by: str = ""
    set_at_ms: int = 0
    expires_at_ms: int = 0


def effective_config(state: HubState, thing: Resource) -> dict[str, EffectiveKey]:
    spec: ThingSpec = thing.spec
    out: dict[str, EffectiveKey] = {}
    template = state.get(THING_TEMPLATE, spec.type)
    if template is not None:
        for key, value in template.spec.keys.items():
            out[key] = EffectiveKey(
                value, "template", set_by=template.updated_by, set_at_ms=template.updated_at_ms
            )
    if thing.thing is not None:
        for key, o in thing.thing.overrides.items():
            out[key] = EffectiveKey(o.value, "override", o.reason, o.set_by, o.set_at_ms, o.expires_at_ms)
    return dict(sorted(out.items()))


def snapshot_value(head: SnapshotHead) -> dict[str, Any]:
    return {"revision": head.revision, "digest": head.config_digest}


def desired_of(state: HubState, thing: Resource, head: SnapshotHead | None) -> Desired:
    spec: ThingSpec = thing.spec
    keys = {k: e.value for k, e in effective_config(state, thing).items()}
    template = state.get(THING_TEMPLATE, spec.type)
    version = max(thing.version, template.version if template is not None else 0)
    if spec.type in SNAPSHOT_TYPES and head is not None:
        keys[CONFIG_KEY] = snapshot_value(head)
        version = max(version, head.revision)
    return Desired(thing=thing.id, type=spec.type, version=version, digest=value_digest(keys), keys=keys)


def report_key_of(thing: Resource) -> str:
    spec: ThingSpec = thing.spec
    return report_key(spec.type, spec.reports_as)


def pending_keys(desired: Desired, report: NodeReport | None) -> list[str]:
    """The desired keys the report does not show running (all of them when
    there is no report)."""
    if report is None:
        return sorted(desired.keys)
    out = []
    for key, value in desired.keys.items():
        if key == CONFIG_KEY:
            if report.digest != value.get("digest"):
                out.append(key)
            continue
        outcome = report.outcomes.get(key)
        if outcome is None or outcome.status != "applied" or outcome.digest != value_digest(value):
            out.append(key)
    return sorted(out)


def converged(desired: Desired, report: NodeReport | None) -> bool:
    return report is not None and not pending_keys(desired, report)
