-- A request.aborted outcome (the reconciler: the node serving the request
-- stopped) ranks below a completion and a failure, so the node's own
-- outcome, arriving late, still wins.  Completed was 1 and failed 2; they
-- become 2 and 4, aborted is 1.

UPDATE traffic_event SET outcome_rank = outcome_rank * 2 WHERE outcome_rank > 0;
