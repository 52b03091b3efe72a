//! The `TrainingJob` custom resource (`inframind.io/v1alpha1`, namespaced): what to train, how
//! to judge it, when to run again, and the status the controller reports.
//!
//! Defaults follow the design: the last 500 successful runs of every pipeline, a random 80/20
//! split, 100 trees of depth 15, gates MAE ≤ 30 s and R² ≥ 0.7 and "no worse than the active
//! model on the same holdout", promotion when the gates pass.

use std::time::Duration;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::evaluation::Split;
use crate::forest::ForestParams;
use crate::training::{TrainingSpec, MIN_TRAINING_ROWS};

/// API group of the resource.
pub const GROUP: &str = "inframind.io";
/// API version of the resource.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of the resource.
pub const API_VERSION: &str = "inframind.io/v1alpha1";
/// Label on a child TrainingJob naming the parent whose trigger created it.
pub const PARENT_LABEL: &str = "inframind.io/parent";
/// Annotation on a child TrainingJob saying why it was created.
pub const TRIGGER_ANNOTATION: &str = "inframind.io/trigger-reason";

/// What a TrainingJob trains, how the result is judged, and when it runs again.
///
/// The controller trains once per `metadata.generation` (so editing the spec retrains) and once
/// per tick of `schedule`; `triggers` make it create child TrainingJobs when enough new runs
/// arrived or the active model drifted.
// clippy reads the repeated `printcolumn(...)` keys as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "inframind.io",
    version = "v1alpha1",
    kind = "TrainingJob",
    namespaced,
    status = "TrainingJobStatus",
    shortname = "tj",
    category = "inframind",
    doc = "Retrains InfraMind's build-duration model from telemetry, gates it and promotes it.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "MAE",
        type_ = "number",
        json_path = ".status.metrics.maeSeconds",
        description = "Mean absolute error on the holdout, seconds"
    ),
    printcolumn(
        name = "R2",
        type_ = "number",
        json_path = ".status.metrics.r2",
        description = "R² on the holdout"
    ),
    printcolumn(
        name = "Rank",
        type_ = "number",
        json_path = ".status.metrics.rankAccuracy",
        description = "Rank accuracy on the holdout: configs of a pipeline ordered as they ran"
    ),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.version"),
    printcolumn(name = "Promoted", type_ = "boolean", json_path = ".status.promoted"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct TrainingJobSpec {
    /// Train on this pipeline's runs only; every pipeline when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// How many of the most recent successful runs to train on.
    #[serde(default = "defaults::limit")]
    #[schemars(range(min = 20, max = 1000000))]
    pub limit: u32,
    /// The holdout the served model is fitted on: `random` (80/20) or `temporal` (oldest 80 % →
    /// newest 20 %). Both are scored.
    #[serde(default)]
    pub split: Split,
    /// Fraction of the rows held out for evaluation.
    #[serde(default = "defaults::test_fraction")]
    #[schemars(range(min = 0.05, max = 0.5))]
    pub test_fraction: f64,
    /// Random forest hyperparameters.
    #[serde(default)]
    pub hyperparameters: Hyperparameters,
    /// What a new model must achieve to be promoted.
    #[serde(default)]
    pub gates: Gates,
    /// Make the new model active when it passes its gates.
    #[serde(default = "defaults::yes")]
    pub promote: bool,
    /// Retrain on this cron schedule too (five fields, UTC), e.g. `0 3 * * *`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Retrain automatically when enough new runs arrived or the active model drifted: each
    /// firing creates a child TrainingJob (label `inframind.io/parent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers: Option<Triggers>,
    /// Where the training runs: in the controller (default) or as a batch/v1 Job.
    #[serde(default)]
    pub execution: Execution,
}

/// Random forest hyperparameters (the design's defaults).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Hyperparameters {
    /// Number of trees.
    #[serde(default = "defaults::trees")]
    #[schemars(range(min = 1, max = 2000))]
    pub trees: u32,
    /// Longest root-to-leaf path counted in splits, as in scikit-learn; 0 grows trees fully.
    #[serde(default = "defaults::max_depth")]
    #[schemars(range(max = 64))]
    pub max_depth: u32,
    /// Fewest rows a node needs to be split.
    #[serde(default = "defaults::min_samples_split")]
    #[schemars(range(min = 2))]
    pub min_samples_split: u32,
    /// Fewest rows in a leaf.
    #[serde(default = "defaults::min_samples_leaf")]
    #[schemars(range(min = 1))]
    pub min_samples_leaf: u32,
    /// Features tried per split; all when omitted (scikit-learn's regressor default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_features: Option<u32>,
    /// Seed of the bootstrap samples, the feature choice and the random split.
    #[serde(default = "defaults::seed")]
    pub seed: u32,
}

