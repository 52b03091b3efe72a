//! The safety guards: no candidate is scored, let alone chosen, before passing through here.
//!
//! From the design:
//! - memory ≥ max(2 GB, 1.2 × p95 peak RSS);
//! - cpu ≥ max(1, concurrency / 4);
//! - concurrency ≤ 16;
//! - concurrency ≤ 2 × the highest concurrency the pipeline ran successfully, unless the
//!   model's confidence in that candidate is above 0.8 (checked where confidence is known).
//!
//! Added here:
//! - peak RSS grows with parallelism, so the memory floor is also 1.2 × the peak RSS estimated
//!   at the candidate's own concurrency (a least-squares line through the pipeline's history of
//!   peak RSS against concurrency, shifted up by its largest residual; with too little spread in
//!   the history, RSS is assumed proportional to concurrency above what was observed);
//! - a pipeline that was OOM-killed at a memory size is never offered that size again at the
//!   same or a higher concurrency;
//! - bounds (configured and the largest node's allocatable) are hard: a candidate the floors
//!   push past them is dropped rather than made unschedulable.

use serde::{Deserialize, Serialize};

use super::Bounds;
use crate::stats::PipelineStats;
use crate::BuildConfig;

/// The design's absolute memory floor, GB.
pub const MIN_MEMORY_GB: f64 = 2.0;
/// Headroom over peak RSS.
pub const RSS_HEADROOM: f64 = 1.2;
/// Jobs one core is allowed to carry.
pub const JOBS_PER_CPU: f64 = 4.0;
/// Hard concurrency cap (diminishing returns beyond).
pub const MAX_CONCURRENCY: u32 = 16;
/// Candidates may exceed the historical concurrency by this factor only with high confidence.
pub const HISTORY_CONCURRENCY_FACTOR: u32 = 2;
/// Confidence above which the historical concurrency cap is lifted.
pub const CONFIDENT: f64 = 0.8;

/// Smallest cpu increment a pod spec carries (one millicore).
pub const CPU_UNIT: f64 = 1.0 / 1000.0;
/// Smallest memory increment a pod spec carries (one MiB), in GB.
pub const MEM_UNIT: f64 = 1.0 / 1024.0;

/// `x` rounded up to a multiple of `unit` (values already on the lattice stay put).
pub fn ceil_to(x: f64, unit: f64) -> f64 {
    ((x / unit) - 1e-6).ceil() * unit
}

/// `x` rounded down to a multiple of `unit` (values already on the lattice stay put).
pub fn floor_to(x: f64, unit: f64) -> f64 {
    ((x / unit) + 1e-6).floor() * unit
}

/// A guard that changed or removed a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Guard {
    /// Memory raised to the RSS-based floor.
    MemoryFloor,
    /// Memory raised above a size that was OOM-killed at this concurrency or lower.
    OomHistory,
    /// Cpu raised to concurrency / 4 (or 1).
    CpuFloor,
    /// Concurrency capped at 16 or the configured maximum.
    ConcurrencyCap,
    /// Concurrency above 2× the historical maximum refused for lack of confidence.
    HistoricalConcurrency,
    /// A value clipped to a configured bound or the node's allocatable.
    Bounds,
}

impl Guard {
    /// Short human name for rationales.
    pub fn describe(self) -> &'static str {
        match self {
            Guard::MemoryFloor => "memory raised to 1.2× expected peak RSS",
            Guard::OomHistory => "memory raised above a size that was OOM-killed",
            Guard::CpuFloor => "cpu raised to concurrency/4",
            Guard::ConcurrencyCap => "concurrency capped",
            Guard::HistoricalConcurrency => "concurrency held within 2× history",
            Guard::Bounds => "clipped to bounds",
        }
    }
}

