//! The optimizer: a guarded argmin over the candidate grid, gated by the probability that it
//! beats what the pod asked for, with exploration and a one-line rationale. Pure: context +
//! request + pipeline stats + model (+ now, seed) → decision. `Optimizer::plan` walks the steps:
//!
//! 1. `baseline`: the pipeline's last successful config, else the configured defaults.
//! 2. `infeasible`: when no config can satisfy the floors within the bounds, the pod is admitted
//!    unchanged with the reason (no path applies a config that breaks a guard).
//! 3. `usable_model`: without a model, or for a pipeline it never saw, nothing is known to beat
//!    the request: admitted unchanged, the guarded baseline shown as the proposal.
//! 4. `candidates`: the baseline ± {-2..2} steps per dimension, the pod's own request and the
//!    baseline itself, each through the guards (`guards.rs`), which raise or drop it.
//! 5. `predict`: every tree's prediction for every candidate and for the raw baseline and
//!    request, in one batch (`posterior.rs`).
//! 6. `allowed`: candidates above 2× the historical concurrency need P(faster than the
//!    baseline) > 0.8.
//! 7. `argmin`: the objective's argmin among the allowed candidates.
//! 8. `gate`: applied only when P(it beats the request) reaches `min_confidence`; otherwise the
//!    pod keeps its request and the decision says why.
//! 9. `arms`: what exploration may try, all from the allowed candidates.
//!
//! `Plan::resolve` then draws, from the seed, whether and what this decision explores
//! (`exploration.rs`): the only way a config is applied without the confidence gate.

pub mod cache;
pub mod calibration;
pub mod candidates;
pub mod exploration;
pub mod guards;
pub mod objective;
pub mod plan;
pub mod posterior;
pub mod recommender;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::features::{context_features, with_config, BaseRow, PipelineHistory, N_FEATURES};
use crate::model::Model;
use crate::stats::PipelineStats;
use crate::{BuildConfig, BuildContext};
pub use exploration::Exploration;
use guards::{Guard, Guarded, Guards, MemoryModel, CONFIDENT};
pub use objective::Objective;
pub use plan::{Arm, Plan};
use posterior::Posterior;

/// P(better than the request) a change needs by default before it is applied.
pub const DEFAULT_MIN_CONFIDENCE: f64 = 0.6;

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
    /// Share of decisions that may explore (0 disables).
    pub exploration_rate: f64,
    /// How an exploring decision picks its config.
    pub exploration: Exploration,
    /// P(better than the request) a change needs to be applied.
    pub min_confidence: f64,
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
            exploration: Exploration::Thompson,
            min_confidence: DEFAULT_MIN_CONFIDENCE,
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

impl BaselineSource {
    fn describe(self) -> &'static str {
        match self {
            BaselineSource::LastSuccess => "last successful run",
            BaselineSource::Defaults => "defaults",
        }
    }
}

/// What to do with the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Run with `config`.
    Apply,
    /// Leave the pod as requested (`reason` says why).
    #[default]
    Unchanged,
}

/// Who chose the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Nobody: no model, or nothing feasible.
    #[default]
    None,
    /// The objective's argmin over the forest's mean predictions.
    Argmin,
    /// Thompson sampling: the argmin under one drawn tree.
    Thompson,
    /// Epsilon-greedy: a uniform draw from the guarded candidates.
    Epsilon,
}

impl Policy {
    /// Short name for annotations.
    pub fn name(self) -> &'static str {
        match self {
            Policy::None => "none",
            Policy::Argmin => "argmin",
            Policy::Thompson => "thompson",
            Policy::Epsilon => "epsilon",
        }
    }
}