/// What a new model must achieve to be promoted.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Gates {
    /// Highest acceptable mean absolute error on the holdout, seconds.
    #[serde(default = "defaults::max_mae_seconds")]
    #[schemars(range(min = 0.0))]
    pub max_mae_seconds: f64,
    /// Lowest acceptable R² on the holdout; off unless set (cache state, unknown at admission,
    /// dominates the variance of real build durations, so R² says little about decisions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1.0))]
    pub min_r2: Option<f64>,
    /// Lowest acceptable rank accuracy on the holdout: how often the model orders two runs of a
    /// pipeline with different configs as they ran (0.5 is a coin flip).
    #[serde(default = "defaults::min_rank_accuracy")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_rank_accuracy: f64,
    /// The new model's rank accuracy must not be below the active model's on the same holdout
    /// rows (its MAE must not exceed the active model's when the rows hold no pair to rank).
    #[serde(default = "defaults::yes")]
    pub must_beat_active: bool,
}

/// Automatic retraining (the design's "every 1000 new runs" and "MAE drift above 20 %").
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Triggers {
    /// Retrain after this many runs were ingested since the active model was trained (or since
    /// the last firing); 0 disables.
    #[serde(default = "defaults::every_n_runs")]
    pub every_n_runs: u64,
    /// Retrain when the active model's MAE on runs newer than its training window exceeds its
    /// own holdout MAE by more than this fraction; 0 disables.
    #[serde(default = "defaults::mae_drift_fraction")]
    #[schemars(range(min = 0.0))]
    pub mae_drift_fraction: f64,
    /// How often the triggers are evaluated against the store, seconds.
    #[serde(default = "defaults::check_interval_seconds")]
    #[schemars(range(min = 10))]
    pub check_interval_seconds: u64,
}

/// Where training runs.
///
/// The image and service account are the controller's to choose: a TrainingJob may name another
/// only from the allowlists in the controller's configuration (the API server checks what it can
/// with the CEL rule below; the controller checks the allowlists).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": EXECUTION_RULE,
    "message": EXECUTION_RULE_MESSAGE,
}]))]
pub struct Execution {
    /// `inProcess`: the controller trains (off its async workers). `job`: the controller creates
    /// a batch/v1 Job running `inframind train --training-job NAMESPACE/NAME` in its own
    /// namespace, with its own image and its dedicated training service account.
    #[serde(default)]
    pub mode: ExecutionMode,
    /// Image of the Job's pod (default: the controller's). Only an image the controller's
    /// configuration allows (`--job-allowed-images`); any other fails with `InvalidSpec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^[^\s]+$"))]
    pub image: Option<String>,
    /// Service account of the Job's pod (default: the controller's training service account).
    /// Only one the controller's configuration allows (`--job-allowed-service-accounts`); any
    /// other fails with `InvalidSpec`. It needs `get` on `trainingjobs` and `patch` on
    /// `trainingjobs/status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub service_account_name: Option<String>,
    /// Resources of the Job's training container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// The CEL rule on `spec.execution`: an image or service account only in execution mode `job`
/// (the same check as [`TrainingJobSpec::validate`]).
pub const EXECUTION_RULE: &str =
    "(has(self.mode) && self.mode == 'job') || (!has(self.image) && !has(self.serviceAccountName))";
/// What the API server answers when [`EXECUTION_RULE`] fails.
pub const EXECUTION_RULE_MESSAGE: &str =
    "image and serviceAccountName apply to execution mode `job` only";

/// `inProcess` or `job`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ExecutionMode {
    /// Train inside the controller process.
    #[default]
    InProcess,
    /// Train in a batch/v1 Job.
    Job,
}

/// Where a TrainingJob's current run is.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Waiting for a training slot or for its Job's pod to start.
    Pending,
    /// Training.
    Running,
    /// Trained, gated and (when asked) promoted.
    Succeeded,
    /// See `message` and the conditions for what failed and whether it is retried.
    Failed,
}

