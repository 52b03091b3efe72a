//! The telemetry store: PostgreSQL in production, SQLite as the embedded default.
//!
//! Both go through sqlx's `Any` driver with one portable schema (`migrations/`), so every query
//! is written once and exercised against both databases by the tests.

use chrono::{DateTime, TimeZone, Utc};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::error::{Error, Result};
use crate::record::RunRecord;

/// Columns in insert/select order.
const COLUMNS: &str = "run_id, pipeline, branch, image, node, cpu_req, mem_req_gb, concurrency, \
    max_rss_gb, io_read_gb, io_write_gb, cache_hit_ratio, num_steps, avg_step_duration_s, \
    duration_s, success, retry_count, oom_killed, started_at_ms, ingested_at_ms, decision, \
    predicted_duration_s";
const N_COLUMNS: usize = 22;
/// What an in-pod reporter measures: filled in when missing, never overwritten.
const TELEMETRY_COLUMNS: &[&str] = &[
    "max_rss_gb",
    "io_read_gb",
    "io_write_gb",
    "cache_hit_ratio",
    "num_steps",
    "avg_step_duration_s",
    // The decision tag and prediction come from the pod's annotations (watcher) or the
    // reporter's env; whichever arrives first is kept.
    "decision",
    "predicted_duration_s",
];
/// What the pod watcher knows for sure about how a build ran and ended.
const OUTCOME_COLUMNS: &[&str] = &[
    "pipeline",
    "branch",
    "image",
    "node",
    "cpu_req",
    "mem_req_gb",
    "concurrency",
    "duration_s",
    "success",
    "retry_count",
    "oom_killed",
    "started_at_ms",
];
/// Rows per INSERT statement: keeps bind parameters under SQLite's and PostgreSQL's limits.
const INSERT_CHUNK: usize = 200;

/// Default embedded store.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://inframind.db";

/// How many rows a batch insert stored and how many were already there.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct InsertOutcome {
    /// Newly stored rows.
    pub inserted: u64,
    /// Rows whose run_id was already stored (not stored again).
    pub duplicates: u64,
}

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL (production).
    Postgres,
    /// SQLite (embedded default).
    Sqlite,
}

/// A connection pool to the telemetry database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

fn normalise_url(url: &str) -> Result<(String, Backend)> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok((url.to_string(), Backend::Postgres))
    } else if let Some(rest) = url.strip_prefix("sqlite:") {
        // Create the file on first use: the embedded default must work on a fresh machine.
        let url = if rest.contains("mode=") || rest.contains(":memory:") {
            url.to_string()
        } else if rest.contains('?') {
            format!("{url}&mode=rwc")
        } else {
            format!("{url}?mode=rwc")
        };
        Ok((url, Backend::Sqlite))
    } else {
        Err(Error::Input(format!(
            "database URL `{url}` must start with postgres:// or sqlite:"
        )))
    }
}

fn ms_to_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn u32_col(row: &AnyRow, col: &str) -> std::result::Result<u32, sqlx::Error> {
    let v: i64 = row.try_get(col)?;
    u32::try_from(v).map_err(|e| sqlx::Error::ColumnDecode {
        index: col.to_string(),
        source: Box::new(e),
    })
}

fn decode(row: &AnyRow) -> std::result::Result<RunRecord, sqlx::Error> {
    let num_steps: Option<i64> = row.try_get("num_steps")?;
    Ok(RunRecord {
        run_id: row.try_get("run_id")?,
        pipeline: row.try_get("pipeline")?,
        branch: row.try_get("branch")?,
        image: row.try_get("image")?,
        node: row.try_get("node")?,
        cpu_req: row.try_get("cpu_req")?,
        mem_req_gb: row.try_get("mem_req_gb")?,
        concurrency: u32_col(row, "concurrency")?,
        max_rss_gb: row.try_get("max_rss_gb")?,
        io_read_gb: row.try_get("io_read_gb")?,
        io_write_gb: row.try_get("io_write_gb")?,
        cache_hit_ratio: row.try_get("cache_hit_ratio")?,
        num_steps: num_steps.map(|n| n.clamp(0, u32::MAX as i64) as u32),
        avg_step_duration_s: row.try_get("avg_step_duration_s")?,
        duration_s: row.try_get("duration_s")?,
        success: row.try_get::<i64, _>("success")? != 0,
        retry_count: u32_col(row, "retry_count")?,
        oom_killed: row.try_get::<i64, _>("oom_killed")? != 0,
        started_at: ms_to_time(row.try_get("started_at_ms")?),
        decision: row
            .try_get::<Option<String>, _>("decision")?
            .as_deref()
            .and_then(crate::record::DecisionTag::parse),
        predicted_duration_s: row.try_get("predicted_duration_s")?,
    })
}