/// A recommendation and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Apply `config`, or leave the pod as requested.
    #[serde(default)]
    pub action: Action,
    /// The config the build runs with: the chosen one when applied; the request (else the
    /// baseline) when unchanged.
    pub config: BuildConfig,
    /// The best guarded candidate, when one was found (applied, or shown when kept).
    #[serde(default)]
    pub proposal: Option<BuildConfig>,
    /// The pod's own request, when there is a pod.
    #[serde(default)]
    pub request: Option<BuildConfig>,
    /// The baseline it was chosen around.
    pub baseline: BuildConfig,
    /// Where the baseline came from.
    pub baseline_source: BaselineSource,
    /// Predicted duration of the proposal, seconds (none without a model).
    pub predicted_duration_s: Option<f64>,
    /// Predicted duration of the baseline, seconds.
    pub baseline_duration_s: Option<f64>,
    /// Predicted duration of the request, seconds.
    #[serde(default)]
    pub request_duration_s: Option<f64>,
    /// P(the proposal is faster than the baseline): the share of trees that predict it faster.
    pub confidence: f64,
    /// P(the proposal beats the request under the objective), the gate's measure.
    #[serde(default)]
    pub request_confidence: Option<f64>,
    /// Whether this decision explored.
    pub explored: bool,
    /// Who chose.
    #[serde(default)]
    pub policy: Policy,
    /// Whether the model was bypassed (no model, or a pipeline it never saw).
    pub cold_start: bool,
    /// Guards that moved the proposal.
    pub guards: Vec<Guard>,
    /// Candidates scored.
    pub candidates: usize,
    /// Model version used, if any.
    pub model_version: Option<String>,
    /// Objective name.
    pub objective: String,
    /// Why the pod is left unchanged, when it is.
    #[serde(default)]
    pub reason: Option<String>,
    /// One line: why this config.
    pub rationale: String,
    /// The cache this build should expect (its branch's last build), which the prediction is
    /// for: the forest reads the same hit ratio and age.
    #[serde(default)]
    pub expected_cache: Option<crate::cache_advice::ExpectedCache>,
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

