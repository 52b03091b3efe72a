//! Feature schema, categorical encodings and the lagged history features.
//!
//! Train/serve parity: a training row's features are computed from a [`PipelineHistory`] that
//! holds only what admission could have known when that run started, through the same
//! [`context_features`] the webhook calls at admission time. One definition of "known at t"
//! ([`known_at`]) serves both sides: a run is history for another only if it *finished*
//! (`started_at + duration_s`, in milliseconds) strictly before that run started. Builds of one
//! pipeline overlap in CI; a run still building at admission has no duration yet. Among the
//! known runs, the history keeps the [`HISTORY_LOOKBACK`] latest successful ones by
//! `(started_at, run_id)`, the order the store's queries use, so equal start times break the
//! same way everywhere. A row's own peak RSS, steps, step duration or duration never become its
//! features.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::record::RunRecord;
use crate::{BuildConfig, BuildContext};

/// Version of the feature schema; a model trained on another version is refused.
pub const FEATURE_SCHEMA_VERSION: u32 = 1;

/// Successful runs of a pipeline that the rolling history averages over.
pub const HISTORY_WINDOW: usize = 20;

/// Latest known successful runs of a pipeline the history looks at (the rolling window and the
/// previous build of a branch): the same bound at training and at admission.
pub const HISTORY_LOOKBACK: usize = 200;

/// Value of a history feature that has no data yet (trees split it off cleanly).
pub const MISSING: f64 = -1.0;

/// Feature names, in column order.
pub const FEATURE_NAMES: [&str; N_FEATURES] = [
    "pipeline",
    "image",
    "node",
    "is_main_branch",
    "cpu_req",
    "mem_req_gb",
    "concurrency",
    "jobs_per_cpu",
    "effective_parallelism",
    "hist_runs",
    "hist_max_rss_gb",
    "hist_io_read_gb",
    "hist_io_write_gb",
    "hist_cache_hit_ratio",
    "hist_num_steps",
    "hist_avg_step_duration_s",
    "hist_duration_s",
    "prev_duration_s",
    "prev_cache_hit_ratio",
    "prev_cpu_req",
    "prev_mem_req_gb",
    "prev_concurrency",
    "prev_age_s",
];

/// Number of features.
pub const N_FEATURES: usize = 23;

/// Column of the encoded pipeline (pairs for rank accuracy are formed within it).
pub const PIPELINE_COLUMN: usize = 0;

/// Columns that depend on the candidate config (filled per candidate by [`with_config`]).
const CONFIG_COLUMNS: std::ops::Range<usize> = 4..9;

/// Code for a category not seen in training.
pub const UNKNOWN_CODE: f64 = 0.0;

/// Category → code maps, saved inside the model so serving encodes exactly as training did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Encodings {
    /// Pipeline codes.
    pub pipeline: BTreeMap<String, u32>,
    /// Image codes.
    pub image: BTreeMap<String, u32>,
    /// Node type codes.
    pub node: BTreeMap<String, u32>,
}

fn codes<'a>(values: impl Iterator<Item = &'a str>) -> BTreeMap<String, u32> {
    let set: BTreeSet<&str> = values.collect();
    // Codes start at 1: 0 is "unknown". Sorted, so the same data gives the same codes.
    set.into_iter()
        .enumerate()
        .map(|(i, v)| (v.to_string(), i as u32 + 1))
        .collect()
}

impl Encodings {
    /// Learns the codes from the training runs.
    pub fn fit(runs: &[RunRecord]) -> Encodings {
        Encodings {
            pipeline: codes(runs.iter().map(|r| r.pipeline.as_str())),
            image: codes(runs.iter().map(|r| r.image.as_str())),
            node: codes(runs.iter().map(|r| r.node.as_str())),
        }
    }

    fn code(map: &BTreeMap<String, u32>, v: &str) -> f64 {
        map.get(v).map_or(UNKNOWN_CODE, |c| *c as f64)
    }

