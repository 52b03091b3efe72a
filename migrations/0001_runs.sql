-- Build telemetry: one row per finished build. Portable between PostgreSQL and SQLite
-- (times are unix milliseconds, booleans are 0/1) so one migration set serves both stores.
CREATE TABLE IF NOT EXISTS runs (
    run_id              TEXT PRIMARY KEY,
    pipeline            TEXT NOT NULL,
    branch              TEXT NOT NULL,
    image               TEXT NOT NULL,
    node                TEXT NOT NULL,
    cpu_req             DOUBLE PRECISION NOT NULL,
    mem_req_gb          DOUBLE PRECISION NOT NULL,
    concurrency         BIGINT NOT NULL,
    max_rss_gb          DOUBLE PRECISION,
    io_read_gb          DOUBLE PRECISION,
    io_write_gb         DOUBLE PRECISION,
    cache_hit_ratio     DOUBLE PRECISION,
    num_steps           BIGINT,
    avg_step_duration_s DOUBLE PRECISION,
    duration_s          DOUBLE PRECISION NOT NULL,
    success             BIGINT NOT NULL,
    retry_count         BIGINT NOT NULL,
    oom_killed          BIGINT NOT NULL,
    started_at_ms       BIGINT NOT NULL,
    ingested_at_ms      BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_pipeline_started ON runs (pipeline, started_at_ms);
CREATE INDEX IF NOT EXISTS runs_success_started ON runs (success, started_at_ms);
CREATE INDEX IF NOT EXISTS runs_ingested ON runs (ingested_at_ms);
