-- What InfraMind did to each build's pod (applied, holdout, dry-run, unchanged, explored) and the
-- duration it predicted, so realized savings compare applied builds against the holdout group.
-- NULL for rows from before the control group existed (and for ingested history).
ALTER TABLE runs ADD COLUMN decision TEXT;
ALTER TABLE runs ADD COLUMN predicted_duration_s DOUBLE PRECISION;
CREATE INDEX IF NOT EXISTS runs_decision_started ON runs (decision, started_at_ms);
