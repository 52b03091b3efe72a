//! Holdout splits and the metrics a model is judged by (MAE, R²).

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

/// A model's scores on one holdout.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Metrics {
    /// Mean absolute error, seconds.
    pub mae_s: f64,
    /// Coefficient of determination.
    pub r2: f64,
    /// Rows trained on.
    pub train_rows: usize,
    /// Rows held out.
    pub test_rows: usize,
}

impl Metrics {
    /// Scores predictions against labels.
    pub fn score(y: &[f64], pred: &[f64], train_rows: usize) -> Metrics {
        Metrics {
            mae_s: mae(y, pred),
            r2: r2(y, pred),
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
