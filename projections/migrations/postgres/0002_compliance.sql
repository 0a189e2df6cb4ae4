-- Compliance columns of traffic_event: the decision, blocking rule, reason
-- code and hook time of each hook stage (from hook.stage events), the
-- streaming guard mode of the response stage, the bypass flags stamped on
-- the request, and the tags of every stage (sorted, comma-joined).

ALTER TABLE traffic_event
    ADD COLUMN passthrough_flags           text,
    ADD COLUMN connection_hook_decision    text,
    ADD COLUMN request_hook_decision       text,
    ADD COLUMN request_hook_blocking_rule  text,
    ADD COLUMN request_hook_reason_code    text,
    ADD COLUMN request_hook_us             bigint,
    ADD COLUMN response_hook_decision      text,
    ADD COLUMN response_hook_blocking_rule text,
    ADD COLUMN response_hook_reason_code   text,
    ADD COLUMN response_hook_us            bigint,
    ADD COLUMN response_hook_mode          text,
    ADD COLUMN compliance_tags             text;

-- Auditors look for what was blocked.
CREATE INDEX traffic_event_request_hook_decision ON traffic_event (request_hook_decision)
    WHERE request_hook_decision IN ('block', 'redact');
