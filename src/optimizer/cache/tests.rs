//! The decision cache against real models: fresh-equal answers, model swaps, stats refreshes,
//! the byte bound and incremental expiry.

use chrono::TimeZone;

use super::*;
use crate::forest::ForestParams;
use crate::optimizer::{Action, OptimizerConfig};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 10, 0, 17).unwrap()
}

fn ctx(branch: &str) -> BuildContext {
    BuildContext {
        pipeline: "acme/api".into(),
        branch: branch.into(),
        image: "rust:1.82".into(),
        node: "m5.2xlarge".into(),
    }
}

/// A real model trained on simulated builds; `seed` varies data and trees.
fn model(seed: u64, version: &str) -> Model {
    let runs = crate::simulate::demo_runs(600, t0(), seed);
    let ok: Vec<_> = runs.iter().filter(|r| r.success).cloned().collect();
    let spec = crate::training::TrainingSpec {
        params: ForestParams {
            n_trees: 12,
            max_depth: Some(8),
            seed,
            ..Default::default()
        },
        ..Default::default()
    };
    crate::training::fit(&[], &ok, &spec, version, t0(), &mut |_| {})
        .unwrap()
        .0
}

fn stats(generation: u64) -> PipelineStats {
    let runs: Vec<_> = crate::simulate::demo_runs(600, t0(), 1)
        .into_iter()
        .filter(|r| r.pipeline == "acme/api")
        .collect();
    PipelineStats {
        generation,
        ..PipelineStats::from_runs("acme/api", &runs)
    }
}

fn request() -> BuildConfig {
    BuildConfig {
        cpu: 4.0,
        mem_gb: 8.0,
        concurrency: 4,
    }
}

#[test]
fn cached_answers_equal_fresh_ones_exploring_or_not() {
    let m = model(1, "vA");
    let s = stats(1);
    for policy in [
        crate::optimizer::Exploration::Thompson,
        crate::optimizer::Exploration::Epsilon,
    ] {
        let opt = Optimizer::new(OptimizerConfig {
            exploration_rate: 0.5,
            exploration: policy,
            ..Default::default()
        });
        let cache = DecisionCache::new();
        let mut explored = 0;
        for seed in 0..200u64 {
            let r = request();
            let cached = cache.decide(&opt, &ctx("main"), Some(&r), Some(&s), Some(&m), t0(), seed);
            let fresh = opt.decide_for(
                &ctx("main"),
                Some(&r),
                Some(&s),
                Some(&m),
                minute(t0()),
                seed,
            );
            assert_eq!(cached, fresh, "seed {seed}");
            explored += usize::from(cached.explored);
        }
        assert!(explored > 0, "{policy:?}: some cached answers explore");
        let c = cache.counts();
        assert_eq!((c.hits, c.misses, c.entries), (199, 1, 1));
    }
}

#[test]
fn a_model_swap_a_b_c_is_never_answered_with_an_older_model() {
    let opt = Optimizer::new(OptimizerConfig {
        exploration_rate: 0.0,
        min_confidence: 0.0,
        ..Default::default()
    });
    let cache = DecisionCache::new();
    let s = stats(7);
    let r = request();
    // Each model is dropped before the next is built, so an allocator may well reuse its
    // address: the old cache keyed on it and answered C's admissions with A's decisions.
    for (seed, version) in [(1, "vA"), (2, "vB"), (3, "vC"), (1, "vA")] {
        let m = Box::new(model(seed, version));
        for uid in 0..5u64 {
            let d = cache.decide(&opt, &ctx("main"), Some(&r), Some(&s), Some(&m), t0(), uid);
            assert_eq!(d.model_version.as_deref(), Some(version));
            assert_eq!(
                d,
                opt.decide_for(
                    &ctx("main"),
                    Some(&r),
                    Some(&s),
                    Some(&m),
                    minute(t0()),
                    uid
                )
            );
        }
        drop(m);
    }
    let c = cache.counts();
    assert_eq!(c.misses, 3, "A, B, C planned once each; A again is a hit");
    assert_eq!(c.hits, 17);
}

#[test]
fn new_stats_generations_are_new_entries_and_unversioned_stats_are_never_cached() {
    let opt = Optimizer::new(OptimizerConfig::default());
    let m = model(1, "vA");
    let cache = DecisionCache::new();
    let r = request();
    for g in [1, 1, 2, 2] {
        cache.decide(
            &opt,
            &ctx("main"),
            Some(&r),
            Some(&stats(g)),
            Some(&m),
            t0(),
            0,
        );
    }
    for _ in 0..3 {
        cache.decide(
            &opt,
            &ctx("main"),
            Some(&r),
            Some(&stats(0)),
            Some(&m),
            t0(),
            0,
        );
    }
    let c = cache.counts();
    assert_eq!((c.hits, c.misses, c.uncacheable), (2, 2, 3));
    // Another request is another entry: the gate depends on it.
    let other = BuildConfig {
        cpu: 1.0,
        ..request()
    };
    cache.decide(
        &opt,
        &ctx("main"),
        Some(&other),
        Some(&stats(2)),
        Some(&m),
        t0(),
        0,
    );
    assert_eq!(cache.counts().misses, 3);
}

#[test]
fn the_cache_is_bounded_in_bytes_and_expires_a_few_entries_per_insertion() {
    let opt = Optimizer::new(OptimizerConfig::default());
    let s = stats(3);
    let r = request();
    // Without a model a plan is small and fixed: measure one entry, then allow ten.
    let probe = DecisionCache::new();
    probe.decide(&opt, &ctx("b-0"), Some(&r), Some(&s), None, t0(), 0);
    let entry = probe.counts().bytes;
    let cache = DecisionCache::with_capacity(entry * 10 + entry / 2);
    for i in 0..200 {
        let d = cache.decide(
            &opt,
            &ctx(&format!("b-{i}")),
            Some(&r),
            Some(&s),
            None,
            t0(),
            0,
        );
        assert_eq!(d.action, Action::Unchanged);
        let c = cache.counts();
        assert!(c.bytes <= entry * 10 + entry / 2, "{} bytes", c.bytes);
    }
    assert_eq!(cache.counts().entries, 10);
    // The newest entries are the ones kept.
    cache.decide(&opt, &ctx("b-199"), Some(&r), Some(&s), None, t0(), 0);
    assert_eq!(cache.counts().hits, 1);

    // A new minute: each insertion drops at most EXPIRE_PER_INSERT entries of the past minute.
    let next = t0() + chrono::Duration::minutes(1);
    cache.decide(&opt, &ctx("new-0"), Some(&r), Some(&s), None, next, 0);
    assert_eq!(cache.counts().entries, 10 - EXPIRE_PER_INSERT + 1);
    cache.decide(&opt, &ctx("new-1"), Some(&r), Some(&s), None, next, 0);
    assert_eq!(cache.counts().entries, 10 - 2 * EXPIRE_PER_INSERT + 2);
    // Past minutes never hit.
    cache.decide(&opt, &ctx("b-199"), Some(&r), Some(&s), None, next, 0);
    assert_eq!(cache.counts().hits, 1);
    assert_eq!(
        minute(t0()),
        Utc.with_ymd_and_hms(2026, 11, 27, 10, 0, 0).unwrap()
    );
}
