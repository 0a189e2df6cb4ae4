"""The fleet: the registry of things (every node the Hub knows), their
shadows (desired and reported state), config sync and drift.

- ``commands`` / ``decide``: enrol, revoke, override (CONFIG events).
- ``desired``: a thing's effective config (its type's template with its own
  overrides) and the desired state it should converge to (pure).
- ``drift``: the sync pass: re-push, mark drift, recover (a pure function of
  the fleet's view and a clock, run periodically).
- ``registry``: the fleet at run time: reports (KV), sync records, status,
  change signals to connected things.
- ``sync``: the thing-facing endpoints (WebSocket, long poll, pull, report).
- ``enrol``: ``enrol_thing``, the one way a thing joins.
"""