    /// Whether the model has seen this pipeline.
    pub fn knows_pipeline(&self, pipeline: &str) -> bool {
        self.pipeline.contains_key(pipeline)
    }
}

/// Whether a branch name is the main line (`main`, `master`, `trunk`, `develop`'s not).
pub fn is_main_branch(branch: &str) -> bool {
    let b = branch.trim_start_matches("refs/heads/");
    matches!(b, "main" | "master" | "trunk")
}

/// When `run` finished: `started_at + duration_s`, to the millisecond (the store's resolution).
pub fn finished_at(run: &RunRecord) -> DateTime<Utc> {
    let ms = (run.duration_s * 1000.0).round();
    let ms = if ms.is_finite() { ms as i64 } else { 0 };
    run.started_at + Duration::milliseconds(ms.max(0))
}

/// The one definition of "known at `t`": `run` finished strictly before `t`.
pub fn known_at(run: &RunRecord, t: DateTime<Utc>) -> bool {
    finished_at(run) < t
}

/// The clock features are computed at: `now` floored to the minute. The webhook decides (and
/// caches decisions) per minute; flooring here too makes the value independent of the caller.
pub fn feature_clock(now: DateTime<Utc>) -> DateTime<Utc> {
    let ms = now.timestamp_millis();
    let floored = ms - ms.rem_euclid(60_000);
    DateTime::from_timestamp_millis(floored).unwrap_or(now)
}

/// What was known about a pipeline before a build: its latest [`HISTORY_LOOKBACK`] known
/// successful runs, ordered by `(started_at, run_id)`.
#[derive(Debug, Clone, Default)]
pub struct PipelineHistory {
    runs: BTreeMap<(DateTime<Utc>, String), RunRecord>,
}

impl PipelineHistory {
    /// Builds the history from known runs (any order; failed runs are ignored).
    pub fn from_runs<'a>(runs: impl IntoIterator<Item = &'a RunRecord>) -> PipelineHistory {
        let mut h = PipelineHistory::default();
        for r in runs {
            h.push(r);
        }
        h
    }

    /// Records a run that became known; failed runs are ignored (their durations are truncated).
    pub fn push(&mut self, run: &RunRecord) {
        if !run.success {
            return;
        }
        self.runs
            .insert((run.started_at, run.run_id.clone()), run.clone());
        if self.runs.len() > HISTORY_LOOKBACK {
            self.runs.pop_first();
        }
    }

    fn recent(&self) -> impl Iterator<Item = &RunRecord> {
        self.runs.values().rev().take(HISTORY_WINDOW)
    }

    /// The runs of the rolling window, newest first.
    pub fn recent_runs(&self) -> impl Iterator<Item = &RunRecord> {
        self.recent()
    }

    /// Number of runs in the rolling window.
    pub fn len(&self) -> usize {
        self.runs.len().min(HISTORY_WINDOW)
    }

    /// Whether nothing is known yet.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The latest known successful run of `branch` within the lookback.
    pub fn last_of_branch(&self, branch: &str) -> Option<&RunRecord> {
        self.runs.values().rev().find(|r| r.branch == branch)
    }

    fn mean(&self, f: impl Fn(&RunRecord) -> Option<f64>) -> f64 {
        let (sum, n) = self
            .recent()
            .filter_map(f)
            .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
        if n == 0 {
            MISSING
        } else {
            sum / n as f64
        }
    }
}

/// A feature row with the config columns not yet filled: computed once per admission.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BaseRow(pub [f64; N_FEATURES]);

