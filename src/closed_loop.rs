//! Decision quality in closed loop: builds are admitted through the real optimizer, run by the
//! simulator, recorded, and the model is retrained every few builds, as in a cluster. Each
//! exploration policy sees the same pipelines, branches, caches and requests (same seed).
//!
//! Regret of a build: the time it took to a successful result (noise-free expected duration;
//! an OOM-killed build costs its wasted time plus a rerun as requested) minus the expected
//! duration of the best config in hindsight for that build (every cpu, concurrency and a memory
//! without pressure that fits the node pool). Pure apart from the time it takes.

use serde::Serialize;

use crate::forest::ForestParams;
use crate::model::Model;
use crate::optimizer::{
    exploration, Action, Exploration, NodeCapacity, Optimizer, OptimizerConfig,
};
use crate::record::RunRecord;
use crate::simulate::{default_profiles, PipelineProfile, SimAdmission, Simulator};
use crate::stats::{PipelineStats, STATS_WINDOW};
use crate::training::{fit, TrainingSpec};
use crate::{BuildConfig, BuildContext};

/// How the loop runs.
#[derive(Debug, Clone)]
pub struct LoopSpec {
    /// Builds recorded before the loop (teams picking their own configs), to train on first.
    pub warmup: usize,
    /// Builds admitted through the optimizer.
    pub builds: usize,
    /// Retrain after this many builds.
    pub retrain_every: usize,
    /// Simulator seed (the same for every policy).
    pub seed: u64,
    /// The node pool every pod must fit (also the optimizer's node capacity).
    pub node: NodeCapacity,
    /// Forest used for every retraining.
    pub params: ForestParams,
}

impl Default for LoopSpec {
    fn default() -> Self {
        LoopSpec {
            warmup: 400,
            builds: 600,
            retrain_every: 100,
            seed: 11,
            node: NodeCapacity {
                cpu: 12.0,
                mem_gb: 48.0,
            },
            params: ForestParams {
                n_trees: 50,
                max_depth: Some(12),
                ..Default::default()
            },
        }
    }
}

/// Who decides in a loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LoopPolicy {
    /// No optimizer: every pod runs as its team requested.
    Request,
    /// The optimizer without exploration (argmin, confidence gate).
    Exploit,
    /// The optimizer with epsilon exploration (15 %, guarded grid).
    Epsilon,
    /// The optimizer with Thompson sampling (15 % of decisions may explore).
    Thompson,
}

impl LoopPolicy {
    /// Every policy, in table order.
    pub const ALL: [LoopPolicy; 4] = [
        LoopPolicy::Request,
        LoopPolicy::Exploit,
        LoopPolicy::Epsilon,
        LoopPolicy::Thompson,
    ];

    /// Name in tables and plots.
    pub fn name(self) -> &'static str {
        match self {
            LoopPolicy::Request => "as requested (no optimizer)",
            LoopPolicy::Exploit => "exploit only (exploration off)",
            LoopPolicy::Epsilon => "epsilon 15% (guarded grid)",
            LoopPolicy::Thompson => "thompson (default)",
        }
    }

    fn exploration(self) -> Exploration {
        match self {
            LoopPolicy::Request | LoopPolicy::Exploit => Exploration::Off,
            LoopPolicy::Epsilon => Exploration::Epsilon,
            LoopPolicy::Thompson => Exploration::Thompson,
        }
    }
}

/// One policy's results.
#[derive(Debug, Clone, Serialize)]
pub struct LoopResult {
    /// Policy.
    pub policy: LoopPolicy,
    /// Builds admitted.
    pub builds: usize,
    /// Sum of regret, seconds.
    pub cumulative_regret_s: f64,
    /// Cumulative regret after each build, seconds.
    pub regret_curve: Vec<f64>,
    /// Builds OOM-killed.
    pub ooms: usize,
    /// Decisions that would not fit the node pool.
    pub unschedulable: usize,
    /// Decisions that explored.
    pub explored: usize,
    /// Share of build time spent in exploring builds.
    pub explored_time_share: f64,
    /// Decisions that changed the request.
    pub applied: usize,
    /// Applied (not exploring) decisions whose expected duration was above the request's.
    pub applied_slower: usize,
    /// Retrainings done.
    pub retrains: usize,
}

