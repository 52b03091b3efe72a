//! Realized savings: builds InfraMind changed against the control group it left alone. Pure.
//!
//! The webhook holds out a share of the pods it would change (by pod uid, see
//! `admission::holdout`); those builds run as requested and are tagged `holdout`. Because the
//! draw is random, the two groups differ only in whether the recommendation was applied, so the
//! difference of their durations is the effect. Applied builds include explorations (they ran
//! with InfraMind's config); dry-run, unchanged and untagged builds are left out.
//!
//! Durations are compared on successful builds (a failed build's duration is where it stopped).
//! The confidence interval of the median (and p90) difference is a percentile bootstrap with a
//! seeded RNG, so the same data always give the same interval. Below [`MIN_HOLDOUT_BUILDS`]
//! successful builds in either group the report says "not enough data yet" instead of a number.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::record::{DecisionTag, RunRecord};
use crate::stats::quantile;

/// Fewest successful builds each group needs before an effect is reported: with 20 a bootstrap
/// median is stable to a few percent of the spread; with fewer an interval would mostly show noise.
pub const MIN_HOLDOUT_BUILDS: usize = 20;
/// Bootstrap resamples per interval.
pub const DEFAULT_RESAMPLES: usize = 2000;
/// Seed of the bootstrap (fixed: a report is reproducible from its data).
pub const DEFAULT_SEED: u64 = 15;

/// Prices of requested resources.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prices {
    /// Currency units per requested vCPU-hour.
    pub cpu_hour: f64,
    /// Currency units per requested GB-hour of memory.
    pub gb_hour: f64,
}

impl Default for Prices {
    fn default() -> Self {
        // The optimizer's default cost-objective prices (`--cpu-price-per-hour`,
        // `--mem-price-per-gb-hour`).
        Prices {
            cpu_hour: 0.04,
            gb_hour: 0.005,
        }
    }
}

impl Prices {
    /// The prices configured for the optimizer's cost objective.
    pub fn from_optimizer(s: &crate::config::OptimizerSettings) -> Prices {
        Prices {
            cpu_hour: s.cpu_price_per_hour,
            gb_hour: s.mem_price_per_gb_hour,
        }
    }
}

/// How the report is computed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SavingsConfig {
    /// Resource prices.
    pub prices: Prices,
    /// Fewest successful builds per group before an effect is reported.
    pub min_builds: usize,
    /// Bootstrap resamples.
    pub resamples: usize,
    /// Bootstrap seed.
    pub seed: u64,
}

impl Default for SavingsConfig {
    fn default() -> Self {
        SavingsConfig {
            prices: Prices::default(),
            min_builds: MIN_HOLDOUT_BUILDS,
            resamples: DEFAULT_RESAMPLES,
            seed: DEFAULT_SEED,
        }
    }
}

/// One group's builds (applied or holdout).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Arm {
    /// Builds in the group.
    pub builds: usize,
    /// Successful builds.
    pub successes: usize,
    /// Share of builds that failed (any reason).
    pub failure_rate: Option<f64>,
    /// Share of builds that were OOM-killed.
    pub oom_rate: Option<f64>,
    /// Median duration of successful builds, seconds.
    pub median_duration_s: Option<f64>,
    /// 90th percentile duration of successful builds, seconds.
    pub p90_duration_s: Option<f64>,
    /// Requested vCPU × hours, all builds.
    pub cpu_hours: f64,
    /// Requested memory GB × hours, all builds.
    pub gb_hours: f64,
    /// Cost of the requested resources at the configured prices.
    pub cost: f64,
    /// Cost per build.
    pub cost_per_build: Option<f64>,
}

/// An estimate with its 95 % confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Point estimate.
    pub estimate: f64,
    /// Lower bound (2.5th percentile of the bootstrap).
    pub low: f64,
    /// Upper bound (97.5th percentile).
    pub high: f64,
}

impl Interval {
    /// Whether the interval lies entirely above zero.
    pub fn positive(&self) -> bool {
        self.low > 0.0
    }

    /// Whether `x` is inside the interval.
    pub fn contains(&self, x: f64) -> bool {
        self.low <= x && x <= self.high
    }
}

/// The effect of applying the recommendations: positive numbers are savings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Effect {
    /// Median duration of holdout builds minus that of applied builds, seconds.
    pub median_saved_s: Interval,
    /// The same as a share of the holdout median (0.2 = 20 % faster).
    pub median_saved_share: f64,
    /// p90 duration of holdout builds minus that of applied builds, seconds.
    pub p90_saved_s: Interval,
    /// Cost per build of holdout builds minus that of applied builds.
    pub cost_saved_per_build: f64,
    /// Holdout failure rate minus applied failure rate (positive: fewer failures).
    pub failure_rate_reduction: f64,
    /// Holdout OOM rate minus applied OOM rate (positive: fewer OOMs).
    pub oom_rate_reduction: f64,
}