/// What the controller reports.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainingJobStatus {
    /// Pending, Running, Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// What happened, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The generation whose run has finished (succeeded, or failed in a way retrying cannot
    /// fix). While it differs from `metadata.generation` the controller keeps trying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Trained`, `GatesPassed` and `Promoted`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Who runs the current or last run: `controller/<pod>`, `job/<namespace>/<name>` or
    /// `cli/<host>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
    /// Why the current or last run started (spec generation, schedule tick, trigger).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_reason: Option<String>,
    /// When the current or last run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the last run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// The last schedule tick a run covered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// The model version the last run produced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Whether that version was made active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted: Option<bool>,
    /// The version that was active before the promotion (what rollback restores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<String>,
    /// The active version the new model was compared with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compared_with: Option<String>,
    /// A version that passed its gates but could not be promoted yet (registry unreachable);
    /// promotion is retried with backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_promotion: Option<String>,
    /// Holdout metrics of the produced model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<RunMetrics>,
    /// Every gate's verdict.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GateResult>,
    /// The first gate that failed, with by how much.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_gate: Option<GateResult>,
    /// The batch/v1 Job running the training (execution mode `job`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobRef>,
    /// The last time a trigger fired, why, and the child TrainingJob it created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_trigger: Option<TriggerRecord>,
    /// The last evaluation of the triggers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_check: Option<TriggerCheck>,
}

/// A model's scores.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunMetrics {
    /// The split the served model was fitted on (the headline numbers are its holdout's).
    pub split: Split,
    /// Mean absolute error on that holdout, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mae_seconds: Option<f64>,
    /// R² on that holdout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r2: Option<f64>,
    /// Rank accuracy on that holdout (absent when it has no pair to rank).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank_accuracy: Option<f64>,
    /// Rows used (training and holdout).
    pub rows: u64,
    /// Scores on the random holdout.
    pub random_holdout: HoldoutMetrics,
    /// Scores on the temporal holdout (newest runs).
    pub temporal_holdout: HoldoutMetrics,
    /// The active model's MAE on the same holdout rows, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_mae_seconds: Option<f64>,
    /// The active model's rank accuracy on the same holdout rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_rank_accuracy: Option<f64>,
}

/// Scores on one holdout.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HoldoutMetrics {
    /// Mean absolute error, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mae_seconds: Option<f64>,
    /// R².
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r2: Option<f64>,
    /// Rank accuracy (absent when the holdout has no pair to rank).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank_accuracy: Option<f64>,
    /// Pairs the rank accuracy was judged on.
    #[serde(default)]
    pub rank_pairs: u64,
    /// Rows trained on.
    pub train_rows: u64,
    /// Rows held out.
    pub test_rows: u64,
}

/// One gate's verdict.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GateResult {
    /// `maxMaeSeconds`, `minR2`, `minRankAccuracy` or `mustBeatActive`.
    pub gate: String,
    /// Whether it passed.
    pub passed: bool,
    /// The new model's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The limit it was held to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// How far on the wrong side of the limit (failed gates only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<f64>,
    /// The verdict in words.
    pub message: String,
}

/// The batch/v1 Job running a TrainingJob.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobRef {
    /// Its namespace (the controller's).
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// A trigger firing.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerRecord {
    /// `NewRuns` or `MaeDrift`.
    pub kind: String,
    /// Why, in words.
    pub reason: String,
    /// When it fired.
    pub fired_at: Time,
    /// The child TrainingJob created for it.
    pub child: String,
}

/// The last evaluation of the triggers.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerCheck {
    /// When they were evaluated.
    pub checked_at: Time,
    /// The active model at the time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_version: Option<String>,
    /// Runs ingested since `since`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_runs: Option<u64>,
    /// Start of the new-runs count (the active model's training, or the last firing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// The active model's MAE on runs newer than its training window, relative to its own
    /// holdout MAE, minus one (0.25 = 25 % worse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_fraction: Option<f64>,
    /// Recent runs the drift was measured on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_rows: Option<u64>,
    /// Why the evaluation failed (store or registry unreachable); it is tried again after
    /// `checkIntervalSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

