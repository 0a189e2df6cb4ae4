-- Shadow-AI discovery: who uses which AI service.  One row per (proxy user,
-- client address, AI service): the connections the proxy saw to the
-- service's hosts (bumped, relayed untouched -- spliced, attested, pinning
-- fallback, kill switch -- or refused), distinct attested devices, bytes each
-- way, first and last seen; and the requests seen inside them (pipeline
-- calls and relayed requests) with their tokens and cost.  A view: nothing
-- to fold or replay (docs/analytics-schema.md).

CREATE VIEW ai_service_usage AS
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
    FROM traffic_event
    WHERE endpoint = 'connect' AND ai_service IS NOT NULL
    GROUP BY 1, 2, 3
),
r AS (
    SELECT coalesce(user_id, '') AS user_id, coalesce(client_ip, '') AS client_ip, ai_service,
           count(*) AS requests,
           coalesce(sum(total_tokens), 0) AS total_tokens,
           coalesce(sum(cost_usd), 0) AS cost_usd
    FROM traffic_event
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
    ON c.user_id = r.user_id AND c.client_ip = r.client_ip AND c.ai_service = r.ai_service;
