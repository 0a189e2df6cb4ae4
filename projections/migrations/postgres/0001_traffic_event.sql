-- The traffic read model and the checkpoints of every projection in this
-- database.  Timestamps are timestamptz; token counts bigint; money is double
-- precision because the events carry it that way (the exact figure lives in
-- the event stream).

CREATE TABLE projection_checkpoint (
    projection  text        NOT NULL,
    stream      text        NOT NULL,
    last_seq    bigint      NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, stream)
);

CREATE TABLE traffic_event (
    request_id            text PRIMARY KEY,
    trace_id              text,
    first_seen_at         timestamptz,
    received_at           timestamptz,
    completed_at          timestamptz,
    org_id                text,
    project_id            text,
    key_id                text,
    user_id               text,
    node_kind             text,
    node_id               text,
    ingress               text,
    endpoint              text,
    ingress_format        text,
    method                text,
    path                  text,
    requested_model       text,
    stream                boolean,
    client_ip             text,
    user_agent            text,
    request_bytes         bigint,
    model                 text,
    provider              text,
    provider_model        text,
    route_rank            integer NOT NULL DEFAULT 0,
    upstream_attempt      integer NOT NULL DEFAULT 0,
    upstream_status       integer,
    upstream_ms           double precision,
    upstream_ttft_ms      double precision,
    upstream_error_code   text,
    routing_rule          text,
    outcome               text,
    status                integer,
    latency_ms            double precision,
    outcome_rank          integer NOT NULL DEFAULT 0,
    ttft_ms               double precision,
    attempts              integer,
    cache_status          text,
    error_code            text,
    error_type            text,
    error_stage           text,
    error_reason          text,
    prompt_tokens         bigint,
    completion_tokens     bigint,
    cached_tokens         bigint,
    cache_creation_tokens bigint,
    reasoning_tokens      bigint,
    total_tokens          bigint,
    cost_usd              double precision,
    priced                boolean,
    usage_estimated       boolean,
    config_version        text
);

-- Operators look at recent traffic, usually of one org.
CREATE INDEX traffic_event_first_seen_at ON traffic_event (first_seen_at);
CREATE INDEX traffic_event_org_first_seen_at ON traffic_event (org_id, first_seen_at);
