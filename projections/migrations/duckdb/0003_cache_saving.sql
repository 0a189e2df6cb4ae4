-- What a cache hit saved (see the Postgres migration of the same number).

ALTER TABLE traffic_event ADD COLUMN cache_saving_usd double precision;
