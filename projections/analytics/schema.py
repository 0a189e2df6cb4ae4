"""The analytics schema in DuckDB: the public contract notebooks and
warehouses read (documented in docs/analytics-schema.md).

It lives in the ``analytics`` schema of the same DuckDB file as the base
projection's ``traffic_event`` table, which is the fact table every rollup is
computed from.  Money is DECIMAL, never DOUBLE: a sum of doubles depends on
the order it is taken in, and a replay must reproduce the live rollups bit
for bit.

Versioning: ``SCHEMA_VERSION`` is recorded in ``analytics.meta``.  Adding a
column (at the end) is a compatible change; renaming, retyping or removing
one bumps the version, and an older file is rebuilt by ``nexus replay``.
"""

from __future__ import annotations

import duckdb

SCHEMA_VERSION = 1
GRAINS: tuple[str, ...] = ("minute", "hour", "day")
DIMENSIONS: tuple[str, ...] = ("org_id", "project_id", "key_id", "model", "provider")

# ``error_stage`` values that mean "a policy stopped the request" (the
# compliance engine's hooks), counted as blocked even without a verdict event.
BLOCKING_STAGES: tuple[str, ...] = ("hook", "hooks", "policy", "compliance")

_ROLLUP = """
CREATE TABLE IF NOT EXISTS analytics.rollup_{grain} (
    bucket              TIMESTAMP NOT NULL,
    org_id              VARCHAR NOT NULL,
    project_id          VARCHAR NOT NULL,
    key_id              VARCHAR NOT NULL,
    model               VARCHAR NOT NULL,
    provider            VARCHAR NOT NULL,
    requests            BIGINT NOT NULL,
    ok                  BIGINT NOT NULL,
    errors              BIGINT NOT NULL,
    errors_4xx          BIGINT NOT NULL,
    errors_5xx          BIGINT NOT NULL,
    streamed            BIGINT NOT NULL,
    prompt_tokens       BIGINT NOT NULL,
    completion_tokens   BIGINT NOT NULL,
    cached_tokens       BIGINT NOT NULL,
    reasoning_tokens    BIGINT NOT NULL,
    total_tokens        BIGINT NOT NULL,
    cost_usd            DECIMAL(38,10) NOT NULL,
    cache_savings_usd   DECIMAL(38,10) NOT NULL,
    cache_hits          BIGINT NOT NULL,
    latency_sum_ms      DECIMAL(38,3) NOT NULL,
    latency_p50_ms      DOUBLE,
    latency_p95_ms      DOUBLE,
    latency_p99_ms      DOUBLE,
    latency_max_ms      DOUBLE,
    ttft_p50_ms         DOUBLE,
    ttft_p95_ms         DOUBLE,
    verdict_approve     BIGINT NOT NULL,
    verdict_redact      BIGINT NOT NULL,
    verdict_block       BIGINT NOT NULL,
    verdict_error       BIGINT NOT NULL,
    findings            BIGINT NOT NULL,
    blocked             BIGINT NOT NULL,
    redacted            BIGINT NOT NULL,
    PRIMARY KEY (bucket, org_id, project_id, key_id, model, provider)
)
"""

_SUPPORT = """
CREATE TABLE IF NOT EXISTS analytics.meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
-- The minute each request was last rolled into: when a late event moves a
-- request to another minute, the old minute is refreshed too.
CREATE TABLE IF NOT EXISTS analytics.request_bucket (
    request_id VARCHAR PRIMARY KEY,
    minute     TIMESTAMP NOT NULL
);
-- Compliance outcomes per request, from hook.verdict / hook.stage events.
CREATE TABLE IF NOT EXISTS analytics.request_verdict (
    request_id      VARCHAR PRIMARY KEY,
    verdict_approve INTEGER NOT NULL DEFAULT 0,
    verdict_redact  INTEGER NOT NULL DEFAULT 0,
    verdict_block   INTEGER NOT NULL DEFAULT 0,
    verdict_error   INTEGER NOT NULL DEFAULT 0,
    findings        INTEGER NOT NULL DEFAULT 0,
    blocked         BOOLEAN NOT NULL DEFAULT false,
    redacted        BOOLEAN NOT NULL DEFAULT false
);
-- Buckets whose rollup rows are stale, written in the same transaction as
-- the checkpoint that made them stale, so a crash never loses a refresh.
CREATE TABLE IF NOT EXISTS analytics.dirty (
    grain  VARCHAR NOT NULL,
    bucket TIMESTAMP NOT NULL,
    PRIMARY KEY (grain, bucket)
);
"""