/// Expected seconds to a successful result with `c`, and whether it was OOM-killed.
fn expected_cost(p: &PipelineProfile, a: &SimAdmission, c: &BuildConfig) -> (f64, bool) {
    let oom = p.peak_rss(c.concurrency, a.cache) > c.mem_gb;
    let base = p.expected_duration(c, a.cache, a.speed);
    if oom {
        // Killed part way (half on average), then rerun as requested.
        (
            0.5 * base + p.expected_duration(&a.requested, a.cache, a.speed),
            true,
        )
    } else {
        (base, false)
    }
}

/// The best expected duration over every config that fits `node`, memory without pressure.
fn best_in_hindsight(p: &PipelineProfile, a: &SimAdmission, node: &NodeCapacity) -> f64 {
    let mut best = f64::INFINITY;
    for cpu in 1..=node.cpu.floor() as u32 {
        for j in 1..=16u32 {
            let mem = (p.peak_rss(j, a.cache) / 0.85).ceil() + 1.0;
            if mem > node.mem_gb {
                continue;
            }
            let c = BuildConfig {
                cpu: cpu as f64,
                mem_gb: mem,
                concurrency: j,
            };
            best = best.min(p.expected_duration(&c, a.cache, a.speed));
        }
    }
    best
}

fn train(runs: &[RunRecord], spec: &LoopSpec, version: &str) -> Option<Model> {
    let ok: Vec<RunRecord> = runs.iter().filter(|r| r.success).cloned().collect();
    let now = runs.last()?.started_at;
    let training = TrainingSpec {
        params: spec.params.clone(),
        ..Default::default()
    };
    fit(&[], &ok, &training, version, now, &mut |_| {})
        .ok()
        .map(|m| m.0)
}

/// Runs one policy through the loop.
pub fn run_policy(policy: LoopPolicy, spec: &LoopSpec) -> LoopResult {
    let profiles = default_profiles();
    let start = chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap_or_default();
    let mut sim = Simulator::new(profiles.clone(), start, spec.seed);
    let mut runs = sim.runs(spec.warmup);
    let optimizer = Optimizer::new(OptimizerConfig {
        node_capacity: Some(spec.node),
        exploration: policy.exploration(),
        ..Default::default()
    });
    let mut model = train(&runs, spec, "loop-0");
    let mut out = LoopResult {
        policy,
        builds: 0,
        cumulative_regret_s: 0.0,
        regret_curve: Vec::with_capacity(spec.builds),
        ooms: 0,
        unschedulable: 0,
        explored: 0,
        explored_time_share: 0.0,
        applied: 0,
        applied_slower: 0,
        retrains: 1,
    };
    let (mut total_time, mut explored_time) = (0.0, 0.0);
    for i in 0..spec.builds {
        let mut decision = None;
        let (record, admission) = sim.next_with(&mut |a: &SimAdmission| {
            if policy == LoopPolicy::Request {
                return None;
            }
            let p = &profiles[a.profile];
            let mine: Vec<RunRecord> = runs
                .iter()
                .rev()
                .filter(|r| r.pipeline == p.name)
                .take(STATS_WINDOW)
                .cloned()
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let stats = (!mine.is_empty()).then(|| PipelineStats::from_runs(&p.name, &mine));
            let ctx = BuildContext {
                pipeline: p.name.clone(),
                branch: a.branch.clone(),
                image: p.image.clone(),
                node: a.node.clone(),
            };
            let seed = exploration::seed_from(&format!("loop-{i}"));
            let d = optimizer.decide_for(
                &ctx,
                Some(&a.requested),
                stats.as_ref(),
                model.as_ref(),
                a.now,
                seed,
            );
            let config = d.config;
            decision = Some(d);
            Some(config)
        });
        let p = &profiles[admission.profile];
        let config = record.config();
        let (cost, oom) = expected_cost(p, &admission, &config);
        let regret = (cost - best_in_hindsight(p, &admission, &spec.node)).max(0.0);
        out.builds += 1;
        out.cumulative_regret_s += regret;
        out.regret_curve.push(out.cumulative_regret_s);
        out.ooms += usize::from(oom);
        out.unschedulable +=
            usize::from(config.cpu > spec.node.cpu || config.mem_gb > spec.node.mem_gb);
        total_time += cost;
        if let Some(d) = &decision {
            if d.explored {
                out.explored += 1;
                explored_time += cost;
            } else if d.action == Action::Apply {
                let (requested, _) = expected_cost(p, &admission, &admission.requested);
                out.applied_slower += usize::from(cost > requested);
            }
            out.applied += usize::from(d.action == Action::Apply);
        }
        runs.push(record);
        if policy != LoopPolicy::Request && (i + 1) % spec.retrain_every == 0 {
            if let Some(m) = train(&runs, spec, &format!("loop-{}", i + 1)) {
                model = Some(m);
                out.retrains += 1;
            }
        }
    }
    out.explored_time_share = if total_time > 0.0 {
        explored_time / total_time
    } else {
        0.0
    };
    out
}