/// `a` and `b` shown only in the dimensions where they differ (`cpu 1` vs `cpu 4`).
pub fn difference(a: &BuildConfig, b: &BuildConfig) -> (String, String) {
    let mut x = Vec::new();
    let mut y = Vec::new();
    if a.cpu != b.cpu {
        x.push(format!("cpu {}", trim(a.cpu)));
        y.push(format!("cpu {}", trim(b.cpu)));
    }
    if a.mem_gb != b.mem_gb {
        x.push(format!("mem {}GB", trim(a.mem_gb)));
        y.push(format!("mem {}GB", trim(b.mem_gb)));
    }
    if a.concurrency != b.concurrency {
        x.push(format!("-j{}", a.concurrency));
        y.push(format!("-j{}", b.concurrency));
    }
    if x.is_empty() {
        return (describe(a), describe(b));
    }
    (x.join(", "), y.join(", "))
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

/// Rows of the prediction batch: the candidates, then the raw baseline and request.
struct Scored {
    candidates: Vec<Guarded>,
    posterior: Posterior,
    baseline_row: usize,
    request_row: Option<usize>,
}

impl Scored {
    /// The row the gate compares against: the request, else the baseline.
    fn reference(&self) -> usize {
        self.request_row.unwrap_or(self.baseline_row)
    }
}

impl Optimizer {
    /// An optimizer with `config`.
    pub fn new(config: OptimizerConfig) -> Optimizer {
        Optimizer { config }
    }

    /// The guards for a pipeline with `stats`, within the configured and node bounds.
    pub fn guards(&self, stats: Option<&PipelineStats>) -> Guards {
        Guards {
            memory: MemoryModel::from_stats(stats),
            max_success_concurrency: stats.and_then(|s| s.max_success_concurrency),
            bounds: self.config.bounds.within_node(self.config.node_capacity),
            mem_step: self.config.steps.mem_gb,
        }
    }

    /// Decides the config for a build with no pod request (CLI, API): the baseline stands in
    /// for the request. Never fails.
    pub fn decide(
        &self,
        ctx: &BuildContext,
        stats: Option<&PipelineStats>,
        model: Option<&Model>,
        now: DateTime<Utc>,
        seed: u64,
    ) -> Decision {
        self.decide_for(ctx, None, stats, model, now, seed)
    }

    /// Decides the config for a pod that asked for `request`. Never fails.
    pub fn decide_for(
        &self,
        ctx: &BuildContext,
        request: Option<&BuildConfig>,
        stats: Option<&PipelineStats>,
        model: Option<&Model>,
        now: DateTime<Utc>,
        seed: u64,
    ) -> Decision {
        self.plan(ctx, request, stats, model, now)
            .resolve(&self.config, seed)
    }

    /// Everything about a decision that does not depend on the seed (what the cache keeps).
    pub fn plan(
        &self,
        ctx: &BuildContext,
        request: Option<&BuildConfig>,
        stats: Option<&PipelineStats>,
        model: Option<&Model>,
        now: DateTime<Utc>,
    ) -> Plan {
        let guards = self.guards(stats);
        let mut d = self.baseline(stats, &guards, request, model);
        d.expected_cache =
            stats.map(|s| crate::cache_advice::expected_cache(&s.history, &ctx.branch, now));
        if let Some(why) = guards.infeasible() {
            let reason = format!("infeasible: {why}");
            return Plan::fixed(keep(d, reason, None));
        }
        let model = match usable_model(ctx, model) {
            Ok(m) => m,
            Err(why) => return Plan::fixed(self.cold_start(d, &guards, &why)),
        };
        let candidates = self.candidates(&guards, &d);
        let scored = self.predict(ctx, stats, model, now, candidates, &d);
        let (allowed, held_back) = allowed(&scored);
        let Some(best) = self.argmin(&scored, &allowed) else {
            let reason = "kept: no candidate is safe at the model's confidence".to_string();
            return Plan::fixed(keep(d, reason, None));
        };
        let exploit = self.gate(d, &scored, best, held_back);
        let (arms, tree_choice) = self.arms(&scored, &allowed);
        Plan {
            exploit,
            arms,
            tree_choice,
        }
    }

    /// Step 1: the baseline (last success, else defaults, clipped) and the decision skeleton:
    /// unchanged, the request (else the baseline) as the config.
    fn baseline(
        &self,
        stats: Option<&PipelineStats>,
        guards: &Guards,
        request: Option<&BuildConfig>,
        model: Option<&Model>,
    ) -> Decision {
        let (raw, baseline_source) = match stats.and_then(|s| s.last_success) {
            Some(c) => (c, BaselineSource::LastSuccess),
            None => (self.config.defaults, BaselineSource::Defaults),
        };
        let baseline = guards.bounds.clip(raw);
        Decision {
            action: Action::Unchanged,
            config: request.copied().unwrap_or(baseline),
            proposal: None,
            request: request.copied(),
            baseline,
            baseline_source,
            predicted_duration_s: None,
            baseline_duration_s: None,
            request_duration_s: None,
            confidence: 0.0,
            request_confidence: None,
            explored: false,
            policy: Policy::None,
            cold_start: true,
            guards: Vec::new(),
            candidates: 0,
            model_version: model.map(|m| m.version.clone()),
            objective: self.config.objective.name().to_string(),
            reason: None,
            rationale: String::new(),
            expected_cache: None,
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

    /// Step 3 (no usable model): nothing says a change beats the request, so the pod keeps it;
    /// the guarded baseline is the proposal (applied only where the operator opted in).
    fn cold_start(&self, mut d: Decision, guards: &Guards, why: &str) -> Decision {
        let safe = self.safe_baseline(guards, &d.baseline);
        d.proposal = safe.as_ref().map(|g| g.config);
        d.guards = safe.map(|g| g.hits).unwrap_or_default();
        let reason = format!(
            "kept: cold start ({why}), no model confidence that a change beats the {}",
            reference_name(&d)
        );
        keep(d, reason, None)
    }

    /// Step 4: the guarded grid around the baseline, the guarded request and the safe
    /// baseline, without duplicates.
    fn candidates(&self, guards: &Guards, d: &Decision) -> Vec<Guarded> {
        let mut out: Vec<Guarded> = Vec::with_capacity(128);
        let mut push = |g: Guarded| {
            if !out.iter().any(|o| o.config == g.config) {
                out.push(g);
            }
        };
        for c in candidates::grid(&d.baseline, &self.config.steps, &guards.bounds) {
            if let Some(g) = guards.apply(c) {
                push(g);
            }
        }
        if let Some(g) = d.request.and_then(|r| guards.apply(r)) {
            push(g);
        }
        if let Some(g) = self.safe_baseline(guards, &d.baseline) {
            push(g);
        }
        out
    }

    /// Step 5: every tree's prediction for the candidates, the raw baseline and the raw request.
    fn predict(
        &self,
        ctx: &BuildContext,
        stats: Option<&PipelineStats>,
        model: &Model,
        now: DateTime<Utc>,
        candidates: Vec<Guarded>,
        d: &Decision,
    ) -> Scored {
        // The same row the replay parity test checks against training.
        let base_row = admission_row(model, stats, ctx, now);
        let mut configs: Vec<BuildConfig> = candidates.iter().map(|g| g.config).collect();
        let baseline_row = configs.len();
        configs.push(d.baseline);
        let request_row = d.request.map(|r| {
            configs.push(r);
            configs.len() - 1
        });
        let mut rows = Vec::with_capacity(configs.len() * N_FEATURES);
        for c in &configs {
            rows.extend_from_slice(&with_config(&base_row, c));
        }
        let per_tree = model.forest.predict_per_tree(&rows);
        let posterior = Posterior::new(
            per_tree,
            model.forest.n_trees(),
            &configs,
            &self.config.objective,
        );
        Scored {
            candidates,
            posterior,
            baseline_row,
            request_row,
        }
    }

    /// Step 7: the allowed candidate with the lowest mean objective score.
    fn argmin(&self, s: &Scored, allowed: &[usize]) -> Option<usize> {
        allowed
            .iter()
            .copied()
            .min_by(|&a, &b| s.posterior.score(a).total_cmp(&s.posterior.score(b)))
    }

    /// Step 8: apply `best` only when it beats the request (else the baseline) with at least
    /// `min_confidence`; otherwise keep the request and say why.
    fn gate(&self, mut d: Decision, s: &Scored, best: usize, held_back: bool) -> Decision {
        let p = &s.posterior;
        let g = &s.candidates[best];
        d.cold_start = false;
        d.policy = Policy::Argmin;
        d.candidates = s.candidates.len();
        d.proposal = Some(g.config);
        d.predicted_duration_s = Some(p.mean(best));
        d.baseline_duration_s = Some(p.mean(s.baseline_row));
        d.request_duration_s = s.request_row.map(|r| p.mean(r));
        d.confidence = p.p_faster(best, s.baseline_row);
        let beats = p.p_better(best, s.reference());
        d.request_confidence = Some(beats);
        d.guards = g.hits.clone();
        if held_back {
            d.guards.push(Guard::HistoricalConcurrency);
        }
        d.guards.sort();
        d.guards.dedup();
        let reference = d.request.unwrap_or(d.baseline);
        let what = reference_name(&d);
        if g.config == reference {
            let reason = format!("kept: the {what} is predicted best");
            return keep(d, reason, Some(beats));
        }
        if beats < self.config.min_confidence {
            let (mine, theirs) = difference(&g.config, &reference);
            let reason =
                format!("kept: {beats:.2} confidence that {mine} beats the {what} {theirs}");
            return keep(d, reason, Some(beats));
        }
        d.action = Action::Apply;
        d.config = g.config;
        d.rationale = rationale(&d, "chose");
        d
    }

    /// Step 9: what exploration may try. Epsilon draws from every allowed candidate; Thompson
    /// from the argmin of each posterior draw (the mean of a block of a quarter of the trees, one
    /// block per starting tree), so only those are kept (with each draw's pick).
    fn arms(&self, s: &Scored, allowed: &[usize]) -> (Vec<Arm>, Vec<u16>) {
        let arm = |i: usize| {
            let g = &s.candidates[i];
            Arm {
                config: g.config,
                hits: g.hits.clone(),
                predicted_duration_s: s.posterior.mean(i),
                confidence: s.posterior.p_faster(i, s.baseline_row),
                request_confidence: s.posterior.p_better(i, s.reference()),
            }
        };
        if self.config.exploration_rate <= 0.0 {
            return (Vec::new(), Vec::new());
        }
        match self.config.exploration {
            Exploration::Off => (Vec::new(), Vec::new()),
            Exploration::Epsilon => (allowed.iter().map(|&i| arm(i)).collect(), Vec::new()),
            Exploration::Thompson => {
                let mut picked: Vec<usize> = Vec::new();
                let mut choice = Vec::with_capacity(s.posterior.n_trees());
                let block = s.posterior.n_trees().div_ceil(4);
                for draw in s.posterior.block_argmins(allowed, block) {
                    let Some(i) = draw else {
                        return (Vec::new(), Vec::new());
                    };
                    let k = picked.iter().position(|&p| p == i).unwrap_or_else(|| {
                        picked.push(i);
                        picked.len() - 1
                    });
                    choice.push(k as u16);
                }
                (picked.into_iter().map(arm).collect(), choice)
            }
        }
    }
}

/// Step 3: the model, if it knows this pipeline; else why not.
fn usable_model<'m>(ctx: &BuildContext, model: Option<&'m Model>) -> Result<&'m Model, String> {
    match model {
        Some(m) if m.encodings.knows_pipeline(&ctx.pipeline) => Ok(m),
        None => Err("no model loaded yet".to_string()),
        Some(m) => Err(format!(
            "pipeline {} is unknown to model {}",
            ctx.pipeline, m.version
        )),
    }
}

/// Step 6: candidates the 2× historical concurrency guard lets through (those above it only
/// with P(faster than the baseline) > 0.8), and whether it held back a better-scoring one.
fn allowed(s: &Scored) -> (Vec<usize>, bool) {
    let p = &s.posterior;
    let mut out = Vec::with_capacity(s.candidates.len());
    let mut best_held = f64::INFINITY;
    for (i, g) in s.candidates.iter().enumerate() {
        if g.needs_confidence && p.p_faster(i, s.baseline_row) <= CONFIDENT {
            best_held = best_held.min(p.score(i));
        } else {
            out.push(i);
        }
    }
    let best_allowed = out
        .iter()
        .map(|&i| p.score(i))
        .fold(f64::INFINITY, f64::min);
    (out, best_held < best_allowed)
}

/// "request" when the pod asked for something, else "baseline".
fn reference_name(d: &Decision) -> &'static str {
    if d.request.is_some() {
        "requested"
    } else {
        "baseline"
    }
}

