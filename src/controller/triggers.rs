//! Automatic retraining: the design's "every 1000 new runs" and "MAE drift above 20 % of the
//! model's own baseline", evaluated periodically for every TrainingJob with `spec.triggers`.
//!
//! How a firing becomes a training run: the controller creates a **child TrainingJob** (the
//! parent's spec without schedule or triggers, an ownerReference to the parent, the label
//! `inframind.io/parent=<parent>` and the annotation `inframind.io/trigger-reason`), and records
//! the firing in the parent's `status.lastTrigger`. A child is an ordinary TrainingJob: it trains
//! once, through the same reconcile path, and keeps its own status, events and history
//! (`kubectl get tj -l inframind.io/parent=<parent>`); deleting the parent deletes its children.
//!
//! What is measured ([`measure`], the edge; [`evaluate`], pure):
//! - **New runs**: runs *ingested* since the active model was trained (`ModelMeta.created_at`),
//!   or since the last firing if later, so one batch of runs fires once. Counted over all
//!   pipelines (the store counts by ingestion time).
//! - **Drift**: the active model's MAE on successful runs that started after its training
//!   window, against its own holdout MAE. Measured on at least [`MIN_DRIFT_ROWS`] rows, and it
//!   fires at most once per active model (a retrain that fails its gates is not retried on drift
//!   alone; the new-runs trigger still fires later).

use chrono::{DateTime, Utc};

use super::crd::Triggers;
use crate::evaluation::mae;
use crate::features::build_dataset;
use crate::model::{Model, ModelMeta};
use crate::record::RunRecord;

/// Fewest recent rows drift is measured on.
pub const MIN_DRIFT_ROWS: usize = 20;

/// The active model's error on runs newer than its training window.
#[derive(Debug, Clone, PartialEq)]
pub struct Drift {
    /// Its own holdout MAE (the baseline), seconds.
    pub baseline_mae_s: f64,
    /// Its MAE on the recent runs, seconds.
    pub recent_mae_s: f64,
    /// Recent rows measured.
    pub rows: usize,
}

impl Drift {
    /// Relative change of the MAE: 0.25 means 25 % worse than the baseline.
    pub fn fraction(&self) -> f64 {
        if self.baseline_mae_s > 0.0 {
            self.recent_mae_s / self.baseline_mae_s - 1.0
        } else if self.recent_mae_s > 0.0 {
            f64::INFINITY
        } else {
            0.0
        }
    }
}

/// What the store and the registry said.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The active version, if any.
    pub active_version: Option<String>,
    /// Start of the new-runs count.
    pub since: DateTime<Utc>,
    /// Runs ingested since then.
    pub new_runs: u64,
    /// Drift of the active model, when measurable and not already acted on.
    pub drift: Option<Drift>,
}

/// Why a trigger fired.
#[derive(Debug, Clone, PartialEq)]
pub enum Fired {
    /// Enough new runs.
    NewRuns {
        /// Runs since `since`.
        count: u64,
        /// The configured threshold.
        threshold: u64,
        /// Start of the count.
        since: DateTime<Utc>,
    },
    /// The active model got worse on recent runs.
    MaeDrift {
        /// The measurement.
        drift: Drift,
        /// The configured threshold.
        threshold: f64,
    },
}

impl Fired {
    /// `NewRuns` or `MaeDrift`.
    pub fn kind(&self) -> &'static str {
        match self {
            Fired::NewRuns { .. } => "NewRuns",
            Fired::MaeDrift { .. } => "MaeDrift",
        }
    }

    /// The reason in words (the child's annotation and the parent's status).
    pub fn reason(&self) -> String {
        match self {
            Fired::NewRuns {
                count,
                threshold,
                since,
            } => format!(
                "{count} new runs since {} (threshold {threshold})",
                since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            Fired::MaeDrift { drift, threshold } => format!(
                "active model's MAE on {} recent runs is {:.2} s, {:.0} % above its holdout MAE {:.2} s (threshold {:.0} %)",
                drift.rows,
                drift.recent_mae_s,
                drift.fraction() * 100.0,
                drift.baseline_mae_s,
                threshold * 100.0
            ),
        }
    }
}

/// Where the new-runs count starts: the later of the active model's training and the last
/// firing; without either, the TrainingJob's creation.
pub fn since(
    active_created: Option<DateTime<Utc>>,
    last_fired: Option<DateTime<Utc>>,
    created: DateTime<Utc>,
) -> DateTime<Utc> {
    match (active_created, last_fired) {
        (Some(a), Some(f)) => a.max(f),
        (Some(a), None) => a,
        (None, Some(f)) => f,
        (None, None) => created,
    }
}

