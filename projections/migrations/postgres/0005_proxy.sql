-- The compliance proxy (proxy.connection / proxy.request events): how a
-- connection was handled, which AI service its host belongs to, the attested
-- device, bytes each way, and a provider key's fingerprint (never the key).
-- A connection is a row of its own (request_id = the connection id, endpoint
-- 'connect'); a request seen inside a bumped connection names it.

ALTER TABLE traffic_event ADD COLUMN bump_status text;
ALTER TABLE traffic_event ADD COLUMN target_host text;
ALTER TABLE traffic_event ADD COLUMN ai_service text;
ALTER TABLE traffic_event ADD COLUMN device_id text;
ALTER TABLE traffic_event ADD COLUMN connection_id text;
ALTER TABLE traffic_event ADD COLUMN bytes_up bigint;
ALTER TABLE traffic_event ADD COLUMN bytes_down bigint;
ALTER TABLE traffic_event ADD COLUMN credential_fingerprint text;
ALTER TABLE traffic_event ADD COLUMN credential_class text;
ALTER TABLE traffic_event ADD COLUMN connection_ms double precision;
ALTER TABLE traffic_event ADD COLUMN connection_status integer;
CREATE INDEX traffic_event_ai_service ON traffic_event (ai_service) WHERE ai_service IS NOT NULL;
