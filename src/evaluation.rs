//! Holdout splits and the metrics a model is judged by: MAE, R² and rank accuracy.
//!
//! Rank accuracy judges the decisions the model is used for: the optimizer picks the config it
//! predicts fastest for a build, so what matters is whether it orders configs of one pipeline
//! correctly, not how much of the duration variance (dominated by cache state, which nothing
//! at admission knows) it explains.

use chrono::{DateTime, Utc};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

/// How rows are divided into training and holdout sets.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Seeded random split (the design's 80/20).
    #[default]
    Random,
    /// Train on the oldest rows, hold out the newest: how the model will be used.
    Temporal,
}

/// Training and holdout row indices.
pub fn split_indices(
    started_at: &[DateTime<Utc>],
    split: Split,
    test_fraction: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let n = started_at.len();
    let n_test = ((n as f64) * test_fraction.clamp(0.0, 0.9)).round() as usize;
    let n_test = n_test.min(n.saturating_sub(1));
    let mut idx: Vec<usize> = (0..n).collect();
    match split {
        Split::Random => idx.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed)),
        Split::Temporal => idx.sort_by_key(|&i| (started_at[i], i)),
    }
    let test = idx.split_off(n - n_test);
    (idx, test)
}

/// Mean absolute error.
pub fn mae(y: &[f64], pred: &[f64]) -> f64 {
    if y.is_empty() {
        return f64::NAN;
    }
    y.iter().zip(pred).map(|(a, b)| (a - b).abs()).sum::<f64>() / y.len() as f64
}

/// Coefficient of determination (1 − SS_res / SS_tot); NaN with fewer than two rows.
pub fn r2(y: &[f64], pred: &[f64]) -> f64 {
    if y.len() < 2 {
        return f64::NAN;
    }
    let mean = y.iter().sum::<f64>() / y.len() as f64;
    let ss_tot: f64 = y.iter().map(|v| (v - mean).powi(2)).sum();
    let ss_res: f64 = y.iter().zip(pred).map(|(a, b)| (a - b).powi(2)).sum();
    if ss_tot == 0.0 {
        return if ss_res == 0.0 { 1.0 } else { 0.0 };
    }
    1.0 - ss_res / ss_tot
}

/// Durations closer than this fraction of the longer one are a tie: within the noise of
/// repeating the same build, so no order between them is right or wrong.
pub const RANK_TIE_FRACTION: f64 = 0.05;

/// Pairwise ranking accuracy on holdout rows (row-major `features::N_FEATURES` columns) and the
/// number of pairs judged. A pair is two rows of the same pipeline with different configs whose
/// durations differ by more than [`RANK_TIE_FRACTION`]; it is right when the prediction orders
/// them as they ran (a predicted tie counts half). `None` when there is no such pair.
pub fn rank_accuracy(x: &[f64], y: &[f64], pred: &[f64]) -> (Option<f64>, usize) {
    use crate::features::{N_FEATURES, PIPELINE_COLUMN};
    let key = |i: usize| -> (f64, [f64; 3]) {
        let r = &x[i * N_FEATURES..(i + 1) * N_FEATURES];
        (r[PIPELINE_COLUMN], [r[4], r[5], r[6]])
    };
    let n = y.len().min(pred.len()).min(x.len() / N_FEATURES);
    let (mut right, mut pairs) = (0.0, 0usize);
    for i in 0..n {
        let (pi, ci) = key(i);
        for j in (i + 1)..n {
            let (pj, cj) = key(j);
            if pi != pj || ci == cj {
                continue;
            }
            let (a, b) = (y[i], y[j]);
            if (a - b).abs() <= RANK_TIE_FRACTION * a.abs().max(b.abs()) {
                continue;
            }
            pairs += 1;
            let truth = (a - b).signum();
            let guess = pred[i] - pred[j];
            right += if guess == 0.0 {
                0.5
            } else if guess.signum() == truth {
                1.0
            } else {
                0.0
            };
        }
    }
    ((pairs > 0).then(|| right / pairs as f64), pairs)
}

