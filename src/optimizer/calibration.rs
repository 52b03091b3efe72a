//! Is the optimizer's confidence calibrated? On a holdout, pairs of real builds of one pipeline
//! with different configs are judged the way a decision is: the share of trees predicting one
//! faster than the other. Among pairs given confidence ≥ 0.8, the favoured build should really
//! have been faster in at least 80 % of them.

use serde::{Deserialize, Serialize};

use crate::features::{Dataset, FEATURE_NAMES};
use crate::forest::CompactForest;

/// Later builds of the same pipeline each build is paired with (keeps pairs close in time).
pub const PAIRS_PER_BUILD: usize = 8;

/// Lower edges of the confidence bins (the last runs to 1 inclusive).
pub const BIN_EDGES: [f64; 5] = [0.5, 0.6, 0.7, 0.8, 0.9];

/// One confidence bin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationBin {
    /// Lowest confidence in the bin.
    pub from: f64,
    /// Upper edge (exclusive, except 1).
    pub to: f64,
    /// Pairs in the bin.
    pub pairs: usize,
    /// Mean confidence of those pairs.
    pub mean_confidence: Option<f64>,
    /// Share of those pairs where the favoured build really was faster.
    pub observed: Option<f64>,
}

/// The calibration table of a model on one holdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Pairs judged (same pipeline, different config).
    pub pairs: usize,
    /// Pairs with confidence ≥ 0.8.
    pub confident_pairs: usize,
    /// Share of those where the favoured build was faster (calibrated when ≥ 0.8).
    pub confident_observed: Option<f64>,
    /// By bin.
    pub bins: Vec<CalibrationBin>,
}

fn column(name: &str) -> Option<usize> {
    FEATURE_NAMES.iter().position(|n| *n == name)
}

/// The calibration table of `forest` on `data` (rows in time order or not; pairs are formed in
/// row order, each row with the next `PAIRS_PER_BUILD` rows of its pipeline).
pub fn calibrate(forest: &CompactForest, data: &Dataset) -> Calibration {
    let (Some(pipe), Some(cpu), Some(mem), Some(jobs)) = (
        column("pipeline"),
        column("cpu_req"),
        column("mem_req_gb"),
        column("concurrency"),
    ) else {
        return table(Vec::new());
    };
    let n_trees = forest.n_trees().max(1);
    let per_tree = forest.predict_per_tree(&data.x);
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.sort_by_key(|&i| (data.started_at[i], i));
    let mut judged = Vec::new();
    for (k, &a) in order.iter().enumerate() {
        let ra = data.row(a);
        let mut paired = 0;
        for &b in &order[k + 1..] {
            if paired == PAIRS_PER_BUILD {
                break;
            }
            let rb = data.row(b);
            if rb[pipe] != ra[pipe] {
                continue;
            }
            if ra[cpu] == rb[cpu] && ra[mem] == rb[mem] && ra[jobs] == rb[jobs] {
                continue;
            }
            paired += 1;
            let ta = &per_tree[a * n_trees..(a + 1) * n_trees];
            let tb = &per_tree[b * n_trees..(b + 1) * n_trees];
            let wins: f64 = ta
                .iter()
                .zip(tb)
                .map(|(x, y)| match x.partial_cmp(y) {
                    Some(std::cmp::Ordering::Less) => 1.0,
                    Some(std::cmp::Ordering::Greater) => 0.0,
                    _ => 0.5,
                })
                .sum();
            let p = wins / n_trees as f64;
            // Orient each pair towards the build the trees favour.
            let (p, faster) = if p >= 0.5 {
                (p, data.y[a] < data.y[b])
            } else {
                (1.0 - p, data.y[b] < data.y[a])
            };
            judged.push((p, faster));
        }
    }
    table(judged)
}

fn table(judged: Vec<(f64, bool)>) -> Calibration {
    let share = |v: &[&(f64, bool)]| {
        (!v.is_empty()).then(|| v.iter().filter(|(_, f)| *f).count() as f64 / v.len() as f64)
    };
    let bins = BIN_EDGES
        .iter()
        .enumerate()
        .map(|(i, &from)| {
            let to = BIN_EDGES.get(i + 1).copied().unwrap_or(1.0);
            let last = i + 1 == BIN_EDGES.len();
            let inside: Vec<&(f64, bool)> = judged
                .iter()
                .filter(|(p, _)| *p >= from && (*p < to || (last && *p <= to)))
                .collect();
            CalibrationBin {
                from,
                to,
                pairs: inside.len(),
                mean_confidence: (!inside.is_empty())
                    .then(|| inside.iter().map(|(p, _)| p).sum::<f64>() / inside.len() as f64),
                observed: share(&inside),
            }
        })
        .collect();
    let confident: Vec<&(f64, bool)> = judged.iter().filter(|(p, _)| *p >= 0.8).collect();
    Calibration {
        pairs: judged.len(),
        confident_pairs: confident.len(),
        confident_observed: share(&confident),
        bins,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_count_pairs_and_what_really_happened() {
        let t = table(vec![
            (0.55, true),
            (0.55, false),
            (0.85, true),
            (0.95, true),
            (1.0, false),
        ]);
        assert_eq!(t.pairs, 5);
        assert_eq!(t.bins[0].pairs, 2);
        assert_eq!(t.bins[0].observed, Some(0.5));
        assert_eq!(t.bins[1].observed, None);
        assert_eq!(t.bins[4].pairs, 2, "1.0 falls in the last bin");
        assert_eq!(
            (t.confident_pairs, t.confident_observed),
            (3, Some(2.0 / 3.0))
        );
    }
}