mod defaults {
    pub fn limit() -> u32 {
        500
    }
    pub fn test_fraction() -> f64 {
        0.2
    }
    pub fn yes() -> bool {
        true
    }
    pub fn trees() -> u32 {
        100
    }
    pub fn max_depth() -> u32 {
        15
    }
    pub fn min_samples_split() -> u32 {
        2
    }
    pub fn min_samples_leaf() -> u32 {
        1
    }
    pub fn seed() -> u32 {
        42
    }
    pub fn max_mae_seconds() -> f64 {
        30.0
    }
    /// Better than a coin flip by a margin: real builds give 0.57 (random holdout) to 0.62
    /// (temporal), simulated histories 0.87 to 0.94 (README, "Choosing the target").
    pub fn min_rank_accuracy() -> f64 {
        0.55
    }
    pub fn every_n_runs() -> u64 {
        1000
    }
    pub fn mae_drift_fraction() -> f64 {
        0.2
    }
    pub fn check_interval_seconds() -> u64 {
        600
    }
}

impl Default for TrainingJobSpec {
    fn default() -> Self {
        TrainingJobSpec {
            pipeline: None,
            limit: defaults::limit(),
            split: Split::Random,
            test_fraction: defaults::test_fraction(),
            hyperparameters: Hyperparameters::default(),
            gates: Gates::default(),
            promote: true,
            schedule: None,
            triggers: None,
            execution: Execution::default(),
        }
    }
}

impl Default for Hyperparameters {
    fn default() -> Self {
        Hyperparameters {
            trees: defaults::trees(),
            max_depth: defaults::max_depth(),
            min_samples_split: defaults::min_samples_split(),
            min_samples_leaf: defaults::min_samples_leaf(),
            max_features: None,
            seed: defaults::seed(),
        }
    }
}

impl Default for Gates {
    fn default() -> Self {
        Gates {
            max_mae_seconds: defaults::max_mae_seconds(),
            min_r2: None,
            min_rank_accuracy: defaults::min_rank_accuracy(),
            must_beat_active: true,
        }
    }
}

impl Default for Triggers {
    fn default() -> Self {
        Triggers {
            every_n_runs: defaults::every_n_runs(),
            mae_drift_fraction: defaults::mae_drift_fraction(),
            check_interval_seconds: defaults::check_interval_seconds(),
        }
    }
}

impl Triggers {
    /// How often the triggers are evaluated.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.check_interval_seconds.max(10))
    }
}

impl TrainingJobSpec {
    /// Checks what the schema cannot express; the message names the field and what to do.
    pub fn validate(&self) -> Result<(), String> {
        if (self.limit as usize) < MIN_TRAINING_ROWS {
            return Err(format!(
                "spec.limit is {}, but at least {MIN_TRAINING_ROWS} runs are needed to train",
                self.limit
            ));
        }
        if !(self.test_fraction.is_finite()
            && self.test_fraction > 0.0
            && self.test_fraction <= 0.5)
        {
            return Err(format!(
                "spec.testFraction must be within (0, 0.5], got {}",
                self.test_fraction
            ));
        }
        let h = &self.hyperparameters;
        if h.trees == 0 {
            return Err("spec.hyperparameters.trees must be at least 1".into());
        }
        if h.max_depth > u16::MAX as u32 {
            return Err(format!(
                "spec.hyperparameters.maxDepth {} is too large",
                h.max_depth
            ));
        }
        if h.min_samples_split < 2 || h.min_samples_leaf < 1 {
            return Err(
                "spec.hyperparameters: minSamplesSplit must be ≥ 2 and minSamplesLeaf ≥ 1".into(),
            );
        }
        if h.max_features == Some(0) {
            return Err("spec.hyperparameters.maxFeatures must be at least 1 (or omitted)".into());
        }
        let g = &self.gates;
        if !(g.max_mae_seconds.is_finite() && g.max_mae_seconds >= 0.0) {
            return Err(format!(
                "spec.gates.maxMaeSeconds must be a non-negative number, got {}",
                g.max_mae_seconds
            ));
        }
        if let Some(r2) = g.min_r2.filter(|v| !(v.is_finite() && *v <= 1.0)) {
            return Err(format!("spec.gates.minR2 must be a number ≤ 1, got {r2}"));
        }
        if !(0.0..=1.0).contains(&g.min_rank_accuracy) {
            return Err(format!(
                "spec.gates.minRankAccuracy must be within 0..1, got {}",
                g.min_rank_accuracy
            ));
        }
        let e = &self.execution;
        if e.mode != ExecutionMode::Job && (e.image.is_some() || e.service_account_name.is_some()) {
            return Err(format!("spec.execution: {EXECUTION_RULE_MESSAGE}"));
        }
        if let Some(expr) = &self.schedule {
            super::schedule::Schedule::parse(expr)?;
        }
        if let Some(t) = &self.triggers {
            if !(t.mae_drift_fraction.is_finite() && t.mae_drift_fraction >= 0.0) {
                return Err(format!(
                    "spec.triggers.maeDriftFraction must be a non-negative number, got {}",
                    t.mae_drift_fraction
                ));
            }
        }
        Ok(())
    }

