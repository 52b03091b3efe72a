//! A build simulator that produces realistic demo telemetry (quickstart, tests, benchmarks).
//!
//! Each pipeline has serial work and parallel work (Amdahl). Parallel work runs on
//! `min(concurrency, cpu)` cores; concurrency above the cpu request oversubscribes and costs
//! context-switching. Cache hits cut work: a branch's cache is warm right after its last build
//! and cools over a day; a new branch starts from a partly warm cache. Peak RSS grows with
//! concurrency; a build whose memory request is below its peak RSS is OOM-killed part way
//! through (a failure). Memory close to the limit slows builds (page cache pressure). Node
//! types differ in speed. Durations carry multiplicative log-normal noise.
//!
//! [`SimOptions`] make the history CI-like ([`ci_runs`]): builds of one pipeline overlapping
//! (a build every minute or so, each taking several), pods that name no branch, and pods with
//! or without a node selector (a pod without one runs on any node; its record names the node
//! type it *asked* for, `unknown`, as admission saw it). A branch's cache is then warm from its
//! last build that *finished*, not one still running.

use chrono::{DateTime, Duration, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::record::{DecisionTag, RunRecord};
use crate::BuildConfig;

/// One simulated pipeline's physics.
#[derive(Debug, Clone)]
pub struct PipelineProfile {
    /// Pipeline name.
    pub name: String,
    /// Build image.
    pub image: String,
    /// Work that cannot be parallelised, seconds.
    pub serial_s: f64,
    /// Parallelisable work at one job, seconds.
    pub parallel_s: f64,
    /// Fraction of the parallel work a full cache hit avoids.
    pub cache_sensitivity: f64,
    /// Pipeline steps.
    pub steps: u32,
    /// Peak RSS with no parallelism, GB.
    pub rss_base_gb: f64,
    /// Peak RSS added per concurrent job, GB.
    pub rss_per_job_gb: f64,
    /// Data read per build with a cold cache, GB.
    pub io_read_gb: f64,
    /// Data written per build, GB.
    pub io_write_gb: f64,
    /// The config this team usually asks for.
    pub typical: BuildConfig,
}

/// Node types: name and speed factor.
pub const NODES: &[(&str, f64)] = &[
    ("m5.2xlarge", 1.0),
    ("c6i.4xlarge", 1.3),
    ("r6i.2xlarge", 0.9),
];

/// The default demo pipelines.
pub fn default_profiles() -> Vec<PipelineProfile> {
    let p = |name: &str,
             image: &str,
             serial_s,
             parallel_s,
             cache,
             steps,
             rss0,
             rss_job,
             io,
             cpu,
             mem,
             conc| PipelineProfile {
        name: name.into(),
        image: image.into(),
        serial_s,
        parallel_s,
        cache_sensitivity: cache,
        steps,
        rss_base_gb: rss0,
        rss_per_job_gb: rss_job,
        io_read_gb: io,
        io_write_gb: io / 3.0,
        typical: BuildConfig {
            cpu,
            mem_gb: mem,
            concurrency: conc,
        },
    };
    vec![
        p(
            "acme/api",
            "rust:1.82",
            60.0,
            1400.0,
            0.8,
            12,
            1.0,
            0.6,
            6.0,
            4.0,
            8.0,
            4,
        ),
        p(
            "acme/web", "node:22", 40.0, 500.0, 0.6, 8, 0.8, 0.3, 3.0, 2.0, 4.0, 2,
        ),
        p(
            "acme/engine",
            "gcc:14",
            90.0,
            2400.0,
            0.85,
            20,
            1.5,
            0.9,
            10.0,
            8.0,
            16.0,
            8,
        ),
        p(
            "acme/mobile",
            "gradle:8-jdk21",
            120.0,
            900.0,
            0.5,
            15,
            2.5,
            0.5,
            8.0,
            4.0,
            8.0,
            4,
        ),
        p(
            "acme/ml-lib",
            "python:3.12",
            50.0,
            700.0,
            0.7,
            6,
            1.2,
            0.4,
            4.0,
            4.0,
            6.0,
            3,
        ),
        p(
            "acme/infra",
            "golang:1.23",
            30.0,
            400.0,
            0.75,
            5,
            0.6,
            0.25,
            2.0,
            2.0,
            4.0,
            2,
        ),
    ]
}

/// A rollout policy: the config InfraMind applies for a build given what the team requested,
/// and the duration it predicts for it.
pub type Policy<'a> = dyn Fn(&PipelineProfile, &BuildConfig) -> (BuildConfig, f64) + 'a;

/// One build of a controlled rollout with both of its potential outcomes.
#[derive(Debug, Clone)]
pub struct ControlledRun {
    /// What was recorded (tagged applied or holdout).
    pub record: RunRecord,
    /// The outcome had InfraMind's config been applied.
    pub if_applied: Option<Outcome>,
    /// The outcome had the pod been left as requested.
    pub if_left: Option<Outcome>,
}

/// A right-sizing policy with known physics, standing in for the model in simulated rollouts:
/// twice the team's usual cpu (at most 16), concurrency equal to cpu, memory 30 % above the
/// noise-free peak RSS; predicts the noise-free duration at a half-warm cache on a 1.0 node.
pub fn right_size(profile: &PipelineProfile, _requested: &BuildConfig) -> (BuildConfig, f64) {
    let cpu = (profile.typical.cpu * 2.0).min(16.0);
    let concurrency = cpu as u32;
    let mem_gb = (profile.peak_rss(concurrency, 0.0) * 1.3).ceil().max(2.0);
    let config = BuildConfig {
        cpu,
        mem_gb,
        concurrency,
    };
    let predicted = profile.expected_duration(&config, 0.5, 1.0);
    (config, predicted)
}

/// A simulated week (about 750 builds) of the default pipelines under a controlled rollout of
/// `policy` with `holdout_rate`, ending at `end`.
pub fn controlled_week(
    end: DateTime<Utc>,
    seed: u64,
    holdout_rate: f64,
    policy: &Policy<'_>,
) -> Vec<ControlledRun> {
    let start = end - Duration::days(7);
    let mut sim = Simulator::new(default_profiles(), start, seed);
    let mut out = Vec::new();
    loop {
        let run = sim.next_controlled(holdout_rate, policy);
        if run.record.started_at > end {
            return out;
        }
        out.push(run);
    }
}

/// How CI-like the simulated history is (the defaults are the demo's one-at-a-time builds).
#[derive(Debug, Clone, PartialEq)]
pub struct SimOptions {
    /// Seconds between build starts (over all pipelines), drawn uniformly from this range;
    /// `None`: 2 to 25 minutes.
    pub gap_s: Option<std::ops::Range<i64>>,
    /// Fraction of pods that name no branch (recorded as `unknown`, as admission sees them).
    pub missing_branch: f64,
    /// Fraction of pods with a node selector; the others run on any node and record `unknown`.
    pub node_selector: f64,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            gap_s: None,
            missing_branch: 0.0,
            node_selector: 1.0,
        }
    }
}

