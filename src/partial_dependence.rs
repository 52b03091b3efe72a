//! What the model predicts as one config knob moves around a baseline (a partial-dependence
//! curve for one context): the dashboard's and `explain --pipeline`'s duration-vs-config curves.
//! Pure: the model, the pipeline's history and the context in; predictions out.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::features::{context_features, with_config, PipelineHistory, N_FEATURES};
use crate::model::Model;
use crate::record::RunRecord;
use crate::{BuildConfig, BuildContext};

/// The knob a curve varies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Knob {
    /// Build concurrency (jobs), other knobs at the baseline.
    Concurrency,
    /// Requested vCPU, other knobs at the baseline.
    Cpu,
}

impl Knob {
    /// The knob's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Knob::Concurrency => "concurrency",
            Knob::Cpu => "cpu",
        }
    }

    fn set(self, base: &BuildConfig, value: f64) -> BuildConfig {
        match self {
            Knob::Concurrency => BuildConfig {
                concurrency: value.round().max(1.0) as u32,
                ..*base
            },
            Knob::Cpu => BuildConfig {
                cpu: value.max(0.1),
                ..*base
            },
        }
    }

    fn of(self, c: &BuildConfig) -> f64 {
        match self {
            Knob::Concurrency => c.concurrency as f64,
            Knob::Cpu => c.cpu,
        }
    }
}

/// Predicted durations along one knob.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Curve {
    /// The knob varied.
    pub knob: Knob,
    /// The baseline config (the other knobs stay here).
    pub baseline: BuildConfig,
    /// (knob value, predicted duration in seconds), by increasing value.
    pub points: Vec<(f64, f64)>,
}

/// Values 1..=2×baseline (at least 1..=16) along `knob`, whole numbers.
pub fn default_values(knob: Knob, baseline: &BuildConfig) -> Vec<f64> {
    let top = (knob.of(baseline) * 2.0).clamp(16.0, 64.0) as u32;
    (1..=top).map(f64::from).collect()
}

/// The model's predicted duration of `ctx` at `baseline` with `knob` set to each of `values`;
/// `history` is the pipeline's successful runs (oldest first) known at `now`.
pub fn curve(
    model: &Model,
    history: &[RunRecord],
    ctx: &BuildContext,
    baseline: BuildConfig,
    knob: Knob,
    values: &[f64],
    now: DateTime<Utc>,
) -> Curve {
    let history = PipelineHistory::from_runs(history.iter().filter(|r| r.success));
    let base = context_features(&model.encodings, &history, ctx, now);
    let mut rows = Vec::with_capacity(values.len() * N_FEATURES);
    for v in values {
        rows.extend_from_slice(&with_config(&base, &knob.set(&baseline, *v)));
    }
    let predicted = model.forest.predict(&rows);
    Curve {
        knob,
        baseline,
        points: values.iter().copied().zip(predicted).collect(),
    }
}
