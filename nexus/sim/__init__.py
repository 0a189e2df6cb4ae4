"""The simulated LLM provider: a real local HTTP server speaking provider wire
formats, deterministic, with configurable latency and failure injection.

From Python::

    from nexus.sim import SimSettings, start_sim
    sim = await start_sim(SimSettings(ttft_ms=50), host="127.0.0.1", port=0)
    ...  # sim.url == "http://127.0.0.1:<port>/v1"
    await sim.close()
"""

from nexus.sim.server import SimServer, create_sim_app, start_sim
from nexus.sim.settings import SimSettings

__all__ = ["SimServer", "SimSettings", "create_sim_app", "start_sim"]