/// Whether drift may still fire: not if a trigger already fired since the active model was
/// trained (its retrain is under way or was judged).
pub fn drift_armed(
    active_created: Option<DateTime<Utc>>,
    last_fired: Option<DateTime<Utc>>,
) -> bool {
    match (active_created, last_fired) {
        (Some(a), Some(f)) => f < a,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// Which trigger fires, if any (new runs first).
pub fn evaluate(t: &Triggers, o: &Observation) -> Option<Fired> {
    if t.every_n_runs > 0 && o.new_runs >= t.every_n_runs {
        return Some(Fired::NewRuns {
            count: o.new_runs,
            threshold: t.every_n_runs,
            since: o.since,
        });
    }
    if t.mae_drift_fraction > 0.0 {
        if let Some(d) = &o.drift {
            if d.rows >= MIN_DRIFT_ROWS && d.fraction() > t.mae_drift_fraction {
                return Some(Fired::MaeDrift {
                    drift: d.clone(),
                    threshold: t.mae_drift_fraction,
                });
            }
        }
    }
    None
}

/// Scores the active model on the window's runs that started after its training window
/// (`warmup` and earlier window runs feed the history features only). `None` below
/// [`MIN_DRIFT_ROWS`] rows.
pub fn measure_drift(
    active: &Model,
    meta: &ModelMeta,
    warmup: &[RunRecord],
    window: &[RunRecord],
) -> Option<Drift> {
    let data = build_dataset(&active.encodings, warmup, window);
    let end = meta.window.to?;
    let recent: Vec<usize> = (0..data.len())
        .filter(|&i| data.started_at[i] > end)
        .collect();
    if recent.len() < MIN_DRIFT_ROWS {
        return None;
    }
    let rows = data.select(&recent);
    let pred = active.forest.predict(&rows.x);
    Some(Drift {
        baseline_mae_s: meta.metrics().mae_s,
        recent_mae_s: mae(&rows.y, &pred),
        rows: rows.len(),
    })
}

/// A child TrainingJob's name: the parent's (shortened to fit) and the firing time.
pub fn child_name(parent: &str, fired_at: DateTime<Utc>) -> String {
    let suffix = fired_at.format("%Y%m%d-%H%M%S").to_string();
    let max_parent = 63 - suffix.len() - 1;
    let mut p: String = parent.chars().take(max_parent).collect();
    while p.ends_with('-') || p.ends_with('.') {
        p.pop();
    }
    format!("{p}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn obs(new_runs: u64, drift: Option<Drift>) -> Observation {
        Observation {
            active_version: Some("model_v1".into()),
            since: t("2026-03-01T00:00:00Z"),
            new_runs,
            drift,
        }
    }

    fn drift(baseline: f64, recent: f64, rows: usize) -> Option<Drift> {
        Some(Drift {
            baseline_mae_s: baseline,
            recent_mae_s: recent,
            rows,
        })
    }

    #[test]
    fn new_runs_fire_at_the_threshold() {
        let trig = Triggers::default();
        assert_eq!(evaluate(&trig, &obs(999, None)), None);
        let f = evaluate(&trig, &obs(1000, None)).unwrap();
        assert_eq!(f.kind(), "NewRuns");
        assert_eq!(
            f.reason(),
            "1000 new runs since 2026-03-01T00:00:00Z (threshold 1000)"
        );
    }

    #[test]
    fn drift_fires_above_the_fraction_with_enough_rows() {
        let trig = Triggers::default();
        assert_eq!(evaluate(&trig, &obs(10, drift(10.0, 11.9, 50))), None);
        assert_eq!(evaluate(&trig, &obs(10, drift(10.0, 13.0, 5))), None);
        let f = evaluate(&trig, &obs(10, drift(10.0, 13.0, 50))).unwrap();
        assert_eq!(f.kind(), "MaeDrift");
        assert!(f.reason().contains("30 % above"), "{}", f.reason());
        // Zero disables each trigger.
        let off = Triggers {
            every_n_runs: 0,
            mae_drift_fraction: 0.0,
            ..Triggers::default()
        };
        assert_eq!(
            evaluate(&off, &obs(1_000_000, drift(10.0, 100.0, 500))),
            None
        );
    }

    #[test]
    fn the_count_starts_at_the_later_of_model_and_last_firing() {
        let created = t("2026-01-01T00:00:00Z");
        let model = t("2026-02-01T00:00:00Z");
        let fired = t("2026-02-15T00:00:00Z");
        assert_eq!(since(Some(model), None, created), model);
        assert_eq!(since(Some(model), Some(fired), created), fired);
        assert_eq!(since(None, None, created), created);
        assert!(drift_armed(Some(model), None));
        assert!(
            !drift_armed(Some(model), Some(fired)),
            "already fired for this model"
        );
        assert!(
            drift_armed(Some(fired), Some(model)),
            "a newer model re-arms drift"
        );
        assert!(!drift_armed(None, None));
    }

    #[test]
    fn drift_is_measured_only_on_runs_after_the_training_window() {
        use crate::training::tests::small_model;
        let (model, meta) = small_model(300);
        let end = meta.window.to.unwrap();
        let before: Vec<_> = crate::simulate::demo_runs(300, end, 3)
            .into_iter()
            .filter(|r| r.success)
            .collect();
        assert!(measure_drift(&model, &meta, &[], &before).is_none());
        let later = end + chrono::Duration::days(2);
        let after: Vec<_> = crate::simulate::demo_runs(200, later, 11)
            .into_iter()
            .filter(|r| r.success && r.started_at > end)
            .collect();
        let d = measure_drift(&model, &meta, &before, &after).unwrap();
        assert_eq!(d.rows, after.len());
        assert_eq!(d.baseline_mae_s, meta.metrics().mae_s);
        assert!(d.recent_mae_s.is_finite() && d.recent_mae_s > 0.0);
    }

    #[test]
    fn child_names_fit_in_63_characters() {
        let at = t("2026-03-01T04:05:06Z");
        assert_eq!(child_name("nightly", at), "nightly-20260301-040506");
        let long = "a".repeat(80);
        let n = child_name(&long, at);
        assert_eq!(n.len(), 63);
        assert!(n.ends_with("-20260301-040506"));
    }
}