/// The results as a Markdown table.
pub fn table(results: &[LoopResult]) -> String {
    let mut s = String::from(
        "| policy | builds | cumulative regret (h) | OOM kills | unschedulable | explored (builds, share of build time) | applied | applied but slower than the request |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in results {
        s.push_str(&format!(
            "| {} | {} | {:.2} | {} | {} | {} ({:.1} %) | {} | {} |\n",
            r.policy.name(),
            r.builds,
            r.cumulative_regret_s / 3600.0,
            r.ooms,
            r.unschedulable,
            r.explored,
            r.explored_time_share * 100.0,
            r.applied,
            r.applied_slower
        ));
    }
    s
}

/// Cumulative regret over builds, one line per policy, as an SVG document.
pub fn plot_svg(results: &[LoopResult]) -> Result<String, String> {
    use plotters::prelude::*;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let builds = results.iter().map(|r| r.builds).max().unwrap_or(1).max(1);
        let top = results
            .iter()
            .map(|r| r.cumulative_regret_s / 3600.0)
            .fold(0.0, f64::max)
            .max(1e-3)
            * 1.05;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Cumulative regret over builds (closed loop, simulator)",
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0..builds, 0.0..top)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("builds admitted")
            .y_desc("cumulative regret, hours")
            .draw()
            .map_err(|e| e.to_string())?;
        let colours = [BLACK, BLUE, RED, GREEN];
        for (k, r) in results.iter().enumerate() {
            let colour = colours[k % colours.len()];
            chart
                .draw_series(LineSeries::new(
                    r.regret_curve
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (i + 1, v / 3600.0)),
                    colour.stroke_width(2),
                ))
                .map_err(|e| e.to_string())?
                .label(r.policy.name())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// One policy replayed offline on real builds.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayResult {
    /// Policy.
    pub policy: LoopPolicy,
    /// Builds decided (after the warm-up half).
    pub decisions: usize,
    /// Decisions that changed the request.
    pub applied: usize,
    /// Of those, decisions that explored.
    pub explored: usize,
    /// Applied decisions whose config was measured on that pipeline at a similar cache state.
    pub judged: usize,
    /// Judged decisions whose measured duration was above the request's (the build's own).
    pub slower_than_request: usize,
    /// Sum over judged decisions of (measured duration of the choice − the request's), seconds.
    pub judged_regret_s: f64,
}

/// Cache hit ratios closer than this count as the same cache state when judging offline.
pub const SAME_CACHE: f64 = 0.15;