    /// The training spec `training::fit` takes.
    pub fn training_spec(&self) -> TrainingSpec {
        let h = &self.hyperparameters;
        TrainingSpec {
            pipeline: self.pipeline.clone(),
            limit: self.limit as usize,
            split: self.split,
            test_fraction: self.test_fraction,
            params: ForestParams {
                n_trees: h.trees as usize,
                max_depth: (h.max_depth > 0).then(|| h.max_depth.min(u16::MAX as u32) as u16),
                min_samples_split: h.min_samples_split as usize,
                min_samples_leaf: h.min_samples_leaf as usize,
                max_features: h.max_features.map(|m| m as usize),
                seed: h.seed as u64,
                ..ForestParams::default()
            },
        }
    }

    /// The spec of a child created by a trigger: the same training, no schedule or triggers of
    /// its own (so children never create grandchildren).
    pub fn for_child(&self) -> TrainingJobSpec {
        TrainingJobSpec {
            schedule: None,
            triggers: None,
            ..self.clone()
        }
    }
}

pub use crate::kube_time::{chrono_time, k8s_time};

/// `Some(x)` when `x` is finite: JSON has no NaN, and the API would store `null`.
pub fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use kube::CustomResourceExt;

    #[test]
    fn a_minimal_manifest_gets_the_designs_defaults() {
        let tj: TrainingJob = serde_yaml::from_str(
            "apiVersion: inframind.io/v1alpha1\nkind: TrainingJob\nmetadata: {name: nightly, namespace: ci}\nspec: {}\n",
        )
        .unwrap();
        assert_eq!(tj.spec, TrainingJobSpec::default());
        let t = tj.spec.training_spec();
        assert_eq!(t.limit, 500);
        assert_eq!(t.split, Split::Random);
        assert_eq!(t.test_fraction, 0.2);
        assert_eq!(t.params, ForestParams::default());
        assert!(tj.spec.promote);
        assert_eq!(tj.spec.gates.max_mae_seconds, 30.0);
        assert_eq!(tj.spec.gates.min_r2, None, "R² no longer gates by default");
        assert_eq!(tj.spec.gates.min_rank_accuracy, 0.55);
        assert!(tj.spec.gates.must_beat_active);
        let trig: Triggers = serde_json::from_str("{}").unwrap();
        assert_eq!(trig.every_n_runs, 1000);
        assert_eq!(trig.mae_drift_fraction, 0.2);
    }

    /// The README's example manifest stays valid.
    #[test]
    fn the_readme_example_parses_and_validates() {
        let tj: TrainingJob = serde_yaml::from_str(
            r#"
apiVersion: inframind.io/v1alpha1
kind: TrainingJob
metadata:
  name: nightly
  namespace: ci
spec:
  limit: 500
  split: random
  hyperparameters: {trees: 100, maxDepth: 15, seed: 42}
  gates: {maxMaeSeconds: 30, minRankAccuracy: 0.55, mustBeatActive: true}
  promote: true
  schedule: "0 3 * * *"
  triggers: {everyNRuns: 1000, maeDriftFraction: 0.2, checkIntervalSeconds: 600}
  execution: {mode: inProcess}
"#,
        )
        .unwrap();
        tj.spec.validate().unwrap();
        assert_eq!(
            tj.spec.training_spec(),
            TrainingJobSpec::default().training_spec()
        );
        assert_eq!(tj.spec.triggers, Some(Triggers::default()));
    }

    #[test]
    fn spec_fields_are_camel_case_and_depth_zero_grows_fully() {
        let spec: TrainingJobSpec = serde_json::from_value(serde_json::json!({
            "pipeline": "api",
            "split": "temporal",
            "testFraction": 0.25,
            "hyperparameters": {"trees": 30, "maxDepth": 0, "maxFeatures": 5, "seed": 7},
            "gates": {"maxMaeSeconds": 12.5, "mustBeatActive": false},
            "promote": false,
            "schedule": "0 3 * * *",
            "triggers": {"everyNRuns": 50, "checkIntervalSeconds": 60},
            "execution": {"mode": "job", "image": "inframind:dev"}
        }))
        .unwrap();
        let t = spec.training_spec();
        assert_eq!(t.pipeline.as_deref(), Some("api"));
        assert_eq!(t.split, Split::Temporal);
        assert_eq!(t.params.n_trees, 30);
        assert_eq!(t.params.max_depth, None);
        assert_eq!(t.params.max_features, Some(5));
        assert_eq!(t.params.seed, 7);
        assert_eq!(
            spec.gates.min_rank_accuracy, 0.55,
            "unset gates keep their defaults"
        );
        assert_eq!(spec.execution.mode, ExecutionMode::Job);
        assert_eq!(spec.triggers.as_ref().unwrap().mae_drift_fraction, 0.2);
        let child = spec.for_child();
        assert!(child.schedule.is_none() && child.triggers.is_none());
        assert_eq!(child.hyperparameters, spec.hyperparameters);
        spec.validate().unwrap();
    }

    #[test]
    fn validation_names_the_field() {
        let bad = |f: fn(&mut TrainingJobSpec)| {
            let mut s = TrainingJobSpec::default();
            f(&mut s);
            s.validate().unwrap_err()
        };
        assert!(bad(|s| s.limit = 5).contains("spec.limit"));
        assert!(bad(|s| s.test_fraction = 0.0).contains("spec.testFraction"));
        assert!(bad(|s| s.hyperparameters.trees = 0).contains("trees"));
        assert!(bad(|s| s.gates.min_r2 = Some(f64::NAN)).contains("minR2"));
        assert!(bad(|s| s.gates.min_rank_accuracy = 1.5).contains("minRankAccuracy"));
        assert!(bad(|s| s.schedule = Some("every day".into())).contains("schedule"));
        assert!(
            bad(|s| s.execution.image = Some("inframind:dev".into())).contains("spec.execution")
        );
    }

    /// The API server refuses what it can before the controller sees it: the rule on
    /// `spec.execution` and the shapes of the image and service account name.
    #[test]
    fn the_crd_carries_the_execution_rule_and_name_shapes() {
        let crd = serde_json::to_value(TrainingJob::crd()).unwrap();
        let exec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["execution"];
        assert_eq!(
            exec["x-kubernetes-validations"],
            serde_json::json!([{"rule": EXECUTION_RULE, "message": EXECUTION_RULE_MESSAGE}])
        );
        let sa = &exec["properties"]["serviceAccountName"];
        assert_eq!(sa["maxLength"], 253);
        let pattern = sa["pattern"].as_str().unwrap();
        assert!(pattern.starts_with("^[a-z0-9]"), "{pattern}");
        assert_eq!(exec["properties"]["image"]["maxLength"], 512);
    }

    #[test]
    fn the_crd_has_the_printer_columns_and_status_subresource() {
        let crd = TrainingJob::crd();
        assert_eq!(crd.spec.group, GROUP);
        assert_eq!(crd.spec.scope, "Namespaced");
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, VERSION);
        assert!(v.subresources.as_ref().unwrap().status.is_some());
        let cols: Vec<_> = v
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| (c.name.as_str(), c.json_path.as_str()))
            .collect();
        assert_eq!(
            cols,
            [
                ("Phase", ".status.phase"),
                ("MAE", ".status.metrics.maeSeconds"),
                ("R2", ".status.metrics.r2"),
                ("Rank", ".status.metrics.rankAccuracy"),
                ("Version", ".status.version"),
                ("Promoted", ".status.promoted"),
                ("Age", ".metadata.creationTimestamp"),
            ]
        );
    }

    #[test]
    fn status_round_trips_and_never_carries_nan() {
        let status = TrainingJobStatus {
            phase: Some(Phase::Succeeded),
            observed_generation: Some(3),
            metrics: Some(RunMetrics {
                mae_seconds: finite(f64::NAN),
                r2: finite(0.9),
                ..Default::default()
            }),
            start_time: Some(k8s_time(Utc::now())),
            ..Default::default()
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["phase"], "Succeeded");
        assert!(json["metrics"].get("maeSeconds").is_none());
        let back: TrainingJobStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back, status);
    }
}