/// A model's scores on one holdout.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Metrics {
    /// Mean absolute error, seconds.
    pub mae_s: f64,
    /// Coefficient of determination.
    pub r2: f64,
    /// Pairwise ranking accuracy of configs within a pipeline ([`rank_accuracy`]); `None` when
    /// the holdout has no such pair (and for models trained before it was measured).
    #[serde(default)]
    pub rank_accuracy: Option<f64>,
    /// Pairs the rank accuracy was judged on.
    #[serde(default)]
    pub rank_pairs: usize,
    /// Rows trained on.
    pub train_rows: usize,
    /// Rows held out.
    pub test_rows: usize,
}

impl Metrics {
    /// Scores predictions against labels (`x`: the holdout's feature rows, for ranking).
    pub fn score(x: &[f64], y: &[f64], pred: &[f64], train_rows: usize) -> Metrics {
        let (rank_accuracy, rank_pairs) = rank_accuracy(x, y, pred);
        Metrics {
            mae_s: mae(y, pred),
            r2: r2(y, pred),
            rank_accuracy,
            rank_pairs,
            train_rows,
            test_rows: y.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn metrics_match_hand_computed_values() {
        let y = [1.0, 2.0, 3.0, 4.0];
        let p = [1.5, 2.0, 2.5, 4.0];
        assert_eq!(mae(&y, &p), 0.25);
        // ss_tot = 5, ss_res = 0.5
        assert!((r2(&y, &p) - 0.9).abs() < 1e-12);
        assert_eq!(r2(&y, &y), 1.0);
        let mean = [2.5; 4];
        assert_eq!(r2(&y, &mean), 0.0);
    }

    fn row(pipeline: f64, cpu: f64) -> Vec<f64> {
        let mut r = vec![0.0; crate::features::N_FEATURES];
        r[0] = pipeline;
        r[4] = cpu;
        r[5] = 8.0;
        r[6] = 4.0;
        r
    }

    #[test]
    fn rank_accuracy_counts_pairs_of_one_pipeline_with_different_configs() {
        // Rows: p1 cpu 2 (100 s), p1 cpu 4 (60 s), p1 cpu 8 (50 s), p1 cpu 8 again (200 s),
        // p2 cpu 2 (10 s), p1 cpu 6 (103 s: a tie with the first row).
        let x: Vec<f64> = [
            (1.0, 2.0),
            (1.0, 4.0),
            (1.0, 8.0),
            (1.0, 8.0),
            (2.0, 2.0),
            (1.0, 6.0),
        ]
        .iter()
        .flat_map(|&(p, c)| row(p, c))
        .collect();
        let y = [100.0, 60.0, 50.0, 200.0, 10.0, 103.0];
        // Pairs: (0,1) (0,2) (0,3) (1,2) (1,3) (1,5) (2,5) (3,5); not (2,3) same config,
        // not (0,5) a tie, nothing with p2.
        let (acc, pairs) = rank_accuracy(&x, &y, &y);
        assert_eq!((acc, pairs), (Some(1.0), 8));
        let flat = [7.0; 6];
        assert_eq!(rank_accuracy(&x, &y, &flat), (Some(0.5), 8));
        let reversed: Vec<f64> = y.iter().map(|v| -v).collect();
        assert_eq!(rank_accuracy(&x, &y, &reversed), (Some(0.0), 8));
        assert_eq!(rank_accuracy(&row(1.0, 2.0), &[1.0], &[1.0]), (None, 0));
    }

    #[test]
    fn temporal_split_holds_out_the_newest() {
        let t: Vec<_> = [5, 1, 4, 2, 3]
            .iter()
            .map(|s| Utc.timestamp_opt(*s, 0).unwrap())
            .collect();
        let (train, test) = split_indices(&t, Split::Temporal, 0.4, 0);
        assert_eq!(test, vec![2, 0]);
        assert_eq!(train, vec![1, 3, 4]);
    }

    #[test]
    fn random_split_is_seeded_and_partitions() {
        let t: Vec<_> = (0..100).map(|s| Utc.timestamp_opt(s, 0).unwrap()).collect();
        let (a_train, a_test) = split_indices(&t, Split::Random, 0.2, 9);
        let (b_train, b_test) = split_indices(&t, Split::Random, 0.2, 9);
        assert_eq!((a_train.clone(), a_test.clone()), (b_train, b_test));
        assert_eq!(a_test.len(), 20);
        let mut all: Vec<_> = a_train.into_iter().chain(a_test).collect();
        all.sort();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_ne!(
            split_indices(&t, Split::Random, 0.2, 10).1,
            split_indices(&t, Split::Random, 0.2, 9).1
        );
    }
}
