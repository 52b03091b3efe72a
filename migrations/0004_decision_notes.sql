-- Why InfraMind decided what it did for a build (the pod's inframind.io/rationale, expected cache
-- and cache annotations), recorded by the pod outcome watcher next to the run, for the
-- dashboard's last decisions. Kept apart from `runs` so the training data stays narrow.
CREATE TABLE IF NOT EXISTS decision_notes (
    run_id TEXT PRIMARY KEY,
    rationale TEXT NOT NULL,
    expected_cache TEXT,
    cache TEXT
);
