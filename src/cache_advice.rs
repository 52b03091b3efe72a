//! Cache advice: how much time each pipeline loses to cold build caches, and what a person can do
//! about it; and the cache state a build should expect at admission. Pure.
//!
//! A build's cache state comes from the hit ratio the reporter posts (ccache or sccache
//! statistics): below [`COLD_BELOW`] it started cold, from [`WARM_FROM`] warm, partial between.
//! Durations are compared directly on successful runs (median of each state), not through the
//! forest, so the figures hold even without a model; runs of different configs are mixed, which
//! the medians tolerate because cache state moves durations far more than resources do (a cold
//! libxml2 build takes ~60 s, a warm one ~7.5 s).
//!
//! Time lost to misses: each build's shortfall from the hit ratio warm builds reach (their
//! median), priced at the seconds a unit of hit ratio is worth in this pipeline (the
//! least-squares slope of duration on hit ratio), summed per day of observed history (at least
//! one day, so a burst of builds is not extrapolated into a daily figure).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::features::{finished_at, is_main_branch, PipelineHistory};
use crate::record::RunRecord;
use crate::stats::quantile;

/// Hit ratio below which a build started cold.
pub const COLD_BELOW: f64 = 0.3;
/// Hit ratio from which a build started warm.
pub const WARM_FROM: f64 = 0.8;
/// Fewest builds with cache statistics before anything but "no statistics" is said.
pub const MIN_BUILDS: usize = 8;
/// Share of builds with statistics below which the advice is to enable them.
pub const MIN_STATS_SHARE: f64 = 0.5;
/// Share of a pipeline's build time lost to misses from which it is advised on.
pub const MIN_LOST_SHARE: f64 = 0.1;
/// Fewest builds on each side of a change point in the hit ratio.
pub const MIN_SEGMENT: usize = 5;
/// Smallest fall in the mean hit ratio reported as a drop.
pub const MIN_DROP: f64 = 0.3;
/// Age of the previous build after which its cache may have been evicted or cooled.
pub const STALE_AFTER_HOURS: i64 = 24;

/// A build cache's state at the start of a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheState {
    /// Hit ratio below [`COLD_BELOW`].
    Cold,
    /// Between cold and warm.
    Partial,
    /// Hit ratio at least [`WARM_FROM`].
    Warm,
}

impl CacheState {
    /// The state a hit ratio shows.
    pub fn of(hit_ratio: f64) -> CacheState {
        if hit_ratio < COLD_BELOW {
            CacheState::Cold
        } else if hit_ratio < WARM_FROM {
            CacheState::Partial
        } else {
            CacheState::Warm
        }
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheState::Cold => "cold",
            CacheState::Partial => "partial",
            CacheState::Warm => "warm",
        }
    }
}

/// Successful builds in one cache state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateDurations {
    /// Builds.
    pub builds: usize,
    /// Their median duration, seconds.
    pub median_s: f64,
}

/// The hit-ratio distribution of a pipeline's builds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HitRatios {
    /// Mean.
    pub mean: f64,
    /// 10th percentile.
    pub p10: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// Share of builds that started cold.
    pub cold_share: f64,
    /// Share that started warm.
    pub warm_share: f64,
}

/// Builds of main-line branches or of the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BranchGroup {
    /// Builds with cache statistics.
    pub builds: usize,
    /// Share of them that started cold.
    pub cold_share: f64,
    /// Share of them that started warm.
    pub warm_share: f64,
    /// Seconds per day their misses cost (see the module docs).
    pub lost_s_per_day: f64,
}

/// A lasting fall of the hit ratio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HitRatioDrop {
    /// Mean hit ratio before.
    pub from: f64,
    /// Mean hit ratio since.
    pub to: f64,
    /// Start of the first build after the fall.
    pub on: DateTime<Utc>,
}