impl Store {
    /// Connects to `url` (`postgres://…` or `sqlite://…`) and brings the schema up to date.
    pub async fn connect(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let (url, backend) = normalise_url(url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect(&url)
            .await
            .map_err(Error::store(format!("connecting to {}", redact(&url))))?;
        let store = Store { pool, backend };
        sqlx::migrate!("./migrations").run(&store.pool).await?;
        Ok(store)
    }

    /// Which database this store talks to.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Stores `runs`. A run_id already present is never overwritten: missing telemetry (peak
    /// RSS, I/O, cache hit ratio, steps) is filled in from the new row (a reporter's row merging
    /// with the watcher's), and a row that adds nothing counts as a duplicate.
    pub async fn insert_runs(
        &self,
        runs: &[RunRecord],
        now: DateTime<Utc>,
    ) -> Result<InsertOutcome> {
        let fill = TELEMETRY_COLUMNS
            .iter()
            .map(|c| format!("{c} = COALESCE(runs.{c}, excluded.{c})"))
            .collect::<Vec<_>>()
            .join(", ");
        let adds = TELEMETRY_COLUMNS
            .iter()
            .map(|c| format!("(runs.{c} IS NULL AND excluded.{c} IS NOT NULL)"))
            .collect::<Vec<_>>()
            .join(" OR ");
        let conflict = format!("ON CONFLICT (run_id) DO UPDATE SET {fill} WHERE {adds}");
        // One statement may not touch a row twice: merge repeats within the batch first.
        let mut unique: Vec<RunRecord> = Vec::with_capacity(runs.len());
        let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        let mut repeats = 0;
        for run in runs {
            match index.get(run.run_id.as_str()) {
                Some(&i) => {
                    let first = &mut unique[i];
                    first.max_rss_gb = first.max_rss_gb.or(run.max_rss_gb);
                    first.io_read_gb = first.io_read_gb.or(run.io_read_gb);
                    first.io_write_gb = first.io_write_gb.or(run.io_write_gb);
                    first.cache_hit_ratio = first.cache_hit_ratio.or(run.cache_hit_ratio);
                    first.num_steps = first.num_steps.or(run.num_steps);
                    first.avg_step_duration_s =
                        first.avg_step_duration_s.or(run.avg_step_duration_s);
                    first.decision = first.decision.or(run.decision);
                    first.predicted_duration_s =
                        first.predicted_duration_s.or(run.predicted_duration_s);
                    repeats += 1;
                }
                None => {
                    index.insert(&run.run_id, unique.len());
                    unique.push(run.clone());
                }
            }
        }
        let counts = self
            .upsert(&unique, now, false, &conflict, "inserting runs")
            .await?;
        Ok(InsertOutcome {
            inserted: counts.0,
            duplicates: counts.1 + repeats,
        })
    }

    /// Stores why `run_id` was decided as it was (the first note wins; a repeat is a no-op).
    pub async fn record_note(
        &self,
        run_id: &str,
        note: &crate::outcome::DecisionNote,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO decision_notes (run_id, rationale, expected_cache, cache) VALUES ($1, $2, $3, $4) ON CONFLICT (run_id) DO NOTHING",
        )
        // Optional values: not a cached statement (see `upsert`).
        .persistent(false)
        .bind(run_id)
        .bind(&note.rationale)
        .bind(note.expected_cache.as_deref())
        .bind(note.cache.as_deref())
        .execute(&self.pool)
        .await
        .map_err(Error::store("recording a decision note"))?;
        Ok(())
    }

