-- What a cache hit saved: the cost of the cached answer when it was made
-- (request.completed.cache_saving_usd; 0 for every other request).

ALTER TABLE traffic_event ADD COLUMN cache_saving_usd double precision;