/// What kind of advice a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdviceKind {
    /// Builds report no cache statistics.
    NoStatistics,
    /// The cache never warms: it is not kept between builds.
    NeverWarm,
    /// Builds of branches other than main start cold much more often.
    BranchesStartCold,
    /// The hit ratio fell and stayed low.
    HitRatioDropped,
    /// Misses cost a sizeable share of build time, on every branch.
    CacheMisses,
}

/// One line of advice with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advice {
    /// The pipeline.
    pub pipeline: String,
    /// Kind.
    pub kind: AdviceKind,
    /// Seconds per day at stake, when it can be estimated.
    pub lost_s_per_day: Option<f64>,
    /// The line a person reads.
    pub text: String,
}

/// A pipeline's cache analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineCache {
    /// The pipeline.
    pub pipeline: String,
    /// Successful builds in the period.
    pub builds: usize,
    /// Of them, builds with a cache hit ratio.
    pub with_statistics: usize,
    /// The hit-ratio distribution (absent without statistics).
    pub hit_ratio: Option<HitRatios>,
    /// Median duration by cache state.
    pub durations: BTreeMap<CacheState, StateDurations>,
    /// Seconds per day lost to misses (absent without warm builds to compare with).
    pub lost_s_per_day: Option<f64>,
    /// Seconds per day of successful builds, for scale.
    pub build_s_per_day: f64,
    /// Main-line builds.
    pub main: Option<BranchGroup>,
    /// Builds of other branches.
    pub other_branches: Option<BranchGroup>,
    /// A lasting fall of the hit ratio, if one shows.
    pub drop: Option<HitRatioDrop>,
    /// Days of history the per-day figures are over.
    pub days: f64,
    /// What to do, most time at stake first.
    pub advice: Vec<Advice>,
}

/// The cache analysis of every pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheReport {
    /// Builds started at or after this time were analysed.
    pub since: DateTime<Utc>,
    /// Per pipeline, most time lost first.
    pub pipelines: Vec<PipelineCache>,
    /// Every pipeline's advice, most time at stake first.
    pub advice: Vec<Advice>,
}

fn median(v: &[f64]) -> Option<f64> {
    quantile(v, 0.5)
}

/// A build with its hit ratio (successful builds with statistics only).
struct Observed<'a> {
    run: &'a RunRecord,
    hit: f64,
}

fn durations_by_state(obs: &[&Observed]) -> BTreeMap<CacheState, StateDurations> {
    let mut by: BTreeMap<CacheState, Vec<f64>> = BTreeMap::new();
    for o in obs {
        by.entry(CacheState::of(o.hit))
            .or_default()
            .push(o.run.duration_s);
    }
    by.into_iter()
        .filter_map(|(s, d)| {
            Some((
                s,
                StateDurations {
                    builds: d.len(),
                    median_s: median(&d)?,
                },
            ))
        })
        .collect()
}

/// How many seconds a build of these loses per unit of hit ratio: minus the least-squares slope
/// of duration on hit ratio (configs are mixed in, but teams do not pick resources by cache
/// state, so they add noise, not bias). `None` with too little spread to fit.
fn seconds_per_hit(obs: &[&Observed]) -> Option<f64> {
    let n = obs.len() as f64;
    if obs.len() < 3 {
        return None;
    }
    let mx = obs.iter().map(|o| o.hit).sum::<f64>() / n;
    let my = obs.iter().map(|o| o.run.duration_s).sum::<f64>() / n;
    let sxx: f64 = obs.iter().map(|o| (o.hit - mx).powi(2)).sum();
    let sxy: f64 = obs
        .iter()
        .map(|o| (o.hit - mx) * (o.run.duration_s - my))
        .sum();
    (sxx > 1e-9).then(|| (-sxy / sxx).max(0.0))
}

/// Seconds `obs` lost to misses: each build's shortfall from the warm hit ratio `warm_hit`,
/// priced at `per_hit` seconds per unit of hit ratio.
fn lost_s(obs: &[&Observed], per_hit: f64, warm_hit: f64) -> f64 {
    obs.iter()
        .map(|o| per_hit * (warm_hit - o.hit).max(0.0))
        .sum()
}

