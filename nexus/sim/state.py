"""The sim's typed application state."""

from __future__ import annotations

from aiohttp import web

from nexus.sim.recorder import Recorder
from nexus.sim.settings import SimSettings


class SimState:
    __slots__ = ("minted_tokens", "recorder", "requests_seen", "settings")

    def __init__(self, settings: SimSettings) -> None:
        self.settings = settings
        self.recorder = Recorder(settings.record_limit)
        self.requests_seen = 0  # drives fail_every; not reset with the recorder
        self.minted_tokens: set[str] = set()  # OAuth2 access tokens /vertex/token handed out

    def next_request_number(self) -> int:
        self.requests_seen += 1
        return self.requests_seen


SIM_STATE = web.AppKey("sim_state", SimState)