/// How well predicted durations matched actual ones on successful applied builds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Applied builds with a prediction.
    pub builds: usize,
    /// Mean absolute error, seconds.
    pub mae_s: f64,
    /// Mean absolute error as a share of the actual duration.
    pub mape: f64,
    /// Median of actual / predicted (1.0 is calibrated; above 1 the model is optimistic).
    pub median_ratio: f64,
    /// Share of builds whose actual duration was within 20 % of the prediction.
    pub within_20pct: f64,
}

/// The comparison for one pipeline (or all of them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Pipeline name, or `total`.
    pub pipeline: String,
    /// Builds InfraMind changed (applied and explored).
    pub applied: Arm,
    /// The control group.
    pub holdout: Arm,
    /// Builds neither changed nor held out (dry run, unchanged, untagged).
    pub other_builds: usize,
    /// The effect, once both groups are large enough.
    pub effect: Option<Effect>,
    /// `ok`, or why there is no effect yet.
    pub status: String,
    /// Predicted against actual on applied builds.
    pub calibration: Option<Calibration>,
}

/// The savings report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavingsReport {
    /// Start of the period.
    pub since: DateTime<Utc>,
    /// Prices the costs use.
    pub prices: Prices,
    /// Fewest successful builds per group before an effect is reported.
    pub min_builds: usize,
    /// All pipelines together.
    pub total: Comparison,
    /// Each pipeline, by name.
    pub pipelines: Vec<Comparison>,
}

fn rate(n: usize, of: usize) -> Option<f64> {
    (of > 0).then(|| n as f64 / of as f64)
}

fn arm(runs: &[&RunRecord], prices: &Prices) -> Arm {
    let ok: Vec<f64> = runs
        .iter()
        .filter(|r| r.success)
        .map(|r| r.duration_s)
        .collect();
    let hours = |r: &&RunRecord| r.duration_s / 3600.0;
    let cpu_hours: f64 = runs.iter().map(|r| r.cpu_req * hours(r)).sum();
    let gb_hours: f64 = runs.iter().map(|r| r.mem_req_gb * hours(r)).sum();
    let cost = cpu_hours * prices.cpu_hour + gb_hours * prices.gb_hour;
    Arm {
        builds: runs.len(),
        successes: ok.len(),
        failure_rate: rate(runs.iter().filter(|r| !r.success).count(), runs.len()),
        oom_rate: rate(runs.iter().filter(|r| r.oom_killed).count(), runs.len()),
        median_duration_s: quantile(&ok, 0.5),
        p90_duration_s: quantile(&ok, 0.9),
        cpu_hours,
        gb_hours,
        cost,
        cost_per_build: (!runs.is_empty()).then(|| cost / runs.len() as f64),
    }
}

fn successful_durations(runs: &[&RunRecord]) -> Vec<f64> {
    runs.iter()
        .filter(|r| r.success)
        .map(|r| r.duration_s)
        .collect()
}

fn resample(rng: &mut ChaCha8Rng, from: &[f64], into: &mut Vec<f64>) {
    into.clear();
    into.extend((0..from.len()).map(|_| from[rng.random_range(0..from.len())]));
}