/// The memory model of one pipeline: what each guard needs, computed once per decision.
#[derive(Debug, Clone, Default)]
pub struct MemoryModel {
    p95_gb: Option<f64>,
    /// Peak RSS ≈ intercept + slope × concurrency + margin.
    line: Option<(f64, f64, f64)>,
    /// Highest concurrency with an RSS observation, and the p95 RSS there.
    observed: Option<(u32, f64)>,
    ooms: Vec<(f64, u32)>,
}

impl MemoryModel {
    /// Fits the pipeline's history of peak RSS against concurrency.
    pub fn from_stats(stats: Option<&PipelineStats>) -> MemoryModel {
        let Some(s) = stats else {
            return MemoryModel::default();
        };
        let obs = &s.rss_by_concurrency;
        let line = fit_line(obs);
        let observed = obs.iter().map(|(c, _)| *c).max().map(|cmax| {
            let at_max: Vec<f64> = obs
                .iter()
                .filter(|(c, _)| *c == cmax)
                .map(|(_, r)| *r)
                .collect();
            (cmax, crate::stats::quantile(&at_max, 0.95).unwrap_or(0.0))
        });
        MemoryModel {
            p95_gb: s.rss_p95_gb,
            line,
            observed,
            ooms: s.ooms.iter().map(|o| (o.mem_gb, o.concurrency)).collect(),
        }
    }

    /// Expected peak RSS at `concurrency`, GB, if anything is known.
    pub fn expected_rss(&self, concurrency: u32) -> Option<f64> {
        let c = concurrency as f64;
        match (self.line, self.observed) {
            (Some((a, b, margin)), _) => Some(a + b * c + margin),
            (None, Some((cmax, rss))) if concurrency > cmax => Some(rss * c / cmax.max(1) as f64),
            (None, Some((_, rss))) => Some(rss),
            (None, None) => None,
        }
    }

    /// The design's floor, raised to 1.2 × expected RSS at this concurrency.
    pub fn rss_floor(&self, concurrency: u32) -> f64 {
        let design = MIN_MEMORY_GB.max(self.p95_gb.map_or(0.0, |p| RSS_HEADROOM * p));
        design.max(
            self.expected_rss(concurrency)
                .map_or(0.0, |r| RSS_HEADROOM * r),
        )
    }

    /// Memory strictly above every OOM-killed size at this or a lower concurrency, if any.
    pub fn oom_floor(&self, concurrency: u32, mem_step: f64) -> Option<f64> {
        self.ooms
            .iter()
            .filter(|(_, c)| *c <= concurrency)
            .map(|(m, _)| m + mem_step)
            .reduce(f64::max)
    }

    /// Whether `mem` at `concurrency` repeats an OOM.
    pub fn repeats_oom(&self, mem: f64, concurrency: u32) -> bool {
        self.ooms
            .iter()
            .any(|(m, c)| concurrency >= *c && mem <= *m)
    }
}

/// Least squares through (concurrency, rss) with the slope kept ≥ 0 and the largest residual as
/// margin; `None` without at least 3 points at 2 distinct concurrencies.
fn fit_line(obs: &[(u32, f64)]) -> Option<(f64, f64, f64)> {
    let n = obs.len() as f64;
    let distinct = obs
        .iter()
        .map(|(c, _)| *c)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    if obs.len() < 3 || distinct < 2 {
        return None;
    }
    let mx = obs.iter().map(|(c, _)| *c as f64).sum::<f64>() / n;
    let my = obs.iter().map(|(_, r)| *r).sum::<f64>() / n;
    let sxx: f64 = obs.iter().map(|(c, _)| (*c as f64 - mx).powi(2)).sum();
    let sxy: f64 = obs.iter().map(|(c, r)| (*c as f64 - mx) * (r - my)).sum();
    let slope = (sxy / sxx).max(0.0);
    let intercept = my - slope * mx;
    let margin = obs
        .iter()
        .map(|(c, r)| r - (intercept + slope * *c as f64))
        .fold(0.0, f64::max);
    Some((intercept, slope, margin))
}