/// Replays real builds in time order: each build of the second half is admitted (its own
/// config is the request) with a model trained on every earlier build, retrained every
/// `retrain_every` builds. An applied config can only be judged where it was measured: the same
/// pipeline, that exact config, a similar cache hit ratio (mean of those builds' durations).
pub fn replay_real(
    runs: &[RunRecord],
    policy: LoopPolicy,
    params: &ForestParams,
    retrain_every: usize,
) -> ReplayResult {
    let mut runs: Vec<RunRecord> = runs.to_vec();
    runs.sort_by_key(|r| (r.started_at, r.run_id.clone()));
    let optimizer = Optimizer::new(OptimizerConfig {
        exploration: policy.exploration(),
        ..Default::default()
    });
    let spec = LoopSpec {
        params: params.clone(),
        ..Default::default()
    };
    let mut out = ReplayResult {
        policy,
        decisions: 0,
        applied: 0,
        explored: 0,
        judged: 0,
        slower_than_request: 0,
        judged_regret_s: 0.0,
    };
    let start = runs.len() / 2;
    let mut model = None;
    for i in start..runs.len() {
        if (i - start).is_multiple_of(retrain_every.max(1)) {
            model = train(&runs[..i], &spec, &format!("replay-{i}"));
        }
        let r = &runs[i];
        if policy == LoopPolicy::Request || !r.success {
            continue;
        }
        let earlier: Vec<RunRecord> = runs[..i]
            .iter()
            .filter(|x| x.pipeline == r.pipeline)
            .cloned()
            .collect();
        let stats = (!earlier.is_empty()).then(|| PipelineStats::from_runs(&r.pipeline, &earlier));
        let request = r.config();
        let d = optimizer.decide_for(
            &BuildContext::of_run(r),
            Some(&request),
            stats.as_ref(),
            model.as_ref(),
            r.started_at,
            exploration::seed_from(&r.run_id),
        );
        out.decisions += 1;
        if d.action != Action::Apply {
            continue;
        }
        out.applied += 1;
        out.explored += usize::from(d.explored);
        let same: Vec<f64> = runs
            .iter()
            .filter(|x| x.pipeline == r.pipeline && x.success && x.config() == d.config)
            .filter(|x| match (x.cache_hit_ratio, r.cache_hit_ratio) {
                (Some(a), Some(b)) => (a - b).abs() <= SAME_CACHE,
                _ => false,
            })
            .map(|x| x.duration_s)
            .collect();
        if same.is_empty() {
            continue;
        }
        let measured = same.iter().sum::<f64>() / same.len() as f64;
        out.judged += 1;
        out.slower_than_request += usize::from(measured > r.duration_s);
        out.judged_regret_s += measured - r.duration_s;
    }
    out
}

/// The offline replay as a Markdown table.
pub fn replay_table(results: &[ReplayResult]) -> String {
    let mut s = String::from(
        "| policy | decisions | applied (explored) | judged (config measured at a similar cache state) | judged slower than the request | Σ measured − request (s) |\n|---|---|---|---|---|---|\n",
    );
    for r in results.iter().filter(|r| r.policy != LoopPolicy::Request) {
        s.push_str(&format!(
            "| {} | {} | {} ({}) | {} | {} | {:+.1} |\n",
            r.policy.name(),
            r.decisions,
            r.applied,
            r.explored,
            r.judged,
            r.slower_than_request,
            r.judged_regret_s
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_loop_is_safe_and_regret_is_measured() {
        let spec = LoopSpec {
            warmup: 150,
            builds: 60,
            retrain_every: 30,
            params: ForestParams {
                n_trees: 10,
                max_depth: Some(8),
                ..Default::default()
            },
            ..Default::default()
        };
        let results: Vec<LoopResult> = LoopPolicy::ALL
            .iter()
            .map(|p| run_policy(*p, &spec))
            .collect();
        for r in &results {
            assert_eq!(r.builds, 60);
            assert_eq!(r.regret_curve.len(), 60);
            assert!(r.regret_curve.windows(2).all(|w| w[1] >= w[0]));
            assert_eq!(r.unschedulable, 0, "{:?}", r.policy);
        }
        assert_eq!(
            results[0].explored + results[0].applied,
            0,
            "no optimizer, no change"
        );
        assert_eq!(results[1].explored, 0, "exploration off");
        let svg = plot_svg(&results).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("thompson"));
        assert!(table(&results).lines().count() == 6);
    }
}
