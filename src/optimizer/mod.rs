//! The optimizer: a guarded argmin over the candidate grid, with confidence, exploration and a
//! one-line rationale. Pure: context + pipeline stats + model (+ now, seed) → decision.
//!
//! 1. Baseline: the pipeline's last successful config, else the configured defaults.
//! 2. Candidates: the baseline ± {-2..2} steps per dimension, clipped to the bounds.
//! 3. Guards (`guards.rs`) raise each candidate to its floors or drop it.
//! 4. The forest predicts every guarded candidate (mean and spread across trees) in one batch.
//! 5. Candidates above 2× the historical concurrency need confidence > 0.8.
//! 6. The objective's argmin wins, unless this decision explores (seeded draw).
//!
//! Without a model, or for a pipeline the model never saw, the guarded baseline is returned with
//! confidence 0. The optimizer never fails: the worst case is the baseline within the bounds.

pub mod cache;
pub mod candidates;
pub mod exploration;
pub mod guards;
pub mod objective;
pub mod recommender;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::features::{context_features, with_config, BaseRow, PipelineHistory, N_FEATURES};
use crate::model::Model;
use crate::stats::PipelineStats;
use crate::{BuildConfig, BuildContext};
use guards::{Guard, Guarded, Guards, MemoryModel, CONFIDENT};
pub use objective::{confidence, Objective};

/// Default baseline for a pipeline with no successful run: 4 cpu, 8 GB and 4 jobs (one job per
/// requested core, the conventional `make -j$(nproc)`).
pub const DEFAULT_BASELINE: BuildConfig = BuildConfig {
    cpu: 4.0,
    mem_gb: 8.0,
    concurrency: 4,
};

/// Hard limits on any recommended config.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Bounds {
    /// Fewest vCPU.
    pub min_cpu: f64,
    /// Most vCPU.
    pub max_cpu: f64,
    /// Least memory, GB.
    pub min_mem_gb: f64,
    /// Most memory, GB.
    pub max_mem_gb: f64,
    /// Fewest jobs.
    pub min_concurrency: u32,
    /// Most jobs (never above 16).
    pub max_concurrency: u32,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            min_cpu: 1.0,
            max_cpu: 16.0,
            min_mem_gb: 2.0,
            max_mem_gb: 64.0,
            min_concurrency: 1,
            max_concurrency: 16,
        }
    }
}

impl Bounds {
    /// `c` with every dimension clipped into the bounds.
    pub fn clip(&self, c: BuildConfig) -> BuildConfig {
        BuildConfig {
            cpu: c.cpu.clamp(self.min_cpu, self.max_cpu),
            mem_gb: c.mem_gb.clamp(self.min_mem_gb, self.max_mem_gb),
            concurrency: c
                .concurrency
                .clamp(self.min_concurrency.max(1), self.max_concurrency.max(1)),
        }
    }

    /// These bounds tightened to what the largest node can allocate.
    pub fn within_node(&self, node: Option<NodeCapacity>) -> Bounds {
        let mut b = *self;
        b.max_concurrency = b.max_concurrency.clamp(1, guards::MAX_CONCURRENCY);
        b.min_concurrency = b.min_concurrency.clamp(1, b.max_concurrency);
        if let Some(n) = node {
            b.max_cpu = b.max_cpu.min(n.cpu);
            b.max_mem_gb = b.max_mem_gb.min(n.mem_gb);
        }
        // On the pod spec's lattice, so rounding a value within the bounds keeps it within them.
        b.max_cpu = guards::floor_to(b.max_cpu, guards::CPU_UNIT);
        b.max_mem_gb = guards::floor_to(b.max_mem_gb, guards::MEM_UNIT);
        b.min_cpu = guards::ceil_to(b.min_cpu, guards::CPU_UNIT).min(b.max_cpu);
        b.min_mem_gb = guards::ceil_to(b.min_mem_gb, guards::MEM_UNIT).min(b.max_mem_gb);
        b
    }
}