/// Everything the guards need for one decision.
#[derive(Debug, Clone)]
pub struct Guards {
    /// The pipeline's memory model.
    pub memory: MemoryModel,
    /// Highest concurrency the pipeline ran successfully.
    pub max_success_concurrency: Option<u32>,
    /// Effective bounds (configured ∩ node allocatable).
    pub bounds: Bounds,
    /// Memory step, GB (OOM floors sit one step above the killed size).
    pub mem_step: f64,
}

/// A candidate after the guards: the config, which guards moved it, or why it was dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct Guarded {
    /// The safe config.
    pub config: BuildConfig,
    /// Guards that changed it.
    pub hits: Vec<Guard>,
    /// Whether it exceeds 2× historical concurrency (allowed only when confident).
    pub needs_confidence: bool,
}

impl Guards {
    /// Raises `c` to every floor; `None` when the floors cannot be met within the bounds.
    pub fn apply(&self, c: BuildConfig) -> Option<Guarded> {
        let b = &self.bounds;
        let mut hits = Vec::new();
        let mut g = c;
        let conc_cap = b.max_concurrency.min(MAX_CONCURRENCY);
        if g.concurrency > conc_cap {
            g.concurrency = conc_cap;
            hits.push(Guard::ConcurrencyCap);
        }
        if g.concurrency < b.min_concurrency {
            g.concurrency = b.min_concurrency;
            hits.push(Guard::Bounds);
        }
        let cpu_floor = 1f64.max(g.concurrency as f64 / JOBS_PER_CPU).max(b.min_cpu);
        if g.cpu < cpu_floor {
            g.cpu = cpu_floor;
            hits.push(if cpu_floor > b.min_cpu {
                Guard::CpuFloor
            } else {
                Guard::Bounds
            });
        }
        let rss_floor = self.memory.rss_floor(g.concurrency);
        if g.mem_gb < rss_floor {
            g.mem_gb = rss_floor;
            hits.push(Guard::MemoryFloor);
        }
        if let Some(oom) = self.memory.oom_floor(g.concurrency, self.mem_step) {
            if g.mem_gb < oom {
                g.mem_gb = oom;
                hits.push(Guard::OomHistory);
            }
        }
        if g.mem_gb < b.min_mem_gb {
            g.mem_gb = b.min_mem_gb;
            hits.push(Guard::Bounds);
        }
        // Round up to millicores and MiB so the pod spec carries exactly what was checked.
        g.cpu = ceil_to(g.cpu, CPU_UNIT);
        g.mem_gb = ceil_to(g.mem_gb, MEM_UNIT);
        if g.cpu > b.max_cpu + 1e-9 || g.mem_gb > b.max_mem_gb + 1e-9 {
            return None;
        }
        let needs_confidence = self
            .max_success_concurrency
            .is_some_and(|h| g.concurrency > HISTORY_CONCURRENCY_FACTOR * h);
        Some(Guarded {
            config: g,
            hits,
            needs_confidence,
        })
    }

    /// Why no config at all can satisfy the floors within the bounds, if so.
    ///
    /// Every floor grows with concurrency and a candidate's values only rise to meet them, so
    /// when the least config (fewest jobs, least cpu and memory) fails, every config does.
    pub fn infeasible(&self) -> Option<String> {
        let b = &self.bounds;
        let least = BuildConfig {
            cpu: b.min_cpu,
            mem_gb: b.min_mem_gb,
            concurrency: b.min_concurrency,
        };
        if self.apply(least).is_some() {
            return None;
        }
        let j = least
            .concurrency
            .clamp(1, b.max_concurrency.min(MAX_CONCURRENCY));
        let cpu = ceil_to(1f64.max(j as f64 / JOBS_PER_CPU).max(b.min_cpu), CPU_UNIT);
        if cpu > b.max_cpu + 1e-9 {
            return Some(format!(
                "cpu floor {} at -j{j} above the {} cpu bound",
                super::trim(cpu),
                super::trim(b.max_cpu)
            ));
        }
        let mem = self
            .memory
            .rss_floor(j)
            .max(self.memory.oom_floor(j, self.mem_step).unwrap_or(0.0))
            .max(b.min_mem_gb);
        Some(format!(
            "memory floor {} GB at -j{j} above the {} GB bound",
            super::trim((mem * 10.0).ceil() / 10.0),
            super::trim(b.max_mem_gb)
        ))
    }