/// `d` as an unchanged decision: the pod keeps its request (else the baseline), for `reason`.
fn keep(mut d: Decision, reason: String, beats: Option<f64>) -> Decision {
    d.action = Action::Unchanged;
    d.config = d.request.unwrap_or(d.baseline);
    d.request_confidence = beats.or(d.request_confidence);
    d.rationale = format!(
        "baseline {} ({}); {reason}{}{}",
        describe(&d.baseline),
        d.baseline_source.describe(),
        d.proposal
            .map(|p| format!("; proposal {}", describe(&p)))
            .unwrap_or_default(),
        cache_phrase(&d)
    );
    d.reason = Some(reason);
    d
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

/// The rationale of an applied decision; `how` says who chose ("chose", "explored …").
fn rationale(d: &Decision, how: &str) -> String {
    let predicted = d.predicted_duration_s.unwrap_or(f64::NAN);
    let versus = match d.baseline_duration_s {
        Some(b) if b > 0.0 => format!(
            " vs {b:.0}s at baseline ({:+.0}%)",
            (predicted / b - 1.0) * 100.0
        ),
        _ => String::new(),
    };
    let gate = match d.request_confidence {
        Some(r) if d.request.is_some() => format!(", {r:.2} that it beats the request"),
        _ => String::new(),
    };
    format!(
        "baseline {} ({}); {how} {}: predicted {predicted:.0}s{versus}{}, {:.2} confidence it is faster than the baseline{gate}, objective {}; guards: {}",
        describe(&d.baseline),
        d.baseline_source.describe(),
        describe(&d.config),
        cache_phrase(d),
        d.confidence,
        d.objective,
        guard_list(&d.guards)
    )
}

/// ` with the expected cache warm (…)` for a prediction of the model, else nothing.
fn cache_phrase(d: &Decision) -> String {
    match &d.expected_cache {
        Some(e) if !d.cold_start => format!(" with the {}", e.describe()),
        _ => String::new(),
    }
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