impl SimOptions {
    /// Overlapping builds (one every 20–100 s over all pipelines), 10 % of pods without a
    /// branch, half of them without a node selector.
    pub fn ci() -> SimOptions {
        SimOptions {
            gap_s: Some(20..100),
            missing_branch: 0.1,
            node_selector: 0.5,
        }
    }
}

/// Simulates builds of many pipelines.
#[derive(Debug)]
pub struct Simulator {
    opts: SimOptions,
    /// End times of the builds per (pipeline, branch), for the cache of overlapping builds.
    finishes: std::collections::HashMap<(usize, String), Vec<DateTime<Utc>>>,
    rng: ChaCha8Rng,
    profiles: Vec<PipelineProfile>,
    /// Last build time per (pipeline, branch).
    branches: Vec<Vec<(String, DateTime<Utc>)>>,
    next_pr: Vec<u32>,
    now: DateTime<Utc>,
    noise: f64,
    counter: u64,
}

/// A build about to be admitted: what the simulator knows (the admission sees only what a
/// webhook would: pipeline, branch, node, request).
#[derive(Debug, Clone, PartialEq)]
pub struct SimAdmission {
    /// Index of the pipeline's profile.
    pub profile: usize,
    /// Branch.
    pub branch: String,
    /// Node type.
    pub node: String,
    /// Cache hit ratio the build will see (hidden from the admission).
    pub cache: f64,
    /// Node speed factor (hidden from the admission).
    pub speed: f64,
    /// What the team's pod asks for.
    pub requested: BuildConfig,
    /// Start time.
    pub now: DateTime<Utc>,
}