/// Allocatable resources of the largest node a build can land on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NodeCapacity {
    /// Allocatable vCPU.
    pub cpu: f64,
    /// Allocatable memory, GB.
    pub mem_gb: f64,
}

/// Step size of each dimension of the grid.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Steps {
    /// vCPU per step.
    pub cpu: f64,
    /// GB per step.
    pub mem_gb: f64,
    /// Jobs per step.
    pub concurrency: u32,
}

impl Default for Steps {
    fn default() -> Self {
        Steps {
            cpu: 1.0,
            mem_gb: 1.0,
            concurrency: 1,
        }
    }
}

/// Everything configurable about decisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OptimizerConfig {
    /// Baseline for pipelines with no successful run.
    pub defaults: BuildConfig,
    /// Grid step sizes.
    pub steps: Steps,
    /// Hard limits.
    pub bounds: Bounds,
    /// Largest node's allocatable, if known.
    pub node_capacity: Option<NodeCapacity>,
    /// What to minimise.
    pub objective: Objective,
    /// Probability of exploring (0 disables).
    pub exploration_rate: f64,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            defaults: DEFAULT_BASELINE,
            steps: Steps::default(),
            bounds: Bounds::default(),
            node_capacity: None,
            objective: Objective::Duration,
            exploration_rate: 0.15,
        }
    }
}

/// Where the baseline came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaselineSource {
    /// The pipeline's last successful run.
    LastSuccess,
    /// The configured defaults.
    Defaults,
}

/// A recommendation and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The config to run with.
    pub config: BuildConfig,
    /// The baseline it was chosen around.
    pub baseline: BuildConfig,
    /// Where the baseline came from.
    pub baseline_source: BaselineSource,
    /// Predicted duration of `config`, seconds (none on the cold-start path).
    pub predicted_duration_s: Option<f64>,
    /// Predicted duration of the (guarded) baseline, seconds.
    pub baseline_duration_s: Option<f64>,
    /// Confidence in the prediction, 0..=1.
    pub confidence: f64,
    /// Whether this decision explored a random config.
    pub explored: bool,
    /// Whether the model was bypassed (no model, or a pipeline it never saw).
    pub cold_start: bool,
    /// Guards that moved the chosen config.
    pub guards: Vec<Guard>,
    /// Candidates scored.
    pub candidates: usize,
    /// Model version used, if any.
    pub model_version: Option<String>,
    /// Objective name.
    pub objective: String,
    /// One line: why this config.
    pub rationale: String,
}

/// Formats a config the way rationales and annotations show it.
pub fn describe(c: &BuildConfig) -> String {
    format!(
        "cpu {}, mem {}GB, -j{}",
        trim(c.cpu),
        trim(c.mem_gb),
        c.concurrency
    )
}

