-- The compliance proxy's columns (see the Postgres migration of the same number).

ALTER TABLE traffic_event ADD COLUMN bump_status text;
ALTER TABLE traffic_event ADD COLUMN target_host text;
ALTER TABLE traffic_event ADD COLUMN ai_service text;
ALTER TABLE traffic_event ADD COLUMN device_id text;
ALTER TABLE traffic_event ADD COLUMN connection_id text;
ALTER TABLE traffic_event ADD COLUMN bytes_up bigint;
ALTER TABLE traffic_event ADD COLUMN bytes_down bigint;
ALTER TABLE traffic_event ADD COLUMN credential_fingerprint text;
ALTER TABLE traffic_event ADD COLUMN credential_class text;
ALTER TABLE traffic_event ADD COLUMN connection_ms double;
ALTER TABLE traffic_event ADD COLUMN connection_status integer;
