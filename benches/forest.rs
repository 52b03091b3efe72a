//! Training and prediction speed: smartcore vs the compact layout.
//!
//! Data: simulated builds through the real feature pipeline (23 features).

use std::hint::black_box;

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use inframind::features::{build_dataset, Dataset, Encodings, N_FEATURES};
use inframind::forest::{fit_smartcore, train, CompactForest, ForestParams};
use inframind::simulate::demo_runs;
use smartcore::linalg::basic::matrix::DenseMatrix;

fn dataset(rows: usize) -> Dataset {
    let end = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
    // About 4 % of simulated builds fail; simulate a few more than needed.
    let runs: Vec<_> = demo_runs(rows + rows / 10 + 50, end, 1)
        .into_iter()
        .filter(|r| r.success)
        .collect();
    let runs = &runs[runs.len() - rows..];
    build_dataset(&Encodings::fit(runs), &[], runs)
}

fn bench_training(c: &mut Criterion) {
    let mut g = c.benchmark_group("train_100_trees_depth_15");
    g.sample_size(10);
    for rows in [500usize, 5_000, 50_000] {
        let d = dataset(rows);
        if rows == 50_000 {
            g.measurement_time(std::time::Duration::from_secs(60));
        }
        g.bench_with_input(BenchmarkId::from_parameter(rows), &d, |b, d| {
            b.iter(|| train(black_box(&d.x), N_FEATURES, &d.y, &ForestParams::default()).unwrap())
        });
    }
    g.finish();
}

fn bench_prediction(c: &mut Criterion) {
    let d = dataset(5_000);
    let params = ForestParams::default();
    let model =
        fit_smartcore(&d.x, N_FEATURES, &d.y, &params, params.n_trees, params.seed).unwrap();
    let compact = CompactForest::from_smartcore(&model, N_FEATURES).unwrap();
    let mut g = c.benchmark_group("predict_100_trees");
    for rows in [1usize, 125, 500] {
        let x = d.x[..rows * N_FEATURES].to_vec();
        let matrix = DenseMatrix::new(rows, N_FEATURES, x.clone(), false).unwrap();
        g.bench_with_input(BenchmarkId::new("smartcore", rows), &matrix, |b, m| {
            b.iter(|| model.predict(black_box(m)).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("compact", rows), &x, |b, x| {
            b.iter(|| compact.predict(black_box(x)))
        });
        g.bench_with_input(BenchmarkId::new("compact_with_spread", rows), &x, |b, x| {
            b.iter(|| compact.predict_with_spread(black_box(x)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_training, bench_prediction);
criterion_main!(benches);
