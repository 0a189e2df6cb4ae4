"""Events about a node itself (not a request): its own emergency controls."""

from __future__ import annotations

from streams.events import Event


class NodeBreakGlass(Event, tag="node.break_glass"):
    """A gateway node's own kill switch changed: engaged through its local
    endpoint (with the node's admin token), released there, or reverted by
    itself when its time ran out.  It never reaches another node: the fleet
    switch is the Hub's command."""

    action: str = ""  # engaged | released | expired
    reason: str = ""
    until_ms: int = 0
    actor: str = ""  # the caller's address ("clock" when it expired)