    /// Whether `c` satisfies every guard and bound (used by tests and as a final check).
    pub fn check(&self, c: &BuildConfig, confidence: f64) -> Result<(), String> {
        let b = &self.bounds;
        let eps = 1e-9;
        if c.concurrency > MAX_CONCURRENCY
            || c.concurrency > b.max_concurrency
            || c.concurrency < b.min_concurrency.max(1)
        {
            return Err(format!("concurrency {} outside bounds", c.concurrency));
        }
        if c.cpu + eps < 1f64.max(c.concurrency as f64 / JOBS_PER_CPU)
            || c.cpu + eps < b.min_cpu
            || c.cpu > b.max_cpu + eps
        {
            return Err(format!("cpu {} violates floor or bounds", c.cpu));
        }
        if c.mem_gb + eps < self.memory.rss_floor(c.concurrency)
            || c.mem_gb + eps < b.min_mem_gb
            || c.mem_gb > b.max_mem_gb + eps
        {
            return Err(format!(
                "memory {} violates the RSS floor or bounds",
                c.mem_gb
            ));
        }
        if self.memory.repeats_oom(c.mem_gb, c.concurrency) {
            return Err(format!(
                "memory {} at -j{} was OOM-killed before",
                c.mem_gb, c.concurrency
            ));
        }
        if let Some(h) = self.max_success_concurrency {
            if c.concurrency > HISTORY_CONCURRENCY_FACTOR * h && confidence <= CONFIDENT {
                return Err(format!(
                    "concurrency {} above 2×{h} with confidence {confidence:.2}",
                    c.concurrency
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::OomEvent;

    fn guards(stats: &PipelineStats) -> Guards {
        Guards {
            memory: MemoryModel::from_stats(Some(stats)),
            max_success_concurrency: stats.max_success_concurrency,
            bounds: Bounds::default(),
            mem_step: 1.0,
        }
    }

    fn cfg(cpu: f64, mem_gb: f64, concurrency: u32) -> BuildConfig {
        BuildConfig {
            cpu,
            mem_gb,
            concurrency,
        }
    }

    #[test]
    fn memory_floor_is_two_gb_or_1_2_times_p95_at_the_boundary() {
        let none = PipelineStats::default();
        let g = guards(&none);
        assert_eq!(g.apply(cfg(4.0, 2.0, 4)).unwrap().config.mem_gb, 2.0);
        let raised = g.apply(cfg(4.0, 1.99, 4)).unwrap();
        assert_eq!(raised.config.mem_gb, 2.0);
        assert_eq!(raised.hits, vec![Guard::MemoryFloor]);

        let s = PipelineStats {
            rss_p95_gb: Some(5.0),
            ..Default::default()
        };
        let g = guards(&s);
        assert_eq!(g.memory.rss_floor(4), 6.0);
        assert!(g.apply(cfg(4.0, 6.0, 4)).unwrap().hits.is_empty());
        assert_eq!(g.apply(cfg(4.0, 5.99, 4)).unwrap().config.mem_gb, 6.0);
    }

    #[test]
    fn cpu_floor_is_a_quarter_of_concurrency_and_at_least_one() {
        let g = guards(&PipelineStats::default());
        assert_eq!(g.apply(cfg(2.0, 8.0, 8)).unwrap().config.cpu, 2.0);
        let r = g.apply(cfg(2.0, 8.0, 9)).unwrap();
        assert_eq!(r.config.cpu, 2.25);
        assert_eq!(r.hits, vec![Guard::CpuFloor]);
        assert_eq!(g.apply(cfg(0.5, 8.0, 1)).unwrap().config.cpu, 1.0);
    }

    #[test]
    fn concurrency_is_capped_at_16_and_twice_history_needs_confidence() {
        let s = PipelineStats {
            max_success_concurrency: Some(4),
            ..Default::default()
        };
        let g = guards(&s);
        let r = g.apply(cfg(8.0, 8.0, 20)).unwrap();
        assert_eq!(r.config.concurrency, 16);
        assert!(r.hits.contains(&Guard::ConcurrencyCap));
        assert!(!g.apply(cfg(4.0, 8.0, 8)).unwrap().needs_confidence);
        assert!(g.apply(cfg(4.0, 8.0, 9)).unwrap().needs_confidence);
        assert!(g.check(&cfg(4.0, 8.0, 9), 0.8).is_err());
        assert!(g.check(&cfg(4.0, 8.0, 9), 0.81).is_ok());
        assert!(g.check(&cfg(4.0, 8.0, 8), 0.0).is_ok());
    }

    #[test]
    fn memory_floor_follows_concurrency() {
        // Peak RSS = 1 + 0.5 × jobs, observed at -j2..-j6.
        let obs: Vec<(u32, f64)> = (2..=6).map(|c| (c, 1.0 + 0.5 * c as f64)).collect();
        let s = PipelineStats {
            rss_p95_gb: Some(3.8),
            rss_by_concurrency: obs,
            ..Default::default()
        };
        let g = guards(&s);
        assert!((g.memory.expected_rss(12).unwrap() - 7.0).abs() < 1e-9);
        assert!((g.memory.rss_floor(12) - 8.4).abs() < 1e-9);
        // At low concurrency the design's p95 floor still holds.
        assert!((g.memory.rss_floor(1) - 1.2 * 3.8).abs() < 1e-9);
        let r = g.apply(cfg(4.0, 6.0, 12)).unwrap();
        assert!((r.config.mem_gb - 8.4).abs() < 1e-3);

        // One observed concurrency only: assume proportional growth above it.
        let s = PipelineStats {
            rss_p95_gb: Some(2.0),
            rss_by_concurrency: vec![(4, 2.0), (4, 2.0), (4, 2.0)],
            ..Default::default()
        };
        let g = guards(&s);
        assert_eq!(g.memory.expected_rss(8), Some(4.0));
        assert_eq!(g.memory.expected_rss(2), Some(2.0));
    }

    #[test]
    fn an_oom_size_is_never_offered_again_at_that_or_higher_concurrency() {
        let s = PipelineStats {
            ooms: vec![OomEvent {
                mem_gb: 6.0,
                concurrency: 8,
            }],
            ..Default::default()
        };
        let g = guards(&s);
        let r = g.apply(cfg(4.0, 6.0, 8)).unwrap();
        assert_eq!(r.config.mem_gb, 7.0);
        assert_eq!(r.hits, vec![Guard::OomHistory]);
        assert_eq!(g.apply(cfg(4.0, 6.0, 12)).unwrap().config.mem_gb, 7.0);
        // At a lower concurrency that size is allowed.
        assert_eq!(g.apply(cfg(4.0, 6.0, 4)).unwrap().config.mem_gb, 6.0);
        assert!(g.check(&cfg(4.0, 6.0, 9), 1.0).is_err());
    }

    #[test]
    fn floors_past_the_bounds_drop_the_candidate() {
        let s = PipelineStats {
            rss_p95_gb: Some(60.0),
            ..Default::default()
        };
        let g = Guards {
            bounds: Bounds {
                max_mem_gb: 64.0,
                ..Bounds::default()
            },
            ..guards(&s)
        };
        assert!(g.apply(cfg(4.0, 8.0, 4)).is_none());
        assert_eq!(
            g.infeasible().as_deref(),
            Some("memory floor 72 GB at -j1 above the 64 GB bound")
        );
        assert_eq!(guards(&PipelineStats::default()).infeasible(), None);
    }
}
