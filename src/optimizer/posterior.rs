//! The forest as a posterior: every tree's prediction for every scored row, from which follow
//! the mean, the probability that one config beats another (the share of trees that say so),
//! and Thompson draws (the argmin under one tree).
//!
//! Confidence used to be derived from the trees' spread around their mean, which on real builds
//! (where cache state dominates duration) was 0 for every decision. What a platform team needs to
//! know is whether the change is better, not whether the duration is certain: two configs can be
//! uncertain in absolute terms and still ordered the same way by nearly every tree.

use super::Objective;
use crate::BuildConfig;

/// Per-tree predictions of a batch of rows, with each row's objective weight.
#[derive(Debug, Clone)]
pub struct Posterior {
    n_trees: usize,
    /// Row-major `rows × n_trees`, seconds.
    durations: Vec<f64>,
    /// Objective score per second of duration, per row (1 for the duration objective).
    weights: Vec<f64>,
    /// Mean duration per row.
    means: Vec<f64>,
}

impl Posterior {
    /// A posterior over `configs` from the forest's per-tree `durations` (row-major).
    pub fn new(
        durations: Vec<f64>,
        n_trees: usize,
        configs: &[BuildConfig],
        objective: &Objective,
    ) -> Posterior {
        let n_trees = n_trees.max(1);
        let means = durations
            .chunks_exact(n_trees)
            .map(|r| r.iter().sum::<f64>() / n_trees as f64)
            .collect();
        Posterior {
            n_trees,
            durations,
            weights: configs.iter().map(|c| objective.weight(c)).collect(),
            means,
        }
    }

    /// Number of trees.
    pub fn n_trees(&self) -> usize {
        self.n_trees
    }

    fn row(&self, i: usize) -> &[f64] {
        &self.durations[i * self.n_trees..(i + 1) * self.n_trees]
    }

    /// Mean predicted duration of row `i`, seconds.
    pub fn mean(&self, i: usize) -> f64 {
        self.means[i]
    }

    /// Mean objective score of row `i` (lower is better).
    pub fn score(&self, i: usize) -> f64 {
        self.means[i] * self.weights[i]
    }

    /// Objective score of row `i` under tree `t` alone.
    pub fn tree_score(&self, i: usize, t: usize) -> f64 {
        self.durations[i * self.n_trees + t] * self.weights[i]
    }

    /// P(row `i` is faster than row `j`): the share of trees predicting it shorter, ties half.
    pub fn p_faster(&self, i: usize, j: usize) -> f64 {
        share(self.row(i), 1.0, self.row(j), 1.0)
    }

    /// P(row `i` beats row `j` under the objective): the share of trees scoring it lower, ties half.
    pub fn p_better(&self, i: usize, j: usize) -> f64 {
        share(self.row(i), self.weights[i], self.row(j), self.weights[j])
    }

    /// Thompson draws: for each start tree `t`, the row among `among` with the lowest mean
    /// score over the `block` trees `t, t+1, …` (cyclically), first on ties.
    ///
    /// The trees are bootstrap replicates, so a block is a random subset of them, and its mean a
    /// draw from the posterior of each config's mean duration (spread ≈ σ/√block), not of one
    /// build's duration: a single tree's argmin over 125 candidates is mostly its noise (in the
    /// closed loop, single-tree draws had more regret than epsilon; blocks of n/4 had less).
    pub fn block_argmins(&self, among: &[usize], block: usize) -> Vec<Option<usize>> {
        let n = self.n_trees;
        let block = block.clamp(1, n);
        let mut best: Vec<Option<(usize, f64)>> = vec![None; n];
        for &i in among {
            let row = self.row(i);
            let mut sum: f64 = row[..block].iter().sum();
            for (t, slot) in best.iter_mut().enumerate() {
                if t > 0 {
                    sum += row[(t + block - 1) % n] - row[t - 1];
                }
                let score = sum * self.weights[i];
                if slot.is_none_or(|(_, s)| score < s) {
                    *slot = Some((i, score));
                }
            }
        }
        best.into_iter().map(|b| b.map(|(i, _)| i)).collect()
    }

    /// The row among `among` that tree `t` scores lowest (first on ties), if any.
    pub fn tree_argmin(&self, t: usize, among: &[usize]) -> Option<usize> {
        among
            .iter()
            .copied()
            .min_by(|&a, &b| self.tree_score(a, t).total_cmp(&self.tree_score(b, t)))
    }
}

/// Share of paired entries where `a × wa < b × wb`, counting ties as half (NaN pairs as ties).
fn share(a: &[f64], wa: f64, b: &[f64], wb: f64) -> f64 {
    if a.is_empty() {
        return 0.5;
    }
    let mut wins = 0.0;
    for (x, y) in a.iter().zip(b) {
        wins += match (x * wa).partial_cmp(&(y * wb)) {
            Some(std::cmp::Ordering::Less) => 1.0,
            Some(std::cmp::Ordering::Greater) => 0.0,
            _ => 0.5,
        };
    }
    wins / a.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(cpu: f64) -> BuildConfig {
        BuildConfig {
            cpu,
            mem_gb: 4.0,
            concurrency: 2,
        }
    }

    #[test]
    fn win_shares_count_trees_and_ties_count_half() {
        // Three rows, four trees.
        let d = vec![
            10.0, 10.0, 30.0, 40.0, // row 0
            20.0, 20.0, 20.0, 20.0, // row 1
            10.0, 10.0, 30.0, 40.0, // row 2 (identical to row 0)
        ];
        let p = Posterior::new(d, 4, &[cfg(1.0), cfg(2.0), cfg(3.0)], &Objective::Duration);
        assert_eq!(p.mean(0), 22.5);
        assert_eq!(p.p_faster(0, 1), 0.5);
        assert_eq!(p.p_faster(1, 0), 0.5);
        assert_eq!(p.p_faster(0, 2), 0.5, "identical rows are a coin flip");
        assert_eq!(p.tree_argmin(0, &[0, 1, 2]), Some(0));
        assert_eq!(p.tree_argmin(3, &[0, 1, 2]), Some(1));
        assert_eq!(p.tree_argmin(3, &[]), None);
        // Blocks of one are single trees; a block of all trees is the mean's argmin.
        assert_eq!(
            p.block_argmins(&[0, 1, 2], 1),
            vec![Some(0), Some(0), Some(1), Some(1)]
        );
        assert_eq!(p.block_argmins(&[1, 0], 4), vec![Some(1); 4], "22.5 vs 20");
        assert_eq!(
            p.block_argmins(&[0, 1], 2)[3],
            Some(1),
            "trees 3 and 0: 25 vs 20"
        );
        assert_eq!(
            p.block_argmins(&[0, 1], 2)[0],
            Some(0),
            "trees 0 and 1: 10 vs 20"
        );
    }

    #[test]
    fn the_objective_weighs_each_row() {
        // Row 1 is 1.5× faster on every tree but uses 4× the cpu: spend-only cost prefers row 0.
        let d = vec![30.0, 60.0, 20.0, 40.0];
        let configs = [cfg(1.0), cfg(4.0)];
        let cost = Objective::Cost {
            cpu_per_hour: 1.0,
            gb_per_hour: 0.0,
            time_per_hour: 0.0,
        };
        let p = Posterior::new(d.clone(), 2, &configs, &cost);
        assert_eq!(p.p_faster(1, 0), 1.0);
        assert_eq!(p.p_better(1, 0), 0.0);
        assert_eq!(p.p_better(0, 1), 1.0);
        let fast = Posterior::new(d, 2, &configs, &Objective::Duration);
        assert_eq!(fast.p_better(1, 0), 1.0);
    }
}
