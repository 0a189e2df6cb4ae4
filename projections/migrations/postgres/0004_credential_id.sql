-- Which credential of the provider's pool the final attempt used
-- (upstream.result.credential_id; NULL/"" when the provider has no pool).

ALTER TABLE traffic_event ADD COLUMN credential_id text;