/// What actually happens when a build runs with a config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// Wall-clock seconds (until the kill, for OOMs).
    pub duration_s: f64,
    /// Peak RSS, GB (capped at the limit for OOMs).
    pub max_rss_gb: f64,
    /// Whether it was OOM-killed.
    pub oom: bool,
}

impl PipelineProfile {
    /// Peak RSS at a concurrency and cache hit ratio, before noise.
    pub fn peak_rss(&self, concurrency: u32, cache: f64) -> f64 {
        self.rss_base_gb + self.rss_per_job_gb * concurrency as f64 * (1.0 - 0.3 * cache)
    }

    /// Noise-free duration of a successful build.
    pub fn expected_duration(&self, c: &BuildConfig, cache: f64, node_speed: f64) -> f64 {
        let conc = c.concurrency as f64;
        let parallelism = conc.min(c.cpu).max(1.0);
        let oversubscription = if conc > c.cpu {
            1.0 + 0.15 * (conc / c.cpu - 1.0)
        } else {
            1.0
        };
        let rss = self.peak_rss(c.concurrency, cache);
        let pressure = if rss > 0.85 * c.mem_gb { 1.2 } else { 1.0 };
        let work = self.parallel_s * (1.0 - self.cache_sensitivity * cache);
        let step_overhead = 3.0 * self.steps as f64;
        (self.serial_s + step_overhead + work / parallelism * oversubscription) / node_speed
            * pressure
    }
}