/// Percentile-bootstrap 95 % intervals of `q`-quantile(holdout) − `q`-quantile(applied) for each
/// of `qs`, resampling both groups independently.
pub fn bootstrap_difference(
    holdout: &[f64],
    applied: &[f64],
    qs: &[f64],
    resamples: usize,
    seed: u64,
) -> Option<Vec<Interval>> {
    if holdout.is_empty() || applied.is_empty() || resamples == 0 {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut diffs: Vec<Vec<f64>> = vec![Vec::with_capacity(resamples); qs.len()];
    let (mut h, mut a) = (Vec::new(), Vec::new());
    for _ in 0..resamples {
        resample(&mut rng, holdout, &mut h);
        resample(&mut rng, applied, &mut a);
        for (d, &q) in diffs.iter_mut().zip(qs) {
            d.push(quantile(&h, q)? - quantile(&a, q)?);
        }
    }
    qs.iter()
        .zip(&diffs)
        .map(|(&q, d)| {
            Some(Interval {
                estimate: quantile(holdout, q)? - quantile(applied, q)?,
                low: quantile(d, 0.025)?,
                high: quantile(d, 0.975)?,
            })
        })
        .collect()
}

fn calibration(applied: &[&RunRecord]) -> Option<Calibration> {
    let pairs: Vec<(f64, f64)> = applied
        .iter()
        .filter(|r| r.success && r.duration_s > 0.0)
        .filter_map(|r| Some((r.predicted_duration_s.filter(|p| *p > 0.0)?, r.duration_s)))
        .collect();
    if pairs.is_empty() {
        return None;
    }
    let n = pairs.len() as f64;
    let ratios: Vec<f64> = pairs.iter().map(|(p, a)| a / p).collect();
    Some(Calibration {
        builds: pairs.len(),
        mae_s: pairs.iter().map(|(p, a)| (a - p).abs()).sum::<f64>() / n,
        mape: pairs.iter().map(|(p, a)| (a - p).abs() / a).sum::<f64>() / n,
        median_ratio: quantile(&ratios, 0.5)?,
        within_20pct: pairs
            .iter()
            .filter(|(p, a)| (a - p).abs() <= 0.2 * a)
            .count() as f64
            / n,
    })
}

/// Compares the applied and holdout builds among `runs` under the name `pipeline`.
pub fn compare(pipeline: &str, runs: &[&RunRecord], cfg: &SavingsConfig) -> Comparison {
    let applied: Vec<&RunRecord> = runs
        .iter()
        .copied()
        .filter(|r| r.decision.is_some_and(DecisionTag::changed_the_pod))
        .collect();
    let holdout: Vec<&RunRecord> = runs
        .iter()
        .copied()
        .filter(|r| r.decision == Some(DecisionTag::Holdout))
        .collect();
    let (a, h) = (arm(&applied, &cfg.prices), arm(&holdout, &cfg.prices));
    let (da, dh) = (
        successful_durations(&applied),
        successful_durations(&holdout),
    );
    let enough = da.len() >= cfg.min_builds && dh.len() >= cfg.min_builds;
    let effect = if enough {
        bootstrap_difference(&dh, &da, &[0.5, 0.9], cfg.resamples, cfg.seed).and_then(|iv| {
            let hm = h.median_duration_s.filter(|m| *m > 0.0)?;
            Some(Effect {
                median_saved_s: iv[0],
                median_saved_share: iv[0].estimate / hm,
                p90_saved_s: iv[1],
                cost_saved_per_build: h.cost_per_build? - a.cost_per_build?,
                failure_rate_reduction: h.failure_rate? - a.failure_rate?,
                oom_rate_reduction: h.oom_rate? - a.oom_rate?,
            })
        })
    } else {
        None
    };
    let status = if effect.is_some() {
        "ok".to_string()
    } else {
        format!(
            "not enough data yet: {} successful holdout and {} applied builds, need {} of each",
            dh.len(),
            da.len(),
            cfg.min_builds
        )
    };
    Comparison {
        pipeline: pipeline.to_string(),
        other_builds: runs.len() - applied.len() - holdout.len(),
        calibration: calibration(&applied),
        applied: a,
        holdout: h,
        effect,
        status,
    }
}

/// The savings report over `runs` (already limited to the period that starts at `since`).
pub fn report(runs: &[RunRecord], since: DateTime<Utc>, cfg: &SavingsConfig) -> SavingsReport {
    let mut by_pipeline: BTreeMap<&str, Vec<&RunRecord>> = BTreeMap::new();
    for r in runs {
        by_pipeline.entry(&r.pipeline).or_default().push(r);
    }
    let all: Vec<&RunRecord> = runs.iter().collect();
    SavingsReport {
        since,
        prices: cfg.prices,
        min_builds: cfg.min_builds,
        total: compare("total", &all, cfg),
        pipelines: by_pipeline
            .iter()
            .map(|(p, rs)| compare(p, rs, cfg))
            .collect(),
    }
}

/// A period such as `7d`, `24h`, `90m` or `2w`.
pub fn parse_period(s: &str) -> Result<chrono::Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{s}` has no unit (use m, h, d or w, e.g. 7d)"))?;
    let n: i64 = s[..split]
        .parse()
        .map_err(|_| format!("`{s}` does not start with a whole number"))?;
    match &s[split..] {
        "m" => Ok(chrono::Duration::minutes(n)),
        "h" => Ok(chrono::Duration::hours(n)),
        "d" => Ok(chrono::Duration::days(n)),
        "w" => Ok(chrono::Duration::weeks(n)),
        unit => Err(format!("unknown unit `{unit}` in `{s}` (use m, h, d or w)")),
    }
}

/// Whole seconds (`412s`), `-` when unknown: the report's and the dashboard's cells.
pub fn secs(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{v:.0}s"))
}

/// A share as a percentage (`3.2%`), `-` when unknown.
pub fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{:.1}%", v * 100.0))
}

/// The effect in one line, e.g. `median 412s faster (95% CI 380..441s, 31.0%)`.
pub fn describe_effect(c: &Comparison) -> String {
    match &c.effect {
        None => c.status.clone(),
        Some(e) => format!(
            "median {:.0}s faster (95% CI {:.0}..{:.0}s, {:.1}%), p90 {:.0}s (95% CI {:.0}..{:.0}s), cost per build {:+.4}",
            e.median_saved_s.estimate,
            e.median_saved_s.low,
            e.median_saved_s.high,
            e.median_saved_share * 100.0,
            e.p90_saved_s.estimate,
            e.p90_saved_s.low,
            e.p90_saved_s.high,
            -e.cost_saved_per_build,
        ),
    }
}

/// The report as a text table.
pub fn table(r: &SavingsReport) -> String {
    let mut out = format!(
        "savings since {} (prices: {}/vCPU-h, {}/GB-h; effect needs {} successful builds per group)\n",
        r.since.format("%Y-%m-%d %H:%M UTC"),
        r.prices.cpu_hour,
        r.prices.gb_hour,
        r.min_builds
    );
    out.push_str(&format!(
        "{:<22} {:>8} {:>8} {:>9} {:>9} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9}\n",
        "pipeline",
        "applied",
        "holdout",
        "p50 appl",
        "p50 hold",
        "p90 appl",
        "p90 hold",
        "fail appl",
        "fail hold",
        "oom appl",
        "oom hold"
    ));
    for c in r.pipelines.iter().chain(std::iter::once(&r.total)) {
        out.push_str(&format!(
            "{:<22} {:>8} {:>8} {:>9} {:>9} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9}\n",
            c.pipeline,
            c.applied.builds,
            c.holdout.builds,
            secs(c.applied.median_duration_s),
            secs(c.holdout.median_duration_s),
            secs(c.applied.p90_duration_s),
            secs(c.holdout.p90_duration_s),
            pct(c.applied.failure_rate),
            pct(c.holdout.failure_rate),
            pct(c.applied.oom_rate),
            pct(c.holdout.oom_rate),
        ));
    }
    out.push('\n');
    for c in r.pipelines.iter().chain(std::iter::once(&r.total)) {
        out.push_str(&format!("{:<22} {}\n", c.pipeline, describe_effect(c)));
        if let Some(k) = &c.calibration {
            out.push_str(&format!(
                "{:<22} calibration on {} applied builds: MAE {:.0}s ({:.1}%), actual/predicted {:.2}, {:.0}% within 20%\n",
                "",
                k.builds,
                k.mae_s,
                k.mape * 100.0,
                k.median_ratio,
                k.within_20pct * 100.0
            ));
        }
    }
    out.push_str(&format!(
        "\nrequested: applied {:.1} vCPU-h, {:.1} GB-h, cost {:.2}; holdout {:.1} vCPU-h, {:.1} GB-h, cost {:.2}\n",
        r.total.applied.cpu_hours,
        r.total.applied.gb_hours,
        r.total.applied.cost,
        r.total.holdout.cpu_hours,
        r.total.holdout.gb_hours,
        r.total.holdout.cost
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::{controlled_week, right_size, ControlledRun};

    fn end() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-22T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    /// The true effect over every build of the week: both potential outcomes are known.
    fn true_median_saving(week: &[ControlledRun]) -> f64 {
        let ok = |o: &crate::simulate::Outcome| (!o.oom).then_some(o.duration_s);
        let left: Vec<f64> = week
            .iter()
            .filter_map(|r| ok(r.if_left.as_ref()?))
            .collect();
        let applied: Vec<f64> = week
            .iter()
            .filter_map(|r| ok(r.if_applied.as_ref()?))
            .collect();
        quantile(&left, 0.5).unwrap() - quantile(&applied, 0.5).unwrap()
    }

    #[test]
    fn a_simulated_week_with_a_holdout_recovers_the_known_effect() {
        let week = controlled_week(end(), 3, 0.2, &right_size);
        let runs: Vec<RunRecord> = week.iter().map(|r| r.record.clone()).collect();
        assert!(runs.len() > 600, "{} builds in a week", runs.len());
        let truth = true_median_saving(&week);
        let r = report(
            &runs,
            end() - chrono::Duration::days(7),
            &SavingsConfig::default(),
        );
        let e = r.total.effect.as_ref().expect("enough data for the total");
        assert!(truth > 0.0, "the policy is faster: {truth}");
        assert!(
            e.median_saved_s.contains(truth),
            "95% CI {:?} misses the true saving {truth}",
            e.median_saved_s
        );
        assert!(e.median_saved_s.positive(), "{:?}", e.median_saved_s);
        assert!(e.oom_rate_reduction >= 0.0);
        assert!(r.total.applied.oom_rate.unwrap() < 0.01);
        let k = r.total.calibration.as_ref().expect("predictions recorded");
        assert!(k.builds > 400 && k.median_ratio > 0.5 && k.median_ratio < 2.0);
        // Same data, same seed: the same interval.
        let again = report(&runs, r.since, &SavingsConfig::default());
        assert_eq!(again, r);
        assert_eq!(r.pipelines.len(), crate::simulate::default_profiles().len());
        eprintln!("true median saving {truth:.1}s\n{}", table(&r));
    }

    #[test]
    fn no_effect_gives_an_interval_around_zero() {
        // A policy that applies what was requested changes nothing.
        let same = |_: &crate::simulate::PipelineProfile, c: &crate::BuildConfig| (*c, 600.0);
        let week = controlled_week(end(), 4, 0.3, &same);
        let runs: Vec<RunRecord> = week.iter().map(|r| r.record.clone()).collect();
        let r = report(&runs, end(), &SavingsConfig::default());
        let e = r.total.effect.as_ref().expect("enough data");
        assert!(e.median_saved_s.contains(0.0), "{:?}", e.median_saved_s);
        assert!(!e.median_saved_s.positive());
    }

    #[test]
    fn a_small_holdout_says_not_enough_data_yet() {
        let week = controlled_week(end(), 3, 0.05, &right_size);
        let runs: Vec<RunRecord> = week.iter().map(|r| r.record.clone()).collect();
        let r = report(&runs, end(), &SavingsConfig::default());
        let small = r
            .pipelines
            .iter()
            .find(|c| c.holdout.successes < MIN_HOLDOUT_BUILDS)
            .expect("a pipeline with a small holdout at 5 %");
        assert!(small.effect.is_none());
        assert!(
            small.status.starts_with("not enough data yet"),
            "{}",
            small.status
        );
        assert!(table(&r).contains("not enough data yet"));
        // No tagged builds at all: nothing to compare, still a report.
        let untagged = crate::simulate::demo_runs(50, end(), 1);
        let r = report(&untagged, end(), &SavingsConfig::default());
        assert_eq!(r.total.other_builds, 50);
        assert!(r.total.effect.is_none() && r.total.calibration.is_none());
    }

    #[test]
    fn arms_count_costs_and_rates() {
        let mut runs = crate::simulate::demo_runs(4, end(), 2);
        for (i, r) in runs.iter_mut().enumerate() {
            r.decision = Some(if i % 2 == 0 {
                DecisionTag::Applied
            } else {
                DecisionTag::Holdout
            });
            r.cpu_req = 2.0;
            r.mem_req_gb = 4.0;
            r.duration_s = 1800.0;
            r.success = i != 1;
            r.oom_killed = i == 1;
        }
        let prices = Prices {
            cpu_hour: 1.0,
            gb_hour: 0.5,
        };
        let refs: Vec<&RunRecord> = runs.iter().collect();
        let c = compare(
            "x",
            &refs,
            &SavingsConfig {
                prices,
                ..Default::default()
            },
        );
        assert_eq!((c.applied.builds, c.holdout.builds), (2, 2));
        assert_eq!(c.holdout.oom_rate, Some(0.5));
        assert_eq!(c.applied.failure_rate, Some(0.0));
        assert_eq!(c.applied.cpu_hours, 2.0);
        assert_eq!(c.applied.gb_hours, 4.0);
        assert_eq!(c.applied.cost, 4.0);
    }

    #[test]
    fn periods_parse() {
        assert_eq!(parse_period("7d"), Ok(chrono::Duration::days(7)));
        assert_eq!(parse_period("36h"), Ok(chrono::Duration::hours(36)));
        assert_eq!(parse_period("2w"), Ok(chrono::Duration::weeks(2)));
        assert!(parse_period("7").is_err());
        assert!(parse_period("7y").is_err());
        assert!(parse_period("d").is_err());
    }
}