    /// The decision notes of `run_ids` that have one.
    pub async fn notes(
        &self,
        run_ids: &[&str],
    ) -> Result<std::collections::HashMap<String, crate::outcome::DecisionNote>> {
        let mut out = std::collections::HashMap::new();
        // One query per run: the dashboard asks for a page of 20, and both databases answer a
        // primary-key lookup at once (no portable array binding across SQLite and PostgreSQL).
        for id in run_ids {
            let row = sqlx::query(
                "SELECT rationale, expected_cache, cache FROM decision_notes WHERE run_id = $1",
            )
            .bind(*id)
            .fetch_optional(&self.pool)
            .await
            .map_err(Error::store("reading decision notes"))?;
            if let Some(r) = row {
                let note = crate::outcome::DecisionNote {
                    rationale: r
                        .try_get(0)
                        .map_err(Error::store("decoding a decision note"))?,
                    expected_cache: r
                        .try_get(1)
                        .map_err(Error::store("decoding a decision note"))?,
                    cache: r
                        .try_get(2)
                        .map_err(Error::store("decoding a decision note"))?,
                };
                out.insert(id.to_string(), note);
            }
        }
        Ok(out)
    }

    /// Records how a build ended, as observed on its pod: authoritative for the outcome (duration,
    /// success, retries, OOM, requests) and merged with any reporter row for the same run_id;
    /// returns false when this run's outcome was already recorded (never recorded twice).
    pub async fn record_outcome(&self, run: &RunRecord, now: DateTime<Utc>) -> Result<bool> {
        let take = OUTCOME_COLUMNS
            .iter()
            .map(|c| format!("{c} = excluded.{c}"));
        let fill = TELEMETRY_COLUMNS
            .iter()
            .map(|c| format!("{c} = COALESCE(runs.{c}, excluded.{c})"));
        let set = take
            .chain(fill)
            .chain(std::iter::once("outcome_final = 1".to_string()))
            .collect::<Vec<_>>()
            .join(", ");
        let conflict =
            format!("ON CONFLICT (run_id) DO UPDATE SET {set} WHERE runs.outcome_final = 0");
        let (changed, _) = self
            .upsert(
                std::slice::from_ref(run),
                now,
                true,
                &conflict,
                "recording a build outcome",
            )
            .await?;
        Ok(changed == 1)
    }

    async fn upsert(
        &self,
        runs: &[RunRecord],
        now: DateTime<Utc>,
        final_outcome: bool,
        conflict: &str,
        what: &str,
    ) -> Result<(u64, u64)> {
        let (mut changed, mut unchanged) = (0, 0);
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(Error::store(format!("starting a transaction for {what}")))?;
        for chunk in runs.chunks(INSERT_CHUNK) {
            // One row: its 22 bound columns, then outcome_final as a literal 0/1.
            let rows: Vec<String> = (0..chunk.len())
                .map(|r| {
                    let p: Vec<String> = (1..=N_COLUMNS)
                        .map(|c| format!("${}", r * N_COLUMNS + c))
                        .collect();
                    format!("({}, {})", p.join(", "), u8::from(final_outcome))
                })
                .collect();
            let sql = format!(
                "INSERT INTO runs ({COLUMNS}, outcome_final) VALUES {} {conflict}",
                rows.join(", ")
            );
            // Only placeholders are generated here; every value is bound. Not a cached prepared
            // statement: through sqlx's Any driver, a statement prepared while an optional column
            // was NULL refused a later row with a value for it (a cache hit ratio after rows
            // without one) as "incorrect binary data format" on PostgreSQL.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
            for run in chunk {
                q = q
                    .bind(run.run_id.clone())
                    .bind(run.pipeline.clone())
                    .bind(run.branch.clone())
                    .bind(run.image.clone())
                    .bind(run.node.clone())
                    .bind(run.cpu_req)
                    .bind(run.mem_req_gb)
                    .bind(run.concurrency as i64)
                    .bind(run.max_rss_gb)
                    .bind(run.io_read_gb)
                    .bind(run.io_write_gb)
                    .bind(run.cache_hit_ratio)
                    .bind(run.num_steps.map(|n| n as i64))
                    .bind(run.avg_step_duration_s)
                    .bind(run.duration_s)
                    .bind(run.success as i64)
                    .bind(run.retry_count as i64)
                    .bind(run.oom_killed as i64)
                    .bind(run.started_at.timestamp_millis())
                    .bind(now.timestamp_millis())
                    .bind(run.decision.map(|d| d.as_str().to_string()))
                    .bind(run.predicted_duration_s);
            }
            let done = q.execute(&mut *tx).await.map_err(Error::store(what))?;
            changed += done.rows_affected();
            unchanged += chunk.len() as u64 - done.rows_affected();
        }
        tx.commit()
            .await
            .map_err(Error::store(format!("committing {what}")))?;
        Ok((changed, unchanged))
    }