/// Everything but the config columns, from the context and what was known before `now`
/// (`history` must hold only runs [`known_at`] `now`; `prev_age_s` is measured from the
/// previous build's end to [`feature_clock`]`(now)`).
pub fn context_features(
    enc: &Encodings,
    history: &PipelineHistory,
    ctx: &BuildContext,
    now: DateTime<Utc>,
) -> BaseRow {
    let mut f = [0.0; N_FEATURES];
    f[0] = Encodings::code(&enc.pipeline, &ctx.pipeline);
    f[1] = Encodings::code(&enc.image, &ctx.image);
    f[2] = Encodings::code(&enc.node, &ctx.node);
    f[3] = if is_main_branch(&ctx.branch) {
        1.0
    } else {
        0.0
    };
    f[9] = history.len() as f64;
    f[10] = history.mean(|r| r.max_rss_gb);
    f[11] = history.mean(|r| r.io_read_gb);
    f[12] = history.mean(|r| r.io_write_gb);
    f[13] = history.mean(|r| r.cache_hit_ratio);
    f[14] = history.mean(|r| r.num_steps.map(f64::from));
    f[15] = history.mean(|r| r.avg_step_duration_s);
    f[16] = history.mean(|r| Some(r.duration_s));
    match history.last_of_branch(&ctx.branch) {
        Some(prev) => {
            f[17] = prev.duration_s;
            f[18] = prev.cache_hit_ratio.unwrap_or(MISSING);
            f[19] = prev.cpu_req;
            f[20] = prev.mem_req_gb;
            f[21] = prev.concurrency as f64;
            let age = feature_clock(now) - finished_at(prev);
            f[22] = (age.num_milliseconds() as f64 / 1000.0).max(0.0);
        }
        None => f[17..23].fill(MISSING),
    }
    BaseRow(f)
}

/// The full feature row for one candidate config.
#[inline]
pub fn with_config(base: &BaseRow, c: &BuildConfig) -> [f64; N_FEATURES] {
    let mut f = base.0;
    let conc = c.concurrency as f64;
    f[CONFIG_COLUMNS.start] = c.cpu;
    f[5] = c.mem_gb;
    f[6] = conc;
    f[7] = conc / c.cpu.max(1e-3);
    f[8] = conc.min(c.cpu);
    f
}

/// A feature matrix (row-major) with labels and the runs it came from.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    /// Row-major features, `N_FEATURES` per row.
    pub x: Vec<f64>,
    /// Labels: build duration in seconds.
    pub y: Vec<f64>,
    /// Start time of each row's run (for temporal splits).
    pub started_at: Vec<DateTime<Utc>>,
}

impl Dataset {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.y.len()
    }
    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }
    /// Row `i`'s features.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.x[i * N_FEATURES..(i + 1) * N_FEATURES]
    }
    /// A new dataset with the given rows, in that order.
    pub fn select(&self, idx: &[usize]) -> Dataset {
        let mut d = Dataset::default();
        for &i in idx {
            d.x.extend_from_slice(self.row(i));
            d.y.push(self.y[i]);
            d.started_at.push(self.started_at[i]);
        }
        d
    }
}

