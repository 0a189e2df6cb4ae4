-- Compliance columns of traffic_event (see the Postgres migration of the
-- same number): per hook stage the decision, blocking rule, reason code
-- and hook time, the response guard's mode, bypass flags, and the tags.
-- DuckDB adds one column per statement.

ALTER TABLE traffic_event ADD COLUMN passthrough_flags text;
ALTER TABLE traffic_event ADD COLUMN connection_hook_decision text;
ALTER TABLE traffic_event ADD COLUMN request_hook_decision text;
ALTER TABLE traffic_event ADD COLUMN request_hook_blocking_rule text;
ALTER TABLE traffic_event ADD COLUMN request_hook_reason_code text;
ALTER TABLE traffic_event ADD COLUMN request_hook_us bigint;
ALTER TABLE traffic_event ADD COLUMN response_hook_decision text;
ALTER TABLE traffic_event ADD COLUMN response_hook_blocking_rule text;
ALTER TABLE traffic_event ADD COLUMN response_hook_reason_code text;
ALTER TABLE traffic_event ADD COLUMN response_hook_us bigint;
ALTER TABLE traffic_event ADD COLUMN response_hook_mode text;
ALTER TABLE traffic_event ADD COLUMN compliance_tags text;