fn share(n: usize, of: usize) -> f64 {
    if of == 0 {
        0.0
    } else {
        n as f64 / of as f64
    }
}

/// The largest lasting fall of the hit ratio over `obs` (in time order): the split that
/// maximises mean(before) − mean(after), with at least [`MIN_SEGMENT`] builds on each side.
fn find_drop(obs: &[&Observed]) -> Option<HitRatioDrop> {
    let n = obs.len();
    if n < 2 * MIN_SEGMENT {
        return None;
    }
    let prefix: Vec<f64> = std::iter::once(0.0)
        .chain(obs.iter().scan(0.0, |s, o| {
            *s += o.hit;
            Some(*s)
        }))
        .collect();
    let total = prefix[n];
    let (k, fall) = (MIN_SEGMENT..=n - MIN_SEGMENT)
        .map(|k| {
            let before = prefix[k] / k as f64;
            let after = (total - prefix[k]) / (n - k) as f64;
            (k, before - after)
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    if fall < MIN_DROP {
        return None;
    }
    let before = prefix[k] / k as f64;
    Some(HitRatioDrop {
        from: before,
        to: before - fall,
        on: obs[k].run.started_at,
    })
}

fn secs(s: f64) -> String {
    if s >= 3600.0 {
        format!("{:.1} h", s / 3600.0)
    } else if s >= 120.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{s:.0} s")
    }
}

/// Analyses one pipeline's runs (any order; failed runs and runs without statistics are
/// counted but not compared).
pub fn analyse_pipeline(pipeline: &str, runs: &[&RunRecord]) -> PipelineCache {
    let mut ok: Vec<&RunRecord> = runs.iter().copied().filter(|r| r.success).collect();
    ok.sort_by(|a, b| (a.started_at, &a.run_id).cmp(&(b.started_at, &b.run_id)));
    let observed: Vec<Observed> = ok
        .iter()
        .filter_map(|r| {
            let hit = r.cache_hit_ratio.filter(|h| h.is_finite())?;
            Some(Observed { run: r, hit })
        })
        .collect();
    let all: Vec<&Observed> = observed.iter().collect();
    let days = match (ok.first(), ok.last()) {
        (Some(a), Some(b)) => {
            ((finished_at(b) - a.started_at).num_seconds() as f64 / 86_400.0).max(1.0)
        }
        _ => 1.0,
    };
    let mut out = PipelineCache {
        pipeline: pipeline.to_string(),
        builds: ok.len(),
        with_statistics: observed.len(),
        hit_ratio: None,
        durations: durations_by_state(&all),
        lost_s_per_day: None,
        build_s_per_day: ok.iter().map(|r| r.duration_s).sum::<f64>() / days,
        main: None,
        other_branches: None,
        drop: None,
        days,
        advice: Vec::new(),
    };
    if !observed.is_empty() {
        let hits: Vec<f64> = observed.iter().map(|o| o.hit).collect();
        let count = |s: CacheState| {
            observed
                .iter()
                .filter(|o| CacheState::of(o.hit) == s)
                .count()
        };
        out.hit_ratio = Some(HitRatios {
            mean: hits.iter().sum::<f64>() / hits.len() as f64,
            p10: quantile(&hits, 0.1).unwrap_or(0.0),
            p50: quantile(&hits, 0.5).unwrap_or(0.0),
            p90: quantile(&hits, 0.9).unwrap_or(0.0),
            cold_share: share(count(CacheState::Cold), hits.len()),
            warm_share: share(count(CacheState::Warm), hits.len()),
        });
    }
    // The reference a miss is measured against: the median hit ratio of warm builds.
    let warm_hits: Vec<f64> = observed
        .iter()
        .map(|o| o.hit)
        .filter(|h| *h >= WARM_FROM)
        .collect();
    let price = median(&warm_hits).zip(seconds_per_hit(&all));
    let group = |main: bool| -> Option<BranchGroup> {
        let g: Vec<&Observed> = observed
            .iter()
            .filter(|o| is_main_branch(&o.run.branch) == main)
            .collect();
        if g.is_empty() {
            return None;
        }
        let cold = g.iter().filter(|o| o.hit < COLD_BELOW).count();
        let warm = g.iter().filter(|o| o.hit >= WARM_FROM).count();
        Some(BranchGroup {
            builds: g.len(),
            cold_share: share(cold, g.len()),
            warm_share: share(warm, g.len()),
            lost_s_per_day: price.map_or(0.0, |(w, per)| lost_s(&g, per, w) / days),
        })
    };
    out.main = group(true);
    out.other_branches = group(false);
    out.lost_s_per_day = price.map(|(w, per)| lost_s(&all, per, w) / days);
    out.drop = find_drop(&all);
    out.advice = advise(&out);
    out
}

/// The advice lines for one analysed pipeline, most time at stake first.
fn advise(p: &PipelineCache) -> Vec<Advice> {
    let mut advice = Vec::new();
    let line = |kind, lost: Option<f64>, text: String| Advice {
        pipeline: p.pipeline.clone(),
        kind,
        lost_s_per_day: lost,
        text,
    };
    let name = &p.pipeline;
    if p.builds > 0 && share(p.with_statistics, p.builds) < MIN_STATS_SHARE {
        advice.push(line(
            AdviceKind::NoStatistics,
            None,
            format!(
                "`{name}`: no cache statistics in {} of {} builds: enable ccache or sccache (the reporter reads both) so misses can be measured",
                p.builds - p.with_statistics,
                p.builds
            ),
        ));
        return advice;
    }
    let (Some(h), true) = (&p.hit_ratio, p.with_statistics >= MIN_BUILDS) else {
        return advice;
    };
    let median_of = |s: CacheState| p.durations.get(&s).map(|d| d.median_s);
    let warm = median_of(CacheState::Warm);
    let cold = median_of(CacheState::Cold);
    let vs = match (cold, warm) {
        (Some(c), Some(w)) => format!("; median {} cold vs {} warm", secs(c), secs(w)),
        _ => String::new(),
    };
    if h.p90 < COLD_BELOW {
        advice.push(line(
            AdviceKind::NeverWarm,
            None,
            format!(
                "`{name}`: the cache never warms (90th percentile hit ratio {:.2} over {} builds): it is not kept between builds; give the builds a persistent or shared cache (the webhook can mount one: --cache-claim)",
                h.p90, p.with_statistics
            ),
        ));
        return advice;
    }
    let mut explained_cold = false;
    if let (Some(main), Some(other)) = (&p.main, &p.other_branches) {
        if other.builds >= 3 && other.cold_share >= 0.5 && other.cold_share >= main.cold_share + 0.2
        {
            explained_cold = true;
            advice.push(line(
                AdviceKind::BranchesStartCold,
                Some(other.lost_s_per_day),
                format!(
                    "`{name}`: builds on branches other than main start cold {:.0}% of the time (main: {:.0}%){vs}, costing about {} a day: share the main branch's cache with branch and PR builds",
                    other.cold_share * 100.0,
                    main.cold_share * 100.0,
                    secs(other.lost_s_per_day)
                ),
            ));
        }
    }
    if let Some(d) = &p.drop {
        advice.push(line(
            AdviceKind::HitRatioDropped,
            None,
            format!(
                "`{name}`: hit ratio fell from {:.2} to {:.2} on {}: the cache may be too small or was reset (raise CCACHE_MAXSIZE / SCCACHE_CACHE_SIZE, check what clears it)",
                d.from,
                d.to,
                d.on.format("%Y-%m-%d %H:%M")
            ),
        ));
    }
    let lost_share = p
        .lost_s_per_day
        .map_or(0.0, |l| l / p.build_s_per_day.max(1e-9));
    if !explained_cold && (h.cold_share >= 0.2 || lost_share >= MIN_LOST_SHARE) {
        advice.push(line(
            AdviceKind::CacheMisses,
            p.lost_s_per_day,
            format!(
                "`{name}`: misses cost about {} a day ({:.0}% of its build time; {:.0}% of builds start cold, median hit ratio {:.2}{vs}): keep the cache between builds and share it across branches (a persistent volume or a remote sccache)",
                p.lost_s_per_day.map_or_else(|| "an unknown time".into(), secs),
                lost_share * 100.0,
                h.cold_share * 100.0,
                h.p50
            ),
        ));
    }
    sort_advice(&mut advice);
    advice
}

fn sort_advice(advice: &mut [Advice]) {
    advice.sort_by(|a, b| {
        let key = |x: &Advice| x.lost_s_per_day.unwrap_or(-1.0);
        key(b)
            .total_cmp(&key(a))
            .then_with(|| a.pipeline.cmp(&b.pipeline))
    });
}

/// Analyses every pipeline in `runs` (builds that started at or after `since`).
pub fn analyse(runs: &[RunRecord], since: DateTime<Utc>) -> CacheReport {
    let mut by: BTreeMap<&str, Vec<&RunRecord>> = BTreeMap::new();
    for r in runs.iter().filter(|r| r.started_at >= since) {
        by.entry(r.pipeline.as_str()).or_default().push(r);
    }
    let mut pipelines: Vec<PipelineCache> = by
        .into_iter()
        .map(|(p, rs)| analyse_pipeline(p, &rs))
        .collect();
    pipelines.sort_by(|a, b| {
        b.lost_s_per_day
            .unwrap_or(-1.0)
            .total_cmp(&a.lost_s_per_day.unwrap_or(-1.0))
            .then_with(|| a.pipeline.cmp(&b.pipeline))
    });
    let mut advice: Vec<Advice> = pipelines.iter().flat_map(|p| p.advice.clone()).collect();
    sort_advice(&mut advice);
    CacheReport {
        since,
        pipelines,
        advice,
    }
}

/// The report as a table, then the advice lines.
pub fn table(r: &CacheReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:>6} {:>6} {:>5} {:>5} {:>6} {:>9} {:>9} {:>10}",
        "PIPELINE",
        "BUILDS",
        "STATS",
        "HIT50",
        "HIT90",
        "COLD%",
        "COLD_MED",
        "WARM_MED",
        "LOST/DAY"
    );
    let med = |p: &PipelineCache, s| {
        p.durations.get(&s).map_or_else(
            || "-".into(),
            |d: &StateDurations| format!("{:.1}s", d.median_s),
        )
    };
    for p in &r.pipelines {
        let (h50, h90, cold) =
            p.hit_ratio
                .as_ref()
                .map_or(("-".into(), "-".into(), "-".into()), |h| {
                    (
                        format!("{:.2}", h.p50),
                        format!("{:.2}", h.p90),
                        format!("{:.0}", h.cold_share * 100.0),
                    )
                });
        let _ = writeln!(
            out,
            "{:<24} {:>6} {:>6} {:>5} {:>5} {:>6} {:>9} {:>9} {:>10}",
            crate::admission::contract::cap_bytes(&p.pipeline, 24),
            p.builds,
            p.with_statistics,
            h50,
            h90,
            cold,
            med(p, CacheState::Cold),
            med(p, CacheState::Warm),
            p.lost_s_per_day.map_or_else(|| "-".into(), secs)
        );
    }
    if r.pipelines.is_empty() {
        let _ = writeln!(out, "no builds since {}", r.since.format("%Y-%m-%d %H:%M"));
    }
    let _ = writeln!(out);
    if r.advice.is_empty() {
        let _ = writeln!(
            out,
            "No cache advice: no pipeline loses much time to cold caches."
        );
    } else {
        let _ = writeln!(out, "Advice (most time at stake first):");
        for a in &r.advice {
            let _ = writeln!(out, "- {}", a.text);
        }
    }
    out
}

