-- Which pooled credential the final attempt used (see the Postgres migration of the same number).

ALTER TABLE traffic_event ADD COLUMN credential_id text;
