//! One optimizer decision: 100-tree depth-15 forest, 125-candidate grid, feature building and
//! per-tree spread included. Prints p50/p99 over many decisions, then criterion's estimate.

use std::hint::black_box;
use std::time::Instant;

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use inframind::forest::ForestParams;
use inframind::optimizer::{Optimizer, OptimizerConfig};
use inframind::simulate::demo_runs;
use inframind::stats::PipelineStats;
use inframind::training::{fit, TrainingSpec};
use inframind::BuildContext;

fn setup() -> (inframind::model::Model, PipelineStats, BuildContext) {
    let now = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
    let runs = demo_runs(6000, now, 5);
    let ok: Vec<_> = runs.iter().filter(|r| r.success).cloned().collect();
    let spec = TrainingSpec {
        limit: 5000,
        params: ForestParams::default(),
        ..Default::default()
    };
    let (model, _) = fit(
        &[],
        &ok[ok.len() - 5000..],
        &spec,
        "bench",
        now,
        &mut |_| {},
    )
    .unwrap();
    let pipeline = "acme/engine";
    let mine: Vec<_> = runs
        .iter()
        .filter(|r| r.pipeline == pipeline)
        .cloned()
        .collect();
    let mut stats = PipelineStats::from_runs(pipeline, &mine);
    // A central baseline so the whole 125-point grid survives clipping.
    stats.last_success = Some(inframind::BuildConfig {
        cpu: 8.0,
        mem_gb: 16.0,
        concurrency: 8,
    });
    let ctx = BuildContext {
        pipeline: pipeline.into(),
        branch: "main".into(),
        image: "gcc:14".into(),
        node: "m5.2xlarge".into(),
    };
    (model, stats, ctx)
}

fn bench_decision(c: &mut Criterion) {
    let (model, stats, ctx) = setup();
    let opt = Optimizer::new(OptimizerConfig {
        exploration_rate: 0.0,
        ..Default::default()
    });
    let now = Utc::now();
    let d = opt.decide(&ctx, Some(&stats), Some(&model), now, 1);
    assert_eq!(d.candidates, 125, "the benchmark must score the full grid");
    assert_eq!(model.forest.n_trees(), 100);

    // Latency distribution (criterion reports means and medians, not tails).
    let mut samples: Vec<f64> = (0..5000)
        .map(|i| {
            let t = Instant::now();
            black_box(opt.decide(&ctx, Some(&stats), Some(&model), now, i));
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    let q = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize];
    println!(
        "decision latency over {} runs: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs (forest depth {}, {} nodes)",
        samples.len(),
        q(0.5),
        q(0.99),
        samples[samples.len() - 1],
        model.forest.max_depth(),
        model.forest.nodes().len()
    );

    c.bench_function("decide_125_candidates_100_trees", |b| {
        b.iter(|| opt.decide(black_box(&ctx), Some(&stats), Some(&model), now, 1))
    });
}

criterion_group!(benches, bench_decision);
criterion_main!(benches);