impl Simulator {
    /// A simulator over `profiles` whose first build starts at `start`.
    pub fn new(profiles: Vec<PipelineProfile>, start: DateTime<Utc>, seed: u64) -> Simulator {
        let n = profiles.len();
        Simulator {
            opts: SimOptions::default(),
            finishes: Default::default(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            profiles,
            branches: vec![Vec::new(); n],
            next_pr: vec![1; n],
            now: start,
            noise: 0.05,
            counter: 0,
        }
    }

    /// The same simulator with `opts`.
    pub fn with_options(mut self, opts: SimOptions) -> Simulator {
        self.opts = opts;
        self
    }

    /// The pipelines being simulated.
    pub fn profiles(&self) -> &[PipelineProfile] {
        &self.profiles
    }

    fn pick_branch(&mut self, p: usize) -> (String, Option<DateTime<Utc>>) {
        let roll: f64 = self.rng.random();
        let branches = &self.branches[p];
        // The demo history keeps its original shape (its `len() < 2` test means no PR branch is
        // ever opened); CI-like histories open PRs from the start.
        let no_prs = self.opts.gap_s.is_none() && branches.len() < 2;
        if roll < 0.4 || no_prs {
            let last = branches.iter().find(|(b, _)| b == "main").map(|(_, t)| *t);
            return ("main".into(), last);
        }
        if roll < 0.6 {
            let name = format!("pr-{}", self.next_pr[p]);
            self.next_pr[p] += 1;
            return (name, None);
        }
        let prs: Vec<_> = branches
            .iter()
            .filter(|(b, _)| b != "main")
            .cloned()
            .collect();
        if prs.is_empty() {
            return (
                "main".into(),
                branches.iter().find(|(b, _)| b == "main").map(|(_, t)| *t),
            );
        }
        // Recent PRs are more active.
        let k = prs.len() - 1 - self.rng.random_range(0..prs.len().min(5));
        (prs[k].0.clone(), Some(prs[k].1))
    }

    fn pick_config(&mut self, typical: &BuildConfig) -> BuildConfig {
        // Teams do not all ask for the same: spread the configs so the model sees their effect.
        let cpu = (typical.cpu + self.rng.random_range(-2i32..=4) as f64).clamp(1.0, 16.0);
        let mem_gb = (typical.mem_gb + self.rng.random_range(-3i32..=6) as f64).clamp(2.0, 32.0);
        let concurrency =
            (typical.concurrency as i32 + self.rng.random_range(-2i32..=6)).clamp(1, 16) as u32;
        BuildConfig {
            cpu,
            mem_gb,
            concurrency,
        }
    }

    /// Runs `config` for pipeline `p` with cache hit ratio `cache` on a node of `speed`.
    pub fn run_outcome(
        &mut self,
        p: usize,
        config: &BuildConfig,
        cache: f64,
        speed: f64,
    ) -> Outcome {
        let (rss_noise, duration_noise) = (self.gauss(), self.gauss());
        let profile = &self.profiles[p];
        let rss = profile.peak_rss(config.concurrency, cache) * (1.0 + 0.05 * rss_noise);
        let full =
            profile.expected_duration(config, cache, speed) * (self.noise * duration_noise).exp();
        if rss > config.mem_gb {
            let frac = self.rng.random_range(0.2..0.9);
            return Outcome {
                duration_s: full * frac,
                max_rss_gb: config.mem_gb,
                oom: true,
            };
        }
        Outcome {
            duration_s: full,
            max_rss_gb: rss,
            oom: false,
        }
    }

    fn gauss(&mut self) -> f64 {
        // Box–Muller: one standard normal draw.
        let u1: f64 = self.rng.random_range(f64::EPSILON..1.0);
        let u2: f64 = self.rng.random();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Simulates the next build: a random pipeline, branch and config at the next point in time.
    pub fn next_run(&mut self) -> RunRecord {
        self.step(&mut |_| None, None).0.record
    }

    /// Simulates the next build with the config `choose` gives for its admission (`None`: the
    /// team's own random pick, as `next_run`); also returns the admission it was given.
    pub fn next_with(
        &mut self,
        choose: &mut dyn FnMut(&SimAdmission) -> Option<BuildConfig>,
    ) -> (RunRecord, SimAdmission) {
        let (run, admission) = self.step(choose, None);
        (run.record, admission)
    }

    /// Simulates the next build under a controlled rollout: InfraMind decides `policy`'s config
    /// for every build; builds in the control group (the webhook's own rule on the run_id, at
    /// `holdout_rate`) run as requested, the rest run the policy's config. Both potential
    /// outcomes are simulated with the same noise, so the true effect is known.
    pub fn next_controlled(&mut self, holdout_rate: f64, policy: &Policy<'_>) -> ControlledRun {
        self.step(&mut |_| None, Some((holdout_rate, policy))).0
    }

    fn step(
        &mut self,
        choose: &mut dyn FnMut(&SimAdmission) -> Option<BuildConfig>,
        rollout: Option<(f64, &Policy<'_>)>,
    ) -> (ControlledRun, SimAdmission) {
        match self.opts.gap_s.clone() {
            None => self.now += Duration::minutes(self.rng.random_range(2..25)),
            Some(r) => self.now += Duration::seconds(self.rng.random_range(r)),
        }
        let p = self.rng.random_range(0..self.profiles.len());
        let (branch, mut last) = self.pick_branch(p);
        if self.opts.gap_s.is_some() {
            // Builds overlap: the cache is warm from the branch's last *finished* build.
            last = self
                .finishes
                .get(&(p, branch.clone()))
                .and_then(|f| f.iter().filter(|t| **t < self.now).max().copied());
        }
        let cache = match last {
            Some(t) => {
                let hours = (self.now - t).num_minutes() as f64 / 60.0;
                0.92 * (-hours / 24.0).exp()
            }
            None => 0.3,
        };
        let cache = (cache + 0.04 * self.gauss()).clamp(0.0, 1.0);
        let typical = self.profiles[p].typical;
        let requested = self.pick_config(&typical);
        let (node, speed) = NODES[self.rng.random_range(0..NODES.len())];
        let selected =
            self.opts.node_selector >= 1.0 || self.rng.random_bool(self.opts.node_selector);
        let named_branch =
            self.opts.missing_branch <= 0.0 || !self.rng.random_bool(self.opts.missing_branch);
        let admission = SimAdmission {
            profile: p,
            branch: branch.clone(),
            node: node.to_string(),
            cache,
            speed,
            requested,
            now: self.now,
        };
        let chosen = choose(&admission).unwrap_or(requested);
        let run_id = format!("sim-{:08}", self.counter + 1);
        let (config, decision, predicted, other) = match rollout {
            None => (chosen, None, None, None),
            Some((rate, policy)) => {
                let (applied, predicted) = policy(&self.profiles[p], &requested);
                let held_out = crate::admission::holdout::held_out(&run_id, rate);
                let (ran, not_ran, tag) = if held_out {
                    (requested, applied, DecisionTag::Holdout)
                } else {
                    (applied, requested, DecisionTag::Applied)
                };
                // The road not taken, with the same noise draws as the one taken.
                let saved = self.rng.clone();
                let other = self.run_outcome(p, &not_ran, cache, speed);
                self.rng = saved;
                (ran, Some(tag), Some(round3(predicted)), Some((tag, other)))
            }
        };
        let out = self.run_outcome(p, &config, cache, speed);
        let profile = &self.profiles[p];
        let steps = profile.steps;
        let retry_count = u32::from(self.rng.random_bool(0.03));
        let io_read_gb = profile.io_read_gb * (1.0 - 0.6 * cache);
        let io_write_gb = profile.io_write_gb;
        let name = profile.name.clone();
        let image = profile.image.clone();
        self.counter += 1;
        match self.branches[p].iter_mut().find(|(b, _)| *b == branch) {
            Some(entry) => entry.1 = self.now,
            None => self.branches[p].push((branch.clone(), self.now)),
        }
        if self.opts.gap_s.is_some() {
            let end = self.now + Duration::milliseconds((round3(out.duration_s) * 1000.0) as i64);
            let f = self.finishes.entry((p, branch.clone())).or_default();
            f.push(end);
            if f.len() > 8 {
                f.remove(0);
            }
        }
        let record = RunRecord {
            run_id,
            pipeline: name,
            branch: if named_branch {
                branch
            } else {
                crate::record::UNKNOWN.into()
            },
            image,
            node: if selected {
                node.into()
            } else {
                crate::record::UNKNOWN.into()
            },
            cpu_req: config.cpu,
            mem_req_gb: config.mem_gb,
            concurrency: config.concurrency,
            max_rss_gb: Some(round3(out.max_rss_gb)),
            io_read_gb: Some(round3(io_read_gb)),
            io_write_gb: Some(round3(io_write_gb)),
            cache_hit_ratio: Some(round3(cache)),
            num_steps: Some(steps),
            avg_step_duration_s: Some(round3(out.duration_s / steps as f64)),
            duration_s: round3(out.duration_s),
            success: !out.oom,
            retry_count,
            oom_killed: out.oom,
            started_at: self.now,
            decision,
            predicted_duration_s: predicted,
        };
        let (if_applied, if_left) = match other {
            Some((DecisionTag::Holdout, o)) => (Some(o), Some(out)),
            Some((_, o)) => (Some(out), Some(o)),
            None => (None, None),
        };
        (
            ControlledRun {
                record,
                if_applied,
                if_left,
            },
            admission,
        )
    }

    /// Simulates `n` builds.
    pub fn runs(&mut self, n: usize) -> Vec<RunRecord> {
        (0..n).map(|_| self.next_run()).collect()
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `n` simulated runs of the default pipelines, ending around `end`.
pub fn demo_runs(n: usize, end: DateTime<Utc>, seed: u64) -> Vec<RunRecord> {
    // About 13.5 minutes between builds on average.
    let start = end - Duration::minutes((n as i64) * 27 / 2);
    Simulator::new(default_profiles(), start, seed).runs(n)
}

/// `n` CI-like runs ([`SimOptions::ci`]) of the default pipelines, ending around `end`.
pub fn ci_runs(n: usize, end: DateTime<Utc>, seed: u64) -> Vec<RunRecord> {
    let start = end - Duration::seconds(n as i64 * 60);
    Simulator::new(default_profiles(), start, seed)
        .with_options(SimOptions::ci())
        .runs(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_runs_overlap_and_miss_branches_and_selectors() {
        let t = DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let runs = ci_runs(600, t, 4);
        let mut by_pipeline: std::collections::HashMap<&str, Vec<&RunRecord>> = Default::default();
        for r in &runs {
            by_pipeline.entry(&r.pipeline).or_default().push(r);
        }
        let overlaps: usize = by_pipeline
            .values()
            .map(|rs| {
                rs.windows(2)
                    .filter(|w| crate::features::finished_at(w[0]) > w[1].started_at)
                    .count()
            })
            .sum();
        assert!(
            overlaps > 100,
            "{overlaps} overlapping consecutive builds of a pipeline"
        );
        let unknown_branch = runs.iter().filter(|r| r.branch == "unknown").count();
        let unknown_node = runs.iter().filter(|r| r.node == "unknown").count();
        assert!((30..90).contains(&unknown_branch), "{unknown_branch}");
        assert!((220..380).contains(&unknown_node), "{unknown_node}");
        assert!(runs.iter().any(|r| r.branch.starts_with("pr-")));
    }

    #[test]
    fn physics_behave_as_documented() {
        let p = &default_profiles()[0];
        let base = BuildConfig {
            cpu: 4.0,
            mem_gb: 16.0,
            concurrency: 4,
        };
        let more_cpu = BuildConfig {
            cpu: 8.0,
            concurrency: 8,
            ..base
        };
        assert!(p.expected_duration(&more_cpu, 0.0, 1.0) < p.expected_duration(&base, 0.0, 1.0));
        let oversub = BuildConfig {
            concurrency: 12,
            ..base
        };
        assert!(p.expected_duration(&oversub, 0.0, 1.0) > p.expected_duration(&base, 0.0, 1.0));
        assert!(p.expected_duration(&base, 0.9, 1.0) < p.expected_duration(&base, 0.0, 1.0));
        assert!(p.peak_rss(8, 0.0) > p.peak_rss(2, 0.0));
    }

    #[test]
    fn simulation_is_seeded_and_produces_ooms_and_valid_rows() {
        let t = DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let a = demo_runs(2000, t, 1);
        assert_eq!(a, demo_runs(2000, t, 1));
        assert_ne!(a, demo_runs(2000, t, 2));
        let ooms = a.iter().filter(|r| r.oom_killed).count();
        assert!(ooms > 10 && ooms < 600, "{ooms} OOMs");
        assert!(a.iter().all(|r| r.oom_killed != r.success));
        for r in &a {
            let back = crate::record::validate_row(&crate::record::to_raw_row(r), t).unwrap();
            assert_eq!(&back, r);
        }
        assert!(a.windows(2).all(|w| w[0].started_at < w[1].started_at));
    }
}