fn trim(x: f64) -> String {
    let s = format!("{x:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Makes decisions with a fixed configuration.
#[derive(Debug, Clone, Default)]
pub struct Optimizer {
    /// Configuration.
    pub config: OptimizerConfig,
}

struct Scored {
    guarded: Guarded,
    mean: f64,
    confidence: f64,
    score: f64,
}

impl Optimizer {
    /// An optimizer with `config`.
    pub fn new(config: OptimizerConfig) -> Optimizer {
        Optimizer { config }
    }

    fn guards(&self, stats: Option<&PipelineStats>) -> Guards {
        Guards {
            memory: MemoryModel::from_stats(stats),
            max_success_concurrency: stats.and_then(|s| s.max_success_concurrency),
            bounds: self.config.bounds.within_node(self.config.node_capacity),
            mem_step: self.config.steps.mem_gb,
        }
    }

    /// The baseline made safe: guarded, lowering concurrency if its floors do not fit the bounds.
    fn safe_baseline(&self, guards: &Guards, baseline: &BuildConfig) -> Option<Guarded> {
        (guards.bounds.min_concurrency..=baseline.concurrency.max(guards.bounds.min_concurrency))
            .rev()
            .find_map(|j| {
                guards
                    .apply(BuildConfig {
                        concurrency: j,
                        ..*baseline
                    })
                    .filter(|g| !g.needs_confidence)
            })
    }

    /// Decides the config for a build. Never fails.
    pub fn decide(
        &self,
        ctx: &BuildContext,
        stats: Option<&PipelineStats>,
        model: Option<&Model>,
        now: DateTime<Utc>,
        seed: u64,
    ) -> Decision {
        let guards = self.guards(stats);
        let (raw_baseline, baseline_source) = match stats.and_then(|s| s.last_success) {
            Some(c) => (c, BaselineSource::LastSuccess),
            None => (self.config.defaults, BaselineSource::Defaults),
        };
        let baseline = guards.bounds.clip(raw_baseline);
        let mut decision = Decision {
            config: baseline,
            baseline,
            baseline_source,
            predicted_duration_s: None,
            baseline_duration_s: None,
            confidence: 0.0,
            explored: false,
            cold_start: true,
            guards: Vec::new(),
            candidates: 0,
            model_version: model.map(|m| m.version.clone()),
            objective: self.config.objective.name().to_string(),
            rationale: String::new(),
        };
        let source = match baseline_source {
            BaselineSource::LastSuccess => "last successful run",
            BaselineSource::Defaults => "defaults",
        };
        let model = match model {
            Some(m) if m.encodings.knows_pipeline(&ctx.pipeline) => m,
            other => {
                let why = match other {
                    None => "no model loaded yet".to_string(),
                    Some(m) => format!(
                        "pipeline {} is unknown to model {}",
                        ctx.pipeline, m.version
                    ),
                };
                return self.cold_start(
                    decision,
                    &guards,
                    &format!(
                        "cold start ({why}): baseline {} ({source})",
                        describe(&baseline)
                    ),
                );
            }
        };
        decision.cold_start = false;

        let mut rng = exploration::rng(seed);
        let explore = exploration::explores(&mut rng, self.config.exploration_rate);
        let mut guarded: Vec<Guarded> = Vec::with_capacity(126);
        for c in candidates::grid(&baseline, &self.config.steps, &guards.bounds) {
            if let Some(g) = guards.apply(c) {
                if !guarded.iter().any(|o| o.config == g.config) {
                    guarded.push(g);
                }
            }
        }
        let safe_base = self.safe_baseline(&guards, &baseline);
        let base_idx =
            safe_base.as_ref().map(
                |b| match guarded.iter().position(|g| g.config == b.config) {
                    Some(i) => i,
                    None => {
                        guarded.push(b.clone());
                        guarded.len() - 1
                    }
                },
            );
        let explored_idx = if explore {
            let cap = guards
                .max_success_concurrency
                .map_or(u32::MAX, |h| h * guards::HISTORY_CONCURRENCY_FACTOR);
            (0..8)
                .find_map(|_| {
                    guards
                        .apply(exploration::random_config(
                            &mut rng,
                            &self.config.steps,
                            &guards.bounds,
                            cap,
                        ))
                        .filter(|g| !g.needs_confidence)
                })
                .map(|g| {
                    guarded.push(g);
                    guarded.len() - 1
                })
        } else {
            None
        };
        if guarded.is_empty() {
            return self.cold_start(
                decision,
                &guards,
                &format!(
                    "no candidate satisfies the guards within the bounds: baseline {} ({source})",
                    describe(&baseline)
                ),
            );
        }

        let base_row = admission_row(model, stats, ctx, now);
        let mut rows = Vec::with_capacity(guarded.len() * N_FEATURES);
        for g in &guarded {
            rows.extend_from_slice(&with_config(&base_row, &g.config));
        }
        let predictions = model.forest.predict_with_spread(&rows);
        let objective = self.config.objective;
        let scored: Vec<Scored> = guarded
            .into_iter()
            .zip(predictions)
            .map(|(g, (mean, std))| {
                let confidence = confidence(mean, std);
                let score = objective.score(&g.config, mean);
                Scored {
                    guarded: g,
                    mean,
                    confidence,
                    score,
                }
            })
            .collect();
        decision.candidates = scored.len();
        decision.baseline_duration_s = base_idx.map(|i| scored[i].mean);

        let mut best: Option<usize> = None;
        let mut held_back = false;
        for (i, s) in scored.iter().enumerate() {
            if Some(i) == explored_idx {
                continue;
            }
            if s.guarded.needs_confidence && s.confidence <= CONFIDENT {
                held_back |= best.is_none_or(|b| s.score < scored[b].score);
                continue;
            }
            if best.is_none_or(|b| s.score < scored[b].score) {
                best = Some(i);
            }
        }
        let chosen = match (explored_idx, best) {
            (Some(e), _) => e,
            (None, Some(b)) => b,
            (None, None) => {
                return self.cold_start(
                    decision,
                    &guards,
                    &format!(
                        "no candidate is safe at the model's confidence: baseline {} ({source})",
                        describe(&baseline)
                    ),
                );
            }
        };
        let s = &scored[chosen];
        decision.config = s.guarded.config;
        decision.predicted_duration_s = Some(s.mean);
        decision.confidence = s.confidence;
        decision.explored = explored_idx.is_some();
        decision.guards = s.guarded.hits.clone();
        if held_back && !decision.explored {
            decision.guards.push(Guard::HistoricalConcurrency);
        }
        decision.guards.sort();
        decision.guards.dedup();
        decision.rationale = rationale(&decision, source);
        decision
    }

    fn cold_start(&self, mut d: Decision, guards: &Guards, why: &str) -> Decision {
        match self.safe_baseline(guards, &d.baseline) {
            Some(g) => {
                d.config = g.config;
                d.guards = g.hits;
            }
            None => d.config = d.baseline,
        }
        d.confidence = 0.0;
        d.predicted_duration_s = None;
        d.explored = false;
        d.rationale = if d.config == d.baseline {
            format!("{why}; kept as is")
        } else {
            format!(
                "{why}; guarded to {} ({})",
                describe(&d.config),
                guard_list(&d.guards)
            )
        };
        d
    }
}

fn guard_list(g: &[Guard]) -> String {
    if g.is_empty() {
        "no guard moved it".into()
    } else {
        g.iter()
            .map(|g| g.describe())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn rationale(d: &Decision, source: &str) -> String {
    let predicted = d.predicted_duration_s.unwrap_or(f64::NAN);
    let versus = match d.baseline_duration_s {
        Some(b) if b > 0.0 => format!(
            " vs {b:.0}s at baseline ({:+.0}%)",
            (predicted / b - 1.0) * 100.0
        ),
        _ => String::new(),
    };
    let how = if d.explored {
        "explored a random config"
    } else if d.config == d.baseline {
        "kept the baseline"
    } else {
        "chose"
    };
    format!(
        "baseline {} ({source}); {how} {}: predicted {predicted:.0}s{versus}, confidence {:.2}, objective {}; guards: {}",
        describe(&d.baseline),
        describe(&d.config),
        d.confidence,
        d.objective,
        guard_list(&d.guards)
    )
}

/// The context features of an admission at `now`: the pipeline's history as the stats cache
/// holds it, through the same `features::context_features` training rows are built with (the
/// replay parity test calls this to compare both sides column by column).
pub fn admission_row(
    model: &Model,
    stats: Option<&PipelineStats>,
    ctx: &BuildContext,
    now: DateTime<Utc>,
) -> BaseRow {
    let empty = PipelineHistory::default();
    let history = stats.map_or(&empty, |s| &s.history);
    context_features(&model.encodings, history, ctx, now)
}

#[cfg(test)]
mod tests;
