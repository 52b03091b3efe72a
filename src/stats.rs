//! Per-pipeline aggregates the optimizer and the webhook need, computed from recent runs.

use serde::{Deserialize, Serialize};

use crate::features::PipelineHistory;
use crate::record::RunRecord;
use crate::BuildConfig;

/// Recent runs (all outcomes) read per pipeline to compute its stats.
pub const STATS_WINDOW: usize = 200;

/// A build that ran out of memory: its memory request and concurrency.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OomEvent {
    /// Memory request it was killed at, GB.
    pub mem_gb: f64,
    /// Concurrency it ran with.
    pub concurrency: u32,
}

/// What is known about one pipeline.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PipelineStats {
    /// Pipeline name.
    pub pipeline: String,
    /// Runs considered.
    pub runs: usize,
    /// Successful runs among them.
    pub successes: usize,
    /// 95th percentile of peak RSS over runs that reported it, GB.
    pub rss_p95_gb: Option<f64>,
    /// Mean cache hit ratio.
    pub mean_cache_hit_ratio: Option<f64>,
    /// Mean number of steps.
    pub mean_num_steps: Option<f64>,
    /// Highest concurrency this pipeline ran successfully.
    pub max_success_concurrency: Option<u32>,
    /// Config of the most recent successful run (the optimizer's baseline).
    pub last_success: Option<BuildConfig>,
    /// Peak RSS observations against concurrency: (concurrency, GB).
    pub rss_by_concurrency: Vec<(u32, f64)>,
    /// Out-of-memory kills.
    pub ooms: Vec<OomEvent>,
    /// The history features are computed from (built once per refresh, not per admission):
    /// the successful runs among those aggregated; `Store::pipeline_stats` widens it to the
    /// pipeline's latest `features::HISTORY_LOOKBACK` successful runs, as training does.
    #[serde(skip)]
    pub history: PipelineHistory,
}

/// The `q` quantile (0..=1) by linear interpolation, as numpy's default.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    Some(v[lo] + (v[hi] - v[lo]) * (pos - lo as f64))
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (s, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| s / n as f64)
}

impl PipelineStats {
    /// Aggregates `runs` (oldest first, any outcome) of `pipeline`.
    pub fn from_runs(pipeline: &str, runs: &[RunRecord]) -> PipelineStats {
        let ok: Vec<&RunRecord> = runs.iter().filter(|r| r.success).collect();
        let rss: Vec<f64> = runs
            .iter()
            .filter(|r| !r.oom_killed)
            .filter_map(|r| r.max_rss_gb)
            .collect();
        PipelineStats {
            pipeline: pipeline.to_string(),
            runs: runs.len(),
            successes: ok.len(),
            rss_p95_gb: quantile(&rss, 0.95),
            mean_cache_hit_ratio: mean(runs.iter().filter_map(|r| r.cache_hit_ratio)),
            mean_num_steps: mean(runs.iter().filter_map(|r| r.num_steps.map(f64::from))),
            max_success_concurrency: ok.iter().map(|r| r.concurrency).max(),
            last_success: ok.iter().max_by_key(|r| r.started_at).map(|r| r.config()),
            rss_by_concurrency: runs
                .iter()
                .filter(|r| !r.oom_killed)
                .filter_map(|r| r.max_rss_gb.map(|m| (r.concurrency, m)))
                .collect(),
            ooms: runs
                .iter()
                .filter(|r| r.oom_killed)
                .map(|r| OomEvent {
                    mem_gb: r.mem_req_gb,
                    concurrency: r.concurrency,
                })
                .collect(),
            history: PipelineHistory::from_runs(ok),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::demo_runs;
    use chrono::Utc;

    #[test]
    fn quantile_matches_numpy_linear() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(quantile(&v, 0.5), Some(3.0));
        assert_eq!(quantile(&v, 0.95), Some(4.8));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn stats_reflect_the_runs() {
        let runs: Vec<_> = demo_runs(400, Utc::now(), 5)
            .into_iter()
            .filter(|r| r.pipeline == "acme/api")
            .collect();
        let s = PipelineStats::from_runs("acme/api", &runs);
        assert_eq!(s.runs, runs.len());
        let last_ok = runs.iter().rev().find(|r| r.success).unwrap();
        assert_eq!(s.last_success, Some(last_ok.config()));
        assert_eq!(
            s.max_success_concurrency,
            runs.iter()
                .filter(|r| r.success)
                .map(|r| r.concurrency)
                .max()
        );
        assert_eq!(s.ooms.len(), runs.iter().filter(|r| r.oom_killed).count());
        let max_rss = runs
            .iter()
            .filter(|r| !r.oom_killed)
            .filter_map(|r| r.max_rss_gb)
            .fold(0.0, f64::max);
        assert!(s.rss_p95_gb.unwrap() <= max_rss);
        assert_eq!(
            s.history.len(),
            s.successes.min(crate::features::HISTORY_WINDOW)
        );
    }
}