    async fn fetch(&self, sql: String, binds: Vec<Bind<'_>>, what: &str) -> Result<Vec<RunRecord>> {
        // The SQL is built from constants in this file; every value is bound.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for b in binds {
            q = match b {
                Bind::Text(s) => q.bind(s.to_string()),
                Bind::Int(i) => q.bind(i),
            };
        }
        let rows = q.fetch_all(&self.pool).await.map_err(Error::store(what))?;
        rows.iter()
            .map(|r| decode(r).map_err(Error::store(format!("decoding a row while {what}"))))
            .collect()
    }

    /// The last `limit` successful runs of `pipeline` (or of all pipelines), oldest first.
    pub async fn recent_successful(
        &self,
        pipeline: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunRecord>> {
        let mut runs = match pipeline {
            Some(p) => {
                self.fetch(
                    format!("SELECT {COLUMNS} FROM runs WHERE success = 1 AND pipeline = $1 ORDER BY started_at_ms DESC, run_id DESC LIMIT $2"),
                    vec![Bind::Text(p), Bind::Int(limit as i64)],
                    "reading recent successful runs of a pipeline",
                )
                .await?
            }
            None => {
                self.fetch(
                    format!("SELECT {COLUMNS} FROM runs WHERE success = 1 ORDER BY started_at_ms DESC, run_id DESC LIMIT $1"),
                    vec![Bind::Int(limit as i64)],
                    "reading recent successful runs",
                )
                .await?
            }
        };
        runs.reverse();
        Ok(runs)
    }

    /// Up to `limit` successful runs of `pipeline` that started strictly before `before`, oldest first.
    pub async fn successful_before(
        &self,
        pipeline: &str,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<RunRecord>> {
        let mut runs = self
            .fetch(
                format!("SELECT {COLUMNS} FROM runs WHERE success = 1 AND pipeline = $1 AND started_at_ms < $2 ORDER BY started_at_ms DESC, run_id DESC LIMIT $3"),
                vec![Bind::Text(pipeline), Bind::Int(before.timestamp_millis()), Bind::Int(limit as i64)],
                "reading a pipeline's earlier runs",
            )
            .await?;
        runs.reverse();
        Ok(runs)
    }

    /// The last `limit` runs of `pipeline`, successful or not, oldest first.
    pub async fn recent_runs(&self, pipeline: &str, limit: usize) -> Result<Vec<RunRecord>> {
        let mut runs = self
            .fetch(
                format!("SELECT {COLUMNS} FROM runs WHERE pipeline = $1 ORDER BY started_at_ms DESC, run_id DESC LIMIT $2"),
                vec![Bind::Text(pipeline), Bind::Int(limit as i64)],
                "reading recent runs of a pipeline",
            )
            .await?;
        runs.reverse();
        Ok(runs)
    }

    /// Every run (successful or not) that started at or after `since`, of `pipeline` or of all
    /// pipelines, oldest first: the input of the savings report and the dashboard.
    pub async fn runs_since(
        &self,
        pipeline: Option<&str>,
        since: DateTime<Utc>,
    ) -> Result<Vec<RunRecord>> {
        let since = since.timestamp_millis();
        match pipeline {
            Some(p) => {
                self.fetch(
                    format!("SELECT {COLUMNS} FROM runs WHERE pipeline = $1 AND started_at_ms >= $2 ORDER BY started_at_ms, run_id"),
                    vec![Bind::Text(p), Bind::Int(since)],
                    "reading a pipeline's runs for a period",
                )
                .await
            }
            None => {
                self.fetch(
                    format!("SELECT {COLUMNS} FROM runs WHERE started_at_ms >= $1 ORDER BY started_at_ms, run_id"),
                    vec![Bind::Int(since)],
                    "reading runs for a period",
                )
                .await
            }
        }
    }

    /// The most recent successful run of `pipeline`, whose config is the optimizer's baseline.
    pub async fn last_successful(&self, pipeline: &str) -> Result<Option<RunRecord>> {
        Ok(self.recent_successful(Some(pipeline), 1).await?.pop())
    }

    /// Every pipeline that has runs, by name.
    pub async fn pipelines(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT DISTINCT pipeline FROM runs ORDER BY pipeline")
            .fetch_all(&self.pool)
            .await
            .map_err(Error::store("listing pipelines"))?;
        rows.iter()
            .map(|r| {
                r.try_get::<String, _>(0)
                    .map_err(Error::store("decoding a pipeline name"))
            })
            .collect()
    }

    /// Number of runs ingested at or after `since`.
    pub async fn count_runs_since(&self, since: DateTime<Utc>) -> Result<u64> {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM runs WHERE ingested_at_ms >= $1")
            .bind(since.timestamp_millis())
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(Error::store("counting new runs"))?;
        Ok(n.max(0) as u64)
    }

    /// Per-pipeline aggregates (p95 peak RSS, mean cache hit ratio, mean steps, highest
    /// successful concurrency, OOMs) over the pipeline's recent runs, and the history features
    /// are computed from: its latest `features::HISTORY_LOOKBACK` successful runs, the same
    /// bound training uses. A stored run has finished, so everything here is known now.
    pub async fn pipeline_stats(&self, pipeline: &str) -> Result<crate::stats::PipelineStats> {
        let runs = self
            .recent_runs(pipeline, crate::stats::STATS_WINDOW)
            .await?;
        let mut stats = crate::stats::PipelineStats::from_runs(pipeline, &runs);
        let ok = self
            .recent_successful(Some(pipeline), crate::features::HISTORY_LOOKBACK)
            .await?;
        stats.history = crate::features::PipelineHistory::from_runs(&ok);
        Ok(stats)
    }

    /// Total number of stored runs.
    pub async fn count_runs(&self) -> Result<u64> {
        self.count_runs_since(ms_to_time(i64::MIN / 2)).await
    }
}

enum Bind<'a> {
    Text(&'a str),
    Int(i64),
}

/// Hides a password in a database or Redis URL (`scheme://user:password@host…`) before it is
/// logged or shown. The credentials end at the last `@` of the authority, so a password with an
/// unescaped `@` is hidden whole.
pub fn redact(url: &str) -> String {
    let Some(s) = url.find("://") else {
        return url.to_string();
    };
    let start = s + 3;
    let authority_end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let Some(at) = url[start..authority_end].rfind('@').map(|i| start + i) else {
        return url.to_string();
    };
    let creds = &url[start..at];
    match creds.find(':') {
        Some(c) => format!("{}{}:***{}", &url[..start], &creds[..c], &url[at..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14: a Redis URL's password was printed in error messages.
    #[test]
    fn redis_urls_and_odd_passwords_are_redacted() {
        assert_eq!(
            redact("redis://:s3cret@redis:6379/0"),
            "redis://:***@redis:6379/0"
        );
        assert_eq!(
            redact("rediss://default:s3cret@redis:6380"),
            "rediss://default:***@redis:6380"
        );
        assert_eq!(
            redact("postgres://im:p@ss@db/x?sslmode=require"),
            "postgres://im:***@db/x?sslmode=require"
        );
        assert_eq!(redact("redis://redis:6379/0"), "redis://redis:6379/0");
        assert_eq!(
            redact("redis://redis:6379/0?user=a@b"),
            "redis://redis:6379/0?user=a@b",
            "an @ after the authority is not a password"
        );
    }

    #[test]
    fn urls_are_normalised_and_redacted() {
        assert_eq!(
            normalise_url("sqlite://x.db").unwrap().0,
            "sqlite://x.db?mode=rwc"
        );
        assert_eq!(
            normalise_url("sqlite://x.db?cache=shared").unwrap().0,
            "sqlite://x.db?cache=shared&mode=rwc"
        );
        assert_eq!(
            normalise_url("postgres://h/db").unwrap().1,
            Backend::Postgres
        );
        assert!(normalise_url("mysql://h/db").is_err());
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }
}
