"""What the simulated provider does by default; per-request ``x-sim-*``
headers override it (see ``nexus.sim.behaviour``)."""

from __future__ import annotations

import msgspec


class SimSettings(msgspec.Struct, frozen=True, kw_only=True):
    latency_ms: float = 0.0  # before the response headers
    ttft_ms: float = 0.0  # after the headers, before the first token
    tokens_per_s: float = 0.0  # 0 = as fast as possible
    # Failure injection: every ``fail_every``-th request answers
    # ``fail_status`` (0 = never).
    fail_status: int = 0
    fail_every: int = 1
    drop_after: int = -1  # drop streams after this many content chunks (-1 = never)
    hang: bool = False  # never answer (the caller's timeout fires)
    # When set, requests must carry ``Authorization: Bearer <api_key>``.
    api_key: str | None = None
    # Per-credential failure injection: a request presenting one of these
    # credentials is answered with its status (401, 403, 429, ...).
    credential_status: dict[str, int] = {}
    record_limit: int = 100  # how many request bodies /_sim/requests keeps
    models: tuple[str, ...] = ("sim-small", "sim-large", "sim-embed")
    embedding_dimensions: int = 256
    # Vertex AI service accounts: the PEM public key the token endpoint
    # (/vertex/token) checks JWT assertions against (None: no endpoint).
    google_public_key_pem: str | None = None