/// The cache a build should expect at admission, from what was known before it started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpectedCache {
    /// Expected state (absent when nothing says).
    pub state: Option<CacheState>,
    /// The hit ratio it is expected from, when one is known.
    pub hit_ratio: Option<f64>,
    /// What it is based on, for the rationale.
    pub basis: String,
}

impl ExpectedCache {
    /// One phrase for a rationale: `expected cache warm (last build of main hit 0.92, 40 min ago)`.
    pub fn describe(&self) -> String {
        format!(
            "expected cache {} ({})",
            self.state.map_or("unknown", CacheState::as_str),
            self.basis
        )
    }
}

/// The cache state a build of `branch` should expect at `now`: its branch's previous build's
/// hit ratio, the same history features the forest reads (`prev_cache_hit_ratio`,
/// `prev_age_s`), so the prediction and the rationale speak of the same cache.
pub fn expected_cache(
    history: &PipelineHistory,
    branch: &str,
    now: DateTime<Utc>,
) -> ExpectedCache {
    let Some(prev) = history.last_of_branch(branch) else {
        return ExpectedCache {
            state: (!history.is_empty()).then_some(CacheState::Cold),
            hit_ratio: None,
            basis: if history.is_empty() {
                "no earlier build of this pipeline".into()
            } else {
                format!("first build of branch {branch}")
            },
        };
    };
    let age = now - finished_at(prev);
    let ago = secs(age.num_seconds().max(0) as f64);
    match prev.cache_hit_ratio {
        Some(h) => {
            let mut state = CacheState::of(h);
            let mut basis = format!("last build of {branch} hit {h:.2}, {ago} ago");
            if age > Duration::hours(STALE_AFTER_HOURS) && state == CacheState::Warm {
                state = CacheState::Partial;
                basis.push_str(", may have cooled");
            }
            ExpectedCache {
                state: Some(state),
                hit_ratio: Some(h),
                basis,
            }
        }
        None => ExpectedCache {
            state: None,
            hit_ratio: None,
            basis: format!("last build of {branch} {ago} ago reported no cache statistics"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(minute: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_795_000_000 + minute * 60, 0).unwrap()
    }

    fn run(
        id: usize,
        pipeline: &str,
        branch: &str,
        minute: i64,
        hit: Option<f64>,
        d: f64,
    ) -> RunRecord {
        RunRecord {
            run_id: format!("{pipeline}-{id}"),
            pipeline: pipeline.into(),
            branch: branch.into(),
            image: "gcc:13".into(),
            node: "m5.xlarge".into(),
            cpu_req: 4.0,
            mem_req_gb: 8.0,
            concurrency: 4,
            max_rss_gb: Some(2.0),
            io_read_gb: None,
            io_write_gb: None,
            cache_hit_ratio: hit,
            num_steps: None,
            avg_step_duration_s: None,
            duration_s: d,
            success: true,
            retry_count: 0,
            oom_killed: false,
            started_at: at(minute),
            decision: None,
            predicted_duration_s: None,
        }
    }

    #[test]
    fn states_follow_the_thresholds() {
        assert_eq!(CacheState::of(0.0), CacheState::Cold);
        assert_eq!(CacheState::of(0.29), CacheState::Cold);
        assert_eq!(CacheState::of(0.3), CacheState::Partial);
        assert_eq!(CacheState::of(0.8), CacheState::Warm);
    }

    /// A day of builds: main warm (60 s), branches cold 80 % of the time (600 s).
    fn branchy(pipeline: &str, cold_s: f64, warm_s: f64) -> Vec<RunRecord> {
        (0..48)
            .map(|i| {
                let main = i % 2 == 0;
                let cold = !main && i % 10 != 1;
                let (hit, d) = if cold { (0.05, cold_s) } else { (0.9, warm_s) };
                run(
                    i,
                    pipeline,
                    if main { "main" } else { "pr-7" },
                    i as i64 * 30,
                    Some(hit),
                    d,
                )
            })
            .collect()
    }

    #[test]
    fn branch_builds_that_start_cold_are_named_with_the_time_they_cost() {
        let runs = branchy("api", 600.0, 60.0);
        let r = analyse(&runs, at(-1));
        let p = &r.pipelines[0];
        assert_eq!(p.builds, 48);
        let other = p.other_branches.as_ref().unwrap();
        assert!((other.cold_share - 0.8).abs() < 0.1, "{other:?}");
        assert_eq!(p.durations[&CacheState::Cold].median_s, 600.0);
        assert_eq!(p.durations[&CacheState::Warm].median_s, 60.0);
        // 24 branch builds, ~19 cold, 540 s each, over one day: ~10,000 s.
        let lost = p.lost_s_per_day.unwrap();
        assert!((9_000.0..12_000.0).contains(&lost), "{lost}");
        assert_eq!(r.advice[0].kind, AdviceKind::BranchesStartCold);
        assert!(r.advice[0].text.contains("`api`"), "{}", r.advice[0].text);
        assert!(r.advice[0].text.contains("share the main branch's cache"));
        assert!(
            r.advice[0].text.contains("median 10 min cold vs 60 s warm"),
            "{}",
            r.advice[0].text
        );
    }

    #[test]
    fn pipelines_are_ordered_by_the_time_they_lose() {
        let mut runs = branchy("small", 90.0, 60.0);
        runs.extend(branchy("big", 900.0, 60.0));
        let r = analyse(&runs, at(-1));
        assert_eq!(r.pipelines[0].pipeline, "big");
        assert_eq!(r.advice[0].pipeline, "big");
        let ratio = r.pipelines[0].lost_s_per_day.unwrap() / r.pipelines[1].lost_s_per_day.unwrap();
        assert!(
            (25.0..31.0).contains(&ratio),
            "840 s vs 30 s a miss: {ratio}"
        );
    }

    #[test]
    fn a_lasting_drop_of_the_hit_ratio_is_dated() {
        let runs: Vec<RunRecord> = (0..40)
            .map(|i| {
                let after = i >= 25;
                let hit = if after { 0.3 } else { 0.9 };
                run(
                    i,
                    "core",
                    "main",
                    i as i64 * 60,
                    Some(hit),
                    if after { 300.0 } else { 100.0 },
                )
            })
            .collect();
        let p = analyse_pipeline("core", &runs.iter().collect::<Vec<_>>());
        let d = p.drop.as_ref().unwrap();
        assert!(
            (d.from - 0.9).abs() < 1e-9 && (d.to - 0.3).abs() < 1e-9,
            "{d:?}"
        );
        assert_eq!(d.on, at(25 * 60));
        assert!(p
            .advice
            .iter()
            .any(|a| a.kind == AdviceKind::HitRatioDropped
                && a.text.contains("fell from 0.90 to 0.30")));
        // Noise without a lasting fall is not a drop.
        let flat: Vec<RunRecord> = (0..40)
            .map(|i| {
                run(
                    i,
                    "core",
                    "main",
                    i as i64,
                    Some(if i % 2 == 0 { 0.8 } else { 0.95 }),
                    10.0,
                )
            })
            .collect();
        assert!(analyse_pipeline("core", &flat.iter().collect::<Vec<_>>())
            .drop
            .is_none());
    }

    #[test]
    fn missing_statistics_and_caches_that_never_warm_get_their_own_advice() {
        let none: Vec<RunRecord> = (0..10)
            .map(|i| run(i, "go", "main", i as i64, None, 50.0))
            .collect();
        let r = analyse(&none, at(-1));
        assert_eq!(r.advice.len(), 1);
        assert_eq!(r.advice[0].kind, AdviceKind::NoStatistics);
        assert!(r.advice[0].text.contains("enable ccache or sccache"));
        let cold: Vec<RunRecord> = (0..10)
            .map(|i| run(i, "c", "main", i as i64, Some(0.02), 50.0))
            .collect();
        let r = analyse(&cold, at(-1));
        assert_eq!(r.advice[0].kind, AdviceKind::NeverWarm);
        assert!(
            r.pipelines[0].lost_s_per_day.is_none(),
            "no warm build to compare with"
        );
        // A healthy pipeline gets none.
        let warm: Vec<RunRecord> = (0..10)
            .map(|i| run(i, "w", "main", i as i64, Some(0.95), 50.0))
            .collect();
        assert!(analyse(&warm, at(-1)).advice.is_empty());
        assert!(table(&analyse(&warm, at(-1))).contains("No cache advice"));
    }

    #[test]
    fn the_expected_cache_is_the_branchs_last_build() {
        let runs = vec![
            run(0, "p", "main", 0, Some(0.92), 60.0),
            run(1, "p", "pr-1", 10, Some(0.1), 60.0),
        ];
        let h = PipelineHistory::from_runs(&runs);
        let main = expected_cache(&h, "main", at(40));
        assert_eq!(main.state, Some(CacheState::Warm));
        assert!(
            main.describe()
                .contains("expected cache warm (last build of main hit 0.92, 39 min ago)"),
            "{}",
            main.describe()
        );
        assert_eq!(
            expected_cache(&h, "pr-1", at(40)).state,
            Some(CacheState::Cold)
        );
        let new = expected_cache(&h, "pr-2", at(40));
        assert_eq!(new.state, Some(CacheState::Cold));
        assert!(new.basis.contains("first build of branch pr-2"));
        // A day later the warm cache may have cooled.
        let later = expected_cache(&h, "main", at(60 * 30));
        assert_eq!(later.state, Some(CacheState::Partial));
        assert_eq!(
            expected_cache(&PipelineHistory::default(), "main", at(0)).state,
            None
        );
    }

    /// Simulated CI: each pipeline's cache sensitivity and branch mix are known, so the true
    /// time lost to misses is too (noise-free durations at each build's hit ratio against a
    /// warm 0.92 cache, the simulator's warmest). The analysis must name the pipeline that
    /// loses most and get each loss within a factor of two.
    #[test]
    fn on_simulated_ci_the_advice_names_the_right_pipelines_and_magnitudes() {
        let end = Utc.timestamp_opt(1_795_000_000, 0).unwrap();
        let runs = crate::simulate::ci_runs(4000, end, 17);
        let profiles = crate::simulate::default_profiles();
        let r = analyse(&runs, end - Duration::days(30));
        let mut truth: Vec<(String, f64)> = Vec::new();
        for p in &r.pipelines {
            let profile = profiles.iter().find(|x| x.name == p.pipeline).unwrap();
            let lost: f64 = runs
                .iter()
                .filter(|x| x.pipeline == p.pipeline && x.success)
                .filter_map(|x| {
                    let h = x.cache_hit_ratio?;
                    let c = x.config();
                    Some(
                        (profile.expected_duration(&c, h, 1.0)
                            - profile.expected_duration(&c, 0.92, 1.0))
                        .max(0.0),
                    )
                })
                .sum::<f64>()
                / p.days;
            let est = p.lost_s_per_day.unwrap();
            eprintln!(
                "{}: estimated {est:.0} s/day, true {lost:.0} s/day",
                p.pipeline
            );
            assert!(
                est > lost / 2.0 && est < lost * 2.0,
                "{}: {est} vs {lost}",
                p.pipeline
            );
            truth.push((p.pipeline.clone(), lost));
        }
        truth.sort_by(|a, b| b.1.total_cmp(&a.1));
        assert_eq!(r.pipelines[0].pipeline, truth[0].0);
        assert_eq!(r.advice[0].pipeline, truth[0].0, "{:#?}", r.advice);
        eprintln!("{}", table(&r));
    }
}
