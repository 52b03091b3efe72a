-- 1 once the pod outcome watcher has recorded how a build ended (duration, success, retries,
-- OOM): later rows for the same run_id (an in-pod reporter's) only fill in missing telemetry.
ALTER TABLE runs ADD COLUMN outcome_final BIGINT NOT NULL DEFAULT 0;
