//! Which target and which admission-time features rank configs best (issue 12, item 5)?
//!
//! For real builds (a telemetry file) and the simulator (CI-like and demo histories), builds the
//! honest rows (`features::build_dataset`: only runs finished before each run started), takes
//! the temporal holdout (oldest 80 % → newest 20 %), and fits the served forest's
//! hyperparameters on each target × feature set. Prints MAE and R² in seconds (predictions of a
//! transformed target are transformed back) and the rank accuracy (`evaluation::rank_accuracy`).
//!
//! ```sh
//! cargo run --release --example compare_targets -- ../shared/data/realbuilds/runs.jsonl
//! ```

use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, Utc};

use inframind::evaluation::{mae, r2, rank_accuracy, split_indices, Split};
use inframind::features::{
    build_dataset, context_features, with_config, Dataset, Encodings, PipelineHistory, MISSING,
    N_FEATURES,
};
use inframind::forest::{train, ForestParams};
use inframind::record::{validate_row, RunRecord};
use inframind::simulate::{ci_runs, demo_runs};
use inframind::telemetry::read_rows;
use inframind::BuildContext;

/// Column of `hist_duration_s`, the pipeline's recent mean duration (the relative target's base).
const HIST_DURATION: usize = 16;

#[derive(Clone, Copy)]
enum Target {
    Duration,
    LogDuration,
    RelativeToRecent,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Duration => "duration",
            Target::LogDuration => "log duration",
            Target::RelativeToRecent => "duration / recent mean",
        }
    }
}

fn base(row: &[f64], fallback: f64) -> f64 {
    let b = row[HIST_DURATION];
    if b == MISSING || b <= 0.0 {
        fallback
    } else {
        b
    }
}

fn score(data: &Dataset, target: Target, drop: &[usize], params: &ForestParams) -> [f64; 4] {
    let (train_idx, test_idx) = split_indices(&data.started_at, Split::Temporal, 0.2, 42);
    let tr = data.select(&train_idx);
    let te = data.select(&test_idx);
    let mask = |x: &[f64]| -> Vec<f64> {
        let mut x = x.to_vec();
        for row in x.chunks_mut(N_FEATURES) {
            for &c in drop {
                row[c] = 0.0;
            }
        }
        x
    };
    let fallback = tr.y.iter().sum::<f64>() / tr.len() as f64;
    let y: Vec<f64> = (0..tr.len())
        .map(|i| match target {
            Target::Duration => tr.y[i],
            Target::LogDuration => tr.y[i].max(1e-3).ln(),
            Target::RelativeToRecent => tr.y[i] / base(tr.row(i), fallback),
        })
        .collect();
    let forest = train(&mask(&tr.x), N_FEATURES, &y, params)
        .expect("training")
        .forest;
    let raw = forest.predict(&mask(&te.x));
    let pred: Vec<f64> = (0..te.len())
        .map(|i| match target {
            Target::Duration => raw[i],
            Target::LogDuration => raw[i].exp(),
            Target::RelativeToRecent => raw[i] * base(te.row(i), fallback),
        })
        .collect();
    let (acc, pairs) = rank_accuracy(&te.x, &te.y, &pred);
    [
        mae(&te.y, &pred),
        r2(&te.y, &pred),
        acc.unwrap_or(f64::NAN),
        pairs as f64,
    ]
}

fn rows_of(runs: &[RunRecord]) -> Dataset {
    let ok: Vec<RunRecord> = runs.iter().filter(|r| r.success).cloned().collect();
    build_dataset(&Encodings::fit(&ok), &[], &ok)
}

/// Rows as training built them before "known at t": every run that *started* earlier is
/// history, including builds still running at admission (the leak the replay test guards).
fn rows_started_before(runs: &[RunRecord]) -> Dataset {
    let mut ok: Vec<&RunRecord> = runs.iter().filter(|r| r.success).collect();
    ok.sort_by(|a, b| (a.started_at, &a.run_id).cmp(&(b.started_at, &b.run_id)));
    let owned: Vec<RunRecord> = ok.iter().map(|r| (*r).clone()).collect();
    let enc = Encodings::fit(&owned);
    let mut d = Dataset::default();
    for (i, r) in ok.iter().enumerate() {
        let h = PipelineHistory::from_runs(
            ok[..i].iter().copied().filter(|e| e.pipeline == r.pipeline),
        );
        let base = context_features(&enc, &h, &BuildContext::of_run(r), r.started_at);
        d.x.extend_from_slice(&with_config(&base, &r.config()));
        d.y.push(r.duration_s);
        d.started_at.push(r.started_at);
    }
    d
}

fn main() -> anyhow::Result<()> {
    let now: DateTime<Utc> = Utc::now();
    let mut sets: Vec<(String, Vec<RunRecord>)> = Vec::new();
    if let Some(path) = std::env::args().nth(1).map(PathBuf::from) {
        let runs: Vec<RunRecord> = read_rows(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .into_iter()
            .filter_map(|r| r.ok())
            .filter_map(|r| validate_row(&r, now).ok())
            .collect();
        sets.push((format!("real builds ({})", path.display()), runs));
    }
    let end = DateTime::parse_from_rfc3339("2026-11-20T00:00:00Z")?.with_timezone(&Utc);
    sets.push(("simulated, CI-like".into(), ci_runs(2000, end, 7)));
    sets.push(("simulated, demo".into(), demo_runs(2000, end, 7)));
    let params = ForestParams::default();
    let feature_sets: [(&str, Vec<usize>); 5] = [
        ("all 23", vec![]),
        ("without node", vec![2]),
        ("without prev_*", (17..23).collect()),
        ("without hist_*", (9..17).collect()),
        ("config + pipeline only", (1..4).chain(9..23).collect()),
    ];
    for (name, runs) in &sets {
        let data = rows_of(runs);
        println!(
            "\n{name}: {} rows, temporal holdout {}",
            data.len(),
            (data.len() as f64 * 0.2).round()
        );
        let [m, r, a, p] = score(&rows_started_before(runs), Target::Duration, &[], &params);
        println!(
            "history 'started before' (the old leak), duration, all 23: MAE {m:.2} s, R² {r:.3}, rank accuracy {a:.3} ({p} pairs)"
        );
        println!(
            "| target | features | MAE (s) | R² | rank accuracy | pairs |\n|---|---|---|---|---|---|"
        );
        for target in [
            Target::Duration,
            Target::LogDuration,
            Target::RelativeToRecent,
        ] {
            for (fname, drop) in &feature_sets {
                let [m, r, a, p] = score(&data, target, drop, &params);
                println!(
                    "| {} | {fname} | {m:.2} | {r:.3} | {a:.3} | {p} |",
                    target.name()
                );
            }
        }
    }
    Ok(())
}