/// Builds training rows for `window` (successful runs, any order) with lagged history features.
///
/// `warmup` holds earlier successful runs of the same pipelines (older than the window): they
/// feed the history but are not rows themselves. Each row sees only runs [`known_at`] its start:
/// runs become history at their end, and a run ending exactly when another starts is not yet
/// known to it. Rows come out in `(started_at, run_id)` order.
pub fn build_dataset(enc: &Encodings, warmup: &[RunRecord], window: &[RunRecord]) -> Dataset {
    // Events: a run's end makes it history (kind 1); a window run's start is a row (kind 0).
    // At equal times starts come first, so "finished strictly before" holds.
    let mut events: Vec<(DateTime<Utc>, u8, &str, &RunRecord)> = Vec::new();
    for r in warmup.iter().chain(window).filter(|r| r.success) {
        events.push((finished_at(r), 1, r.run_id.as_str(), r));
    }
    for r in window.iter().filter(|r| r.success) {
        events.push((r.started_at, 0, r.run_id.as_str(), r));
    }
    events.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
    let mut histories: HashMap<&str, PipelineHistory> = HashMap::new();
    let mut d = Dataset::default();
    for (_, kind, _, run) in events {
        let h = histories.entry(run.pipeline.as_str()).or_default();
        if kind == 1 {
            h.push(run);
            continue;
        }
        let ctx = BuildContext::of_run(run);
        let base = context_features(enc, h, &ctx, run.started_at);
        d.x.extend_from_slice(&with_config(&base, &run.config()));
        d.y.push(run.duration_s);
        d.started_at.push(run.started_at);
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// A whole minute, so that feature-clock flooring leaves the test's times alone.
    const T0: i64 = 1_699_999_980;

    fn run(id: &str, branch: &str, minute: i64, duration: f64, rss: f64) -> RunRecord {
        RunRecord {
            run_id: id.into(),
            pipeline: "p".into(),
            branch: branch.into(),
            image: "rust:1.80".into(),
            node: "m5.xlarge".into(),
            cpu_req: 4.0,
            mem_req_gb: 8.0,
            concurrency: 4,
            max_rss_gb: Some(rss),
            io_read_gb: Some(1.0),
            io_write_gb: Some(0.5),
            cache_hit_ratio: Some(0.5),
            num_steps: Some(10),
            avg_step_duration_s: Some(duration / 10.0),
            duration_s: duration,
            success: true,
            retry_count: 0,
            oom_killed: false,
            started_at: Utc.timestamp_opt(T0 + minute * 60, 0).unwrap(),
            decision: None,
            predicted_duration_s: None,
        }
    }

    #[test]
    fn names_match_the_count_and_cover_the_design() {
        assert_eq!(FEATURE_NAMES.len(), N_FEATURES);
        for design in [
            "image",
            "node",
            "cpu_req",
            "mem_req_gb",
            "concurrency",
            "hist_max_rss_gb",
            "hist_io_read_gb",
            "hist_io_write_gb",
            "hist_cache_hit_ratio",
            "hist_num_steps",
            "hist_avg_step_duration_s",
            "is_main_branch",
            "pipeline",
        ] {
            assert!(FEATURE_NAMES.contains(&design), "{design}");
        }
    }

    #[test]
    fn rows_see_only_earlier_runs_never_their_own() {
        let runs = vec![
            run("a", "main", 0, 100.0, 2.0),
            run("b", "main", 10, 200.0, 4.0),
            run("c", "dev", 20, 300.0, 8.0),
        ];
        let enc = Encodings::fit(&runs);
        let d = build_dataset(&enc, &[], &runs);
        assert_eq!(d.len(), 3);
        // First row: no history at all.
        assert_eq!(d.row(0)[9], 0.0);
        assert_eq!(d.row(0)[10], MISSING);
        assert_eq!(d.row(0)[17], MISSING);
        // Second row: only run a.
        assert_eq!(d.row(1)[10], 2.0);
        assert_eq!(d.row(1)[16], 100.0);
        assert_eq!(d.row(1)[17], 100.0);
        // Age from a's end (100 s after it started) to b's start.
        assert_eq!(d.row(1)[22], 500.0);
        // Third row: mean of a and b (not its own 8 GB); its branch is new, so no previous run.
        assert_eq!(d.row(2)[10], 3.0);
        assert_eq!(d.row(2)[16], 150.0);
        assert_eq!(d.row(2)[17], MISSING);
    }

    #[test]
    fn serving_features_equal_training_features() {
        // One build a minute, each longer than a minute: builds overlap.
        let runs: Vec<_> = (0..30)
            .map(|i| {
                run(
                    &format!("r{i:02}"),
                    if i % 3 == 0 { "main" } else { "pr-1" },
                    i,
                    100.0 + i as f64,
                    1.0 + i as f64 / 10.0,
                )
            })
            .collect();
        let enc = Encodings::fit(&runs);
        let d = build_dataset(&enc, &[], &runs);
        // At admission of run 29, the webhook knows the runs that have finished.
        let last = &runs[29];
        let known: Vec<_> = runs
            .iter()
            .filter(|r| known_at(r, last.started_at))
            .collect();
        assert_eq!(known.len(), 27, "runs 27 and 28 are still building");
        let h = PipelineHistory::from_runs(known);
        let base = context_features(&enc, &h, &BuildContext::of_run(last), last.started_at);
        assert_eq!(with_config(&base, &last.config()).as_slice(), d.row(29));
        // The previous build of pr-1 that the row sees is run 26, not 28 (still building).
        assert_eq!(d.row(29)[17], 126.0);
    }

    #[test]
    fn a_run_is_history_only_once_finished_and_ties_break_by_run_id() {
        // b starts exactly when a ends: not yet known to b. c and d start at the same second.
        let a = run("a", "main", 0, 60.0, 1.0);
        let b = run("b", "main", 1, 600.0, 2.0);
        let c = run("c", "main", 20, 10.0, 3.0);
        let d = run("d", "main", 20, 10.0, 4.0);
        let e = run("e", "main", 21, 10.0, 5.0);
        let runs = vec![e.clone(), d.clone(), c.clone(), b.clone(), a.clone()];
        let enc = Encodings::fit(&runs);
        let ds = build_dataset(&enc, &[], &runs);
        // Rows in (started_at, run_id) order: a, b, c, d, e.
        assert_eq!(ds.row(1)[9], 0.0, "a ended exactly when b started");
        assert_eq!(ds.row(2)[10], 1.5, "c knows a and b");
        assert_eq!(
            ds.row(3)[10],
            1.5,
            "d does not know c, which started with it"
        );
        assert_eq!(ds.row(4)[9], 4.0, "e knows a, b, c and d");
        assert_eq!(ds.row(4)[17], 10.0);
        // The latest of the tied pair by run_id is the previous build.
        let h = PipelineHistory::from_runs([&c, &d]);
        assert_eq!(
            h.last_of_branch("main").map(|r| r.run_id.as_str()),
            Some("d")
        );
    }

    #[test]
    fn the_history_keeps_the_latest_lookback_runs() {
        let runs: Vec<_> = (0..(HISTORY_LOOKBACK as i64 + 5))
            .map(|i| {
                run(
                    &format!("r{i:04}"),
                    if i == 0 { "old" } else { "main" },
                    i,
                    1.0,
                    1.0,
                )
            })
            .collect();
        let h = PipelineHistory::from_runs(runs.iter().rev());
        assert_eq!(h.len(), HISTORY_WINDOW);
        assert!(h.last_of_branch("old").is_none(), "beyond the lookback");
        assert_eq!(h.last_of_branch("main").unwrap().run_id, "r0204");
    }

    #[test]
    fn the_feature_clock_is_floored_to_the_minute() {
        let t = Utc.timestamp_opt(T0 + 59, 999_000_000).unwrap();
        assert_eq!(feature_clock(t), Utc.timestamp_opt(T0, 0).unwrap());
        assert_eq!(feature_clock(feature_clock(t)), feature_clock(t));
    }

    #[test]
    fn warmup_feeds_history_but_is_not_a_row_and_failures_are_skipped() {
        let warm = vec![run("w", "main", 0, 50.0, 1.0)];
        let mut failed = run("f", "main", 5, 10.0, 9.0);
        failed.success = false;
        let window = vec![failed, run("x", "main", 10, 100.0, 2.0)];
        let enc = Encodings::fit(&window);
        let d = build_dataset(&enc, &warm, &window);
        assert_eq!(d.len(), 1);
        assert_eq!(
            d.row(0)[17],
            50.0,
            "previous successful run of main is the warmup run"
        );
        assert_eq!(
            d.row(0)[10],
            1.0,
            "the failed run's RSS is not in the history"
        );
    }

    #[test]
    fn unknown_categories_encode_as_unknown() {
        let enc = Encodings::fit(&[run("a", "main", 0, 1.0, 1.0)]);
        let ctx = BuildContext {
            pipeline: "new".into(),
            branch: "x".into(),
            image: "other".into(),
            node: "m5.xlarge".into(),
        };
        let b = context_features(&enc, &PipelineHistory::default(), &ctx, Utc::now());
        assert_eq!(b.0[0], UNKNOWN_CODE);
        assert_eq!(b.0[1], UNKNOWN_CODE);
        assert_eq!(b.0[2], 1.0);
        assert!(!enc.knows_pipeline("new"));
    }
}