# The stable per-request surface for analysts: explicit columns (the base
# table may grow), verdicts joined in, and a ``day`` for partitioning.
_REQUESTS_VIEW = f"""
CREATE OR REPLACE VIEW analytics.requests AS
SELECT
    t.request_id,
    t.first_seen_at AS ts,
    CAST(t.first_seen_at AS DATE) AS day,
    t.received_at,
    t.completed_at,
    coalesce(t.org_id, '') AS org_id,
    coalesce(t.project_id, '') AS project_id,
    coalesce(t.key_id, '') AS key_id,
    coalesce(t.user_id, '') AS user_id,
    t.ingress,
    t.endpoint,
    t.requested_model,
    coalesce(nullif(t.model, ''), t.requested_model, '') AS model,
    coalesce(t.provider, '') AS provider,
    t.provider_model,
    coalesce(t.stream, false) AS stream,
    t.outcome,
    t.status,
    t.error_code,
    t.error_type,
    t.error_stage,
    t.latency_ms,
    t.ttft_ms,
    t.upstream_ms,
    t.attempts,
    t.cache_status,
    coalesce(t.prompt_tokens, 0) AS prompt_tokens,
    coalesce(t.completion_tokens, 0) AS completion_tokens,
    coalesce(t.cached_tokens, 0) AS cached_tokens,
    coalesce(t.reasoning_tokens, 0) AS reasoning_tokens,
    coalesce(t.total_tokens, 0) AS total_tokens,
    CAST(coalesce(t.cost_usd, 0) AS DECIMAL(18,10)) AS cost_usd,
    CAST(coalesce(t.cache_saving_usd, 0) AS DECIMAL(18,10)) AS cache_savings_usd,
    coalesce(v.verdict_approve, 0) AS verdict_approve,
    coalesce(v.verdict_redact, 0) AS verdict_redact,
    coalesce(v.verdict_block, 0) AS verdict_block,
    coalesce(v.verdict_error, 0) AS verdict_error,
    coalesce(v.findings, 0) AS findings,
    (coalesce(v.blocked, false)
        OR coalesce(t.error_stage, '') IN ({", ".join(f"'{s}'" for s in BLOCKING_STAGES)})) AS blocked,
    coalesce(v.redacted, false) AS redacted
FROM main.traffic_event t
LEFT JOIN analytics.request_verdict v USING (request_id)
WHERE t.first_seen_at IS NOT NULL
"""  # noqa: S608 - identifiers and literals from this module only


# Shadow-AI discovery: who uses which AI service (the Postgres view of the
# same name, migration 0007): connections by how the proxy handled them,
# devices, bytes, first/last seen, and the requests seen inside them.
_AI_SERVICES_VIEW = """CREATE OR REPLACE VIEW analytics.ai_service_usage AS
WITH c AS (
    SELECT coalesce(user_id, '') AS user_id, coalesce(client_ip, '') AS client_ip, ai_service,
           count(*) AS connections,
           count(*) FILTER (WHERE bump_status = 'bumped') AS bumped,
           count(*) FILTER (WHERE bump_status IN ('spliced', 'attested', 'pinning_fallback', 'kill_switch'))
               AS relayed,
           count(*) FILTER (WHERE bump_status IN ('blocked', 'upstream_cert_error')) AS refused,
           count(DISTINCT device_id) AS devices,
           coalesce(sum(bytes_up), 0) AS bytes_up,
           coalesce(sum(bytes_down), 0) AS bytes_down,
           min(received_at) AS first_seen,
           max(received_at) AS last_seen
    FROM main.traffic_event
    WHERE endpoint = 'connect' AND ai_service IS NOT NULL
    GROUP BY 1, 2, 3
),
r AS (
    SELECT coalesce(user_id, '') AS user_id, coalesce(client_ip, '') AS client_ip, ai_service,
           count(*) AS requests,
           coalesce(sum(total_tokens), 0) AS total_tokens,
           coalesce(sum(cost_usd), 0) AS cost_usd
    FROM main.traffic_event
    WHERE ingress = 'proxy' AND endpoint <> 'connect' AND ai_service IS NOT NULL AND outcome IS NOT NULL
    GROUP BY 1, 2, 3
)
SELECT coalesce(c.user_id, r.user_id) AS user_id,
       coalesce(c.client_ip, r.client_ip) AS client_ip,
       coalesce(c.ai_service, r.ai_service) AS ai_service,
       coalesce(c.connections, 0) AS connections,
       coalesce(c.bumped, 0) AS bumped,
       coalesce(c.relayed, 0) AS relayed,
       coalesce(c.refused, 0) AS refused,
       coalesce(c.devices, 0) AS devices,
       coalesce(c.bytes_up, 0) AS bytes_up,
       coalesce(c.bytes_down, 0) AS bytes_down,
       c.first_seen,
       c.last_seen,
       coalesce(r.requests, 0) AS requests,
       coalesce(r.total_tokens, 0) AS total_tokens,
       coalesce(r.cost_usd, 0) AS cost_usd
FROM c FULL OUTER JOIN r
    ON c.user_id = r.user_id AND c.client_ip = r.client_ip AND c.ai_service = r.ai_service
"""


class SchemaVersionError(RuntimeError):
    """The DuckDB file holds an analytics schema this code cannot read."""


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the analytics schema (idempotent).  Needs ``traffic_event``."""
    conn.execute("CREATE SCHEMA IF NOT EXISTS analytics")
    conn.execute(_SUPPORT)
    row = conn.execute("SELECT value FROM analytics.meta WHERE key = 'schema_version'").fetchone()
    if row is not None and int(row[0]) != SCHEMA_VERSION:
        raise SchemaVersionError(
            f"the analytics schema in this file is v{row[0]}, this Nexus writes v{SCHEMA_VERSION} "
            "(the projector rebuilds it when it opens the file)"
        )
    for grain in GRAINS:
        conn.execute(_ROLLUP.format(grain=grain))
    conn.execute(_REQUESTS_VIEW)
    conn.execute(_AI_SERVICES_VIEW)
    conn.execute(
        "INSERT INTO analytics.meta VALUES ('schema_version', ?) ON CONFLICT DO NOTHING",
        [str(SCHEMA_VERSION)],
    )


def drop_schema(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute("DROP SCHEMA IF EXISTS analytics CASCADE")
