"""The simulated LLM provider: a real local HTTP server speaking provider wire
formats, deterministic, with configurable latency and failure injection.

From Python::

    from nexus.sim import SimSettings, start_sim
    sim = await start_sim(SimSettings(ttft_ms=50), host="127.0.0.1", port=0)
    ...  # sim.url == "http://127.0.0.1:<port>/v1"
    await sim.close()

Every provider's format is mounted on the same server, each under its own
prefix, so a gateway provider's ``base_url`` is ``sim.root`` plus:

    openai       /v1  (chat, embeddings, responses)
    anthropic    /anthropic                    gemini   /gemini
    vertex       /vertex                       bedrock  /bedrock (SigV4 checked)
    cohere       /cohere                       azure    /azure (+ options.api_version)
    replicate    /replicate                    voyage   /voyage
    deepseek, moonshot, mistral, groq, fireworks, together, perplexity,
    xai, huggingface, minimax, glm             /<name>/v1

Requests are validated as each provider validates them; the answer
(text, tool calls, JSON for a schema, images counted, reasoning) is decided
once in ``nexus.sim.core`` and written in the provider's grammar.  Prompt
directives (``sim:fail=429``, ``sim:error_after=2``, ``sim:cached=8``,
``sim:reasoning=5``, ``sim:drop_after=3``) reach the sim through any
translation; ``x-sim-*`` headers do the same per provider.
"""

from nexus.sim.server import SimServer, create_sim_app, start_sim
from nexus.sim.settings import SimSettings

__all__ = ["SimServer", "SimSettings", "create_sim_app", "start_sim"]
