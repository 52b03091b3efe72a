//! The random forest: training through smartcore, and the project's compact inference layout.
//!
//! smartcore grows the trees; they are then re-laid out as flat 16-byte nodes in one array, and
//! prediction yields every tree's output (the spread across trees is the optimizer's confidence
//! signal) in the same summation order as smartcore, so the mean is bit-identical to its own.
//!
//! Layout: the two children of an internal node are adjacent (`left`, `left + 1`); a row goes
//! right when `!(x[feature] <= threshold)`, exactly smartcore's rule (NaN goes right). A leaf
//! has `feature == n_features` (a virtual feature that is always −∞), points at itself and keeps
//! its output in `threshold`.
//!
//! Two walks (see `walk`): rows side by side for a fixed number of branch-free steps, or, when
//! most features are equal in every row (the optimizer's 125 candidates differ only in their
//! config columns), rows as a group that a split on an equal feature sends one way at the cost
//! of one comparison.

use serde::{Deserialize, Serialize};
use smartcore::ensemble::random_forest_regressor::{
    RandomForestRegressor, RandomForestRegressorParameters,
};
use smartcore::linalg::basic::matrix::DenseMatrix;

/// Why a forest could not be trained or rebuilt.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ForestError {
    /// Asked for a forest of no trees.
    #[error("n_trees must be at least 1")]
    NoTrees,
    /// The matrix and the labels do not fit together.
    #[error(
        "training data shape mismatch: {values} values for {rows} rows of {features} features"
    )]
    Shape {
        /// Values in the matrix.
        values: usize,
        /// Labels.
        rows: usize,
        /// Columns.
        features: usize,
    },
    /// A feature or label is NaN or infinite.
    #[error("training data contains a non-finite value")]
    NonFinite,
    /// smartcore refused or failed at one stage.
    #[error("smartcore failed while {stage}: {message}")]
    Smartcore {
        /// What was being done.
        stage: &'static str,
        /// smartcore's message.
        message: String,
    },
    /// A training shard's thread panicked.
    #[error("training shard {0} panicked")]
    ShardPanicked(usize),
    /// A tree's layout is unusable (from smartcore or a stored artifact).
    #[error("forest layout is invalid: {0}")]
    Layout(String),
}

/// Results of forest operations.
pub type Result<T, E = ForestError> = std::result::Result<T, E>;

fn smartcore(stage: &'static str) -> impl FnOnce(smartcore::error::Failed) -> ForestError {
    move |e| ForestError::Smartcore {
        stage,
        message: e.to_string(),
    }
}

/// Hyperparameters, with the design's defaults. `max_depth` means what scikit-learn means:
/// the number of splits on the longest root-to-leaf path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ForestParams {
    /// Number of trees.
    pub n_trees: usize,
    /// Longest root-to-leaf path, in splits (scikit-learn's meaning); `None` grows fully.
    pub max_depth: Option<u16>,
    /// Minimum rows needed to split a node.
    pub min_samples_split: usize,
    /// Minimum rows in a leaf.
    pub min_samples_leaf: usize,
    /// Features tried per split; `None` tries all (scikit-learn's regressor default).
    pub max_features: Option<usize>,
    /// Seed for bootstrap sampling and feature choice.
    pub seed: u64,
    /// Independent sub-forests grown in parallel; part of the seed's meaning, not of the machine.
    pub shards: usize,
}

impl Default for ForestParams {
    fn default() -> Self {
        ForestParams {
            n_trees: 100,
            max_depth: Some(15),
            min_samples_split: 2,
            min_samples_leaf: 1,
            max_features: None,
            seed: 42,
            shards: 4,
        }
    }
}

/// One flattened node: 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct Node {
    /// Split threshold for internal nodes, the output for leaves.
    pub threshold: f64,
    /// Feature tested; `n_features` (the virtual −∞ feature) for leaves.
    pub feature: u32,
    /// Index of the left child (right is `left + 1`); a leaf's own index.
    pub left: u32,
}

/// Where one tree's nodes start and how deep it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeInfo {
    /// Index of the root in the node array.
    pub root: u32,
    /// Splits on the longest root-to-leaf path.
    pub depth: u16,
}

/// A trained forest in the compact layout.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactForest {
    n_features: usize,
    trees: Vec<TreeInfo>,
    nodes: Vec<Node>,
}

/// A trained forest and its impurity-based feature importances (summing to 1).
#[derive(Debug, Clone)]
pub struct TrainedForest {
    /// The compact forest.
    pub forest: CompactForest,
    /// Mean decrease in impurity per feature, normalised.
    pub importances: Vec<f64>,
}

// Mirror of smartcore's serde form: the only public way to reach its nodes.
#[derive(Deserialize)]
struct SmForest {
    forest_regressor: Option<SmBase>,
}
#[derive(Deserialize)]
struct SmBase {
    trees: Option<Vec<SmTree>>,
}
#[derive(Deserialize)]
struct SmTree {
    nodes: Vec<SmNode>,
}
#[derive(Deserialize)]
struct SmNode {
    output: f64,
    split_feature: usize,
    split_value: Option<f64>,
    true_child: Option<usize>,
    false_child: Option<usize>,
}

/// The smartcore model type this module trains.
pub type SmartcoreForest = RandomForestRegressor<f64, f64, DenseMatrix<f64>, Vec<f64>>;

fn smartcore_params(
    p: &ForestParams,
    n_trees: usize,
    seed: u64,
    n_features: usize,
) -> RandomForestRegressorParameters {
    let mut sp = RandomForestRegressorParameters::default()
        .with_n_trees(n_trees)
        .with_min_samples_leaf(p.min_samples_leaf)
        .with_min_samples_split(p.min_samples_split)
        .with_m(p.max_features.unwrap_or(n_features).clamp(1, n_features))
        .with_seed(seed);
    if let Some(d) = p.max_depth {
        // smartcore counts the root as a level: scikit-learn's depth d is smartcore's d + 1.
        sp = sp.with_max_depth(d.saturating_add(1));
    }
    sp
}

/// Fits one smartcore forest on row-major `x` (`n_features` columns).
pub fn fit_smartcore(
    x: &[f64],
    n_features: usize,
    y: &[f64],
    p: &ForestParams,
    n_trees: usize,
    seed: u64,
) -> Result<SmartcoreForest> {
    let n_rows = y.len();
    let matrix = DenseMatrix::new(n_rows, n_features, x.to_vec(), false)
        .map_err(smartcore("building the training matrix"))?;
    RandomForestRegressor::fit(
        &matrix,
        &y.to_vec(),
        smartcore_params(p, n_trees, seed, n_features),
    )
    .map_err(smartcore("fitting the forest"))
}

/// Seed of shard `k`: far apart so no two trees in the whole forest share a seed.
fn shard_seed(seed: u64, k: usize) -> u64 {
    seed.wrapping_add((k as u64).wrapping_mul(1_000_003))
}

/// Trees in each shard: as even as possible, larger shards first.
fn shard_sizes(n_trees: usize, shards: usize) -> Vec<usize> {
    let shards = shards.clamp(1, n_trees.max(1));
    (0..shards)
        .map(|k| n_trees / shards + usize::from(k < n_trees % shards))
        .collect()
}

/// One shard's compact trees and importances.
type ShardResult = Result<(CompactForest, Vec<f64>)>;

/// Trains a forest on row-major `x` with `n_features` columns, growing shards on all cores.
pub fn train(
    x: &[f64],
    n_features: usize,
    y: &[f64],
    params: &ForestParams,
) -> Result<TrainedForest> {
    if params.n_trees == 0 {
        return Err(ForestError::NoTrees);
    }
    if y.is_empty() || n_features == 0 || x.len() != y.len() * n_features {
        return Err(ForestError::Shape {
            values: x.len(),
            rows: y.len(),
            features: n_features,
        });
    }
    if x.iter().chain(y).any(|v| !v.is_finite()) {
        return Err(ForestError::NonFinite);
    }
    let sizes = shard_sizes(params.n_trees, params.shards);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(sizes.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<Option<ShardResult>> = (0..sizes.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if k >= sizes.len() {
                            break done;
                        }
                        let shard = fit_smartcore(
                            x,
                            n_features,
                            y,
                            params,
                            sizes[k],
                            shard_seed(params.seed, k),
                        )
                        .and_then(|m| {
                            let imp = m
                                .compute_feature_importances()
                                .map_err(smartcore("computing feature importances"))?;
                            Ok((CompactForest::from_smartcore(&m, n_features)?, imp))
                        });
                        done.push((k, shard));
                    }
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(done) => {
                    for (k, r) in done {
                        results[k] = Some(r);
                    }
                }
                Err(_) => {
                    // A panicking shard leaves its slot empty; reported below.
                }
            }
        }
    });
    let mut forest = CompactForest {
        n_features,
        trees: Vec::new(),
        nodes: Vec::new(),
    };
    let mut importances = vec![0.0; n_features];
    for (k, r) in results.into_iter().enumerate() {
        let (shard, imp) = r.ok_or(ForestError::ShardPanicked(k))??;
        let weight = sizes[k] as f64 / params.n_trees as f64;
        for (acc, v) in importances.iter_mut().zip(imp) {
            *acc += weight * v;
        }
        forest.append(shard);
    }
    let total: f64 = importances.iter().sum();
    if total > 0.0 {
        importances.iter_mut().for_each(|v| *v /= total);
    }
    Ok(TrainedForest {
        forest,
        importances,
    })
}

impl CompactForest {
    /// Converts a fitted smartcore forest through its serde form (bit-exact with `float_roundtrip`).
    pub fn from_smartcore(model: &SmartcoreForest, n_features: usize) -> Result<CompactForest> {
        let json = serde_json::to_vec(model)
            .map_err(|e| ForestError::Layout(format!("serialising the smartcore forest: {e}")))?;
        let sm: SmForest = serde_json::from_slice(&json).map_err(|e| {
            ForestError::Layout(format!("reading the smartcore forest's nodes: {e}"))
        })?;
        let trees = sm
            .forest_regressor
            .and_then(|f| f.trees)
            .ok_or_else(|| ForestError::Layout("smartcore forest has no trees".into()))?;
        let mut forest = CompactForest {
            n_features,
            trees: Vec::with_capacity(trees.len()),
            nodes: Vec::new(),
        };
        for tree in &trees {
            forest.push_smartcore_tree(tree)?;
        }
        Ok(forest)
    }

    fn push_smartcore_tree(&mut self, tree: &SmTree) -> Result<()> {
        let leaf_feature = self.n_features as u32;
        let root = self.nodes.len() as u32;
        // Breadth-first: each internal node gets two adjacent slots for its children.
        let mut queue = std::collections::VecDeque::from([(0usize, root, 0u16)]);
        self.nodes.push(Node {
            threshold: 0.0,
            feature: 0,
            left: 0,
        });
        let mut depth = 0u16;
        while let Some((src, dst, d)) = queue.pop_front() {
            let n = tree
                .nodes
                .get(src)
                .ok_or_else(|| ForestError::Layout(format!("smartcore node {src} out of range")))?;
            depth = depth.max(d);
            match (n.true_child, n.false_child, n.split_value) {
                (Some(t), Some(f), Some(v)) => {
                    if n.split_feature >= self.n_features {
                        return Err(ForestError::Layout(format!(
                            "split on feature {} of {}",
                            n.split_feature, self.n_features
                        )));
                    }
                    let left = self.nodes.len() as u32;
                    self.nodes.push(Node {
                        threshold: 0.0,
                        feature: 0,
                        left: 0,
                    });
                    self.nodes.push(Node {
                        threshold: 0.0,
                        feature: 0,
                        left: 0,
                    });
                    self.nodes[dst as usize] = Node {
                        threshold: v,
                        feature: n.split_feature as u32,
                        left,
                    };
                    queue.push_back((t, left, d + 1));
                    queue.push_back((f, left + 1, d + 1));
                }
                _ => {
                    self.nodes[dst as usize] = Node {
                        threshold: n.output,
                        feature: leaf_feature,
                        left: dst,
                    };
                }
            }
        }
        self.trees.push(TreeInfo { root, depth });
        Ok(())
    }

    fn append(&mut self, other: CompactForest) {
        let offset = self.nodes.len() as u32;
        self.trees.extend(other.trees.iter().map(|t| TreeInfo {
            root: t.root + offset,
            depth: t.depth,
        }));
        self.nodes.extend(other.nodes.iter().map(|n| Node {
            left: n.left + offset,
            ..*n
        }));
    }

    /// Rebuilds a forest from stored parts, refusing anything that could walk out of bounds.
    pub fn from_parts(
        n_features: usize,
        trees: Vec<TreeInfo>,
        nodes: Vec<Node>,
    ) -> std::result::Result<CompactForest, String> {
        if trees.is_empty() {
            return Err("forest has no trees".into());
        }
        let n = nodes.len();
        for (i, node) in nodes.iter().enumerate() {
            let leaf = node.feature as usize == n_features;
            if node.feature as usize > n_features {
                return Err(format!(
                    "node {i} tests feature {} of {n_features}",
                    node.feature
                ));
            }
            if leaf && node.left as usize != i {
                return Err(format!("leaf {i} does not point at itself"));
            }
            if !leaf && node.left as usize + 1 >= n {
                return Err(format!("node {i} has children out of range"));
            }
            if !node.threshold.is_finite() {
                return Err(format!("node {i} has a non-finite value"));
            }
        }
        for (t, info) in trees.iter().enumerate() {
            if info.root as usize >= n {
                return Err(format!("tree {t} starts out of range"));
            }
        }
        let forest = CompactForest {
            n_features,
            trees,
            nodes,
        };
        // Every walk must end on a leaf after `depth` steps, or predictions would be wrong.
        for (t, info) in forest.trees.iter().enumerate() {
            if !forest.reaches_leaves(info) {
                return Err(format!(
                    "tree {t} is deeper than its recorded depth {}",
                    info.depth
                ));
            }
        }
        Ok(forest)
    }

    fn reaches_leaves(&self, info: &TreeInfo) -> bool {
        let mut stack = vec![(info.root, 0u16)];
        let mut visited = 0usize;
        while let Some((i, d)) = stack.pop() {
            visited += 1;
            if visited > self.nodes.len() {
                return false; // a cycle
            }
            let n = self.nodes[i as usize];
            if n.feature as usize == self.n_features {
                continue;
            }
            if d >= info.depth {
                return false;
            }
            stack.push((n.left, d + 1));
            stack.push((n.left + 1, d + 1));
        }
        true
    }

    /// Number of input features.
    pub fn n_features(&self) -> usize {
        self.n_features
    }
    /// Number of trees.
    pub fn n_trees(&self) -> usize {
        self.trees.len()
    }
    /// The trees' roots and depths.
    pub fn trees(&self) -> &[TreeInfo] {
        &self.trees
    }
    /// All nodes of all trees.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }
    /// Deepest tree, in splits.
    pub fn max_depth(&self) -> u16 {
        self.trees.iter().map(|t| t.depth).max().unwrap_or(0)
    }

    /// Rows travel through each tree as groups: a split on a feature whose value is the same in
    /// every row (the optimizer's candidates differ only in their config columns) sends the whole
    /// group one way with a single comparison; a split on a varying feature partitions the group.
    fn walk_grouped(&self, rows: &[f64], varies: &[bool], mut f: impl FnMut(usize, usize, f64)) {
        let nf = self.n_features;
        let n_rows = rows.len() / nf;
        let first = &rows[..nf];
        let nodes = &self.nodes[..];
        let mut order: Vec<u32> = (0..n_rows as u32).collect();
        let mut stack: Vec<(u32, usize, usize)> = Vec::with_capacity(64);
        for (t, info) in self.trees.iter().enumerate() {
            stack.push((info.root, 0, n_rows));
            while let Some((mut ni, lo, hi)) = stack.pop() {
                loop {
                    let n = nodes[ni as usize];
                    let feature = n.feature as usize;
                    if feature == nf {
                        for &r in &order[lo..hi] {
                            f(r as usize, t, n.threshold);
                        }
                        break;
                    }
                    if !varies[feature] {
                        // `!(x <= t)` rather than `x > t`: NaN must go right, as in smartcore.
                        #[allow(clippy::neg_cmp_op_on_partial_ord)]
                        let right = !(first[feature] <= n.threshold);
                        ni = n.left + u32::from(right);
                        continue;
                    }
                    // Partition: rows going left (x <= threshold) first.
                    let (mut i, mut j) = (lo, hi);
                    while i < j {
                        if rows[order[i] as usize * nf + feature] <= n.threshold {
                            i += 1;
                        } else {
                            j -= 1;
                            order.swap(i, j);
                        }
                    }
                    match (i > lo, i < hi) {
                        (true, true) => {
                            stack.push((n.left + 1, i, hi));
                            ni = n.left;
                            // continue with the left group in [lo, i)
                            let hi_left = i;
                            stack.push((ni, lo, hi_left));
                            break;
                        }
                        (true, false) => ni = n.left,
                        (false, _) => ni = n.left + 1,
                    }
                }
            }
        }
    }

    /// Rows walk each tree side by side, a fixed number of branch-free steps (the tree's depth):
    /// a leaf points at itself and tests a virtual feature that is always −∞, so walking past it
    /// stays on it. Several rows at once let their memory loads overlap.
    fn walk_lanes(&self, rows: &[f64], mut f: impl FnMut(usize, usize, f64)) {
        const LANES: usize = 16;
        let nf = self.n_features;
        let stride = nf + 1;
        let mut padded = Vec::with_capacity(rows.len() / nf * stride);
        for row in rows.chunks_exact(nf) {
            padded.extend_from_slice(row);
            padded.push(f64::NEG_INFINITY);
        }
        let n_rows = padded.len() / stride;
        let nodes = &self.nodes[..];
        for (t, info) in self.trees.iter().enumerate() {
            let mut start = 0;
            while start < n_rows {
                let lanes = LANES.min(n_rows - start);
                let mut idx = [info.root; LANES];
                let mut base = [0usize; LANES];
                for (l, b) in base.iter_mut().enumerate().take(lanes) {
                    *b = (start + l) * stride;
                }
                for _ in 0..info.depth {
                    for l in 0..lanes {
                        // SAFETY: a forest is only built by `from_smartcore` or `from_parts`,
                        // which guarantee every index is in range: roots and children index
                        // `nodes` (internal nodes have `left + 1 < nodes.len()`, leaves point at
                        // themselves), and `feature <= n_features` indexes the padded row of
                        // `n_features + 1` values that starts at `base[l]`.
                        let (n, x) = unsafe {
                            let n = *nodes.get_unchecked(idx[l] as usize);
                            (n, *padded.get_unchecked(base[l] + n.feature as usize))
                        };
                        // `!(x <= t)` rather than `x > t`: NaN must go right, as in smartcore.
                        #[allow(clippy::neg_cmp_op_on_partial_ord)]
                        let right = !(x <= n.threshold);
                        idx[l] = n.left + u32::from(right);
                    }
                }
                for (l, slot) in idx.iter().enumerate().take(lanes) {
                    f(start + l, t, nodes[*slot as usize].threshold);
                }
                start += lanes;
            }
        }
    }

    /// Calls `f(row, tree, output)` for every row of row-major `rows` and every tree, trees in
    /// order: grouped when most features are the same in every row (the optimizer's candidates),
    /// side by side otherwise. Both make exactly smartcore's comparisons.
    #[inline]
    fn walk(&self, rows: &[f64], mut f: impl FnMut(usize, usize, f64)) {
        let nf = self.n_features;
        let n_rows = rows.len() / nf.max(1);
        if n_rows == 0 {
            return;
        }
        let rows = &rows[..n_rows * nf];
        if n_rows == 1 {
            // One row: a plain walk to each leaf, nothing to allocate.
            for (t, info) in self.trees.iter().enumerate() {
                let mut n = self.nodes[info.root as usize];
                while n.feature as usize != nf {
                    // `!(x <= t)` rather than `x > t`: NaN must go right, as in smartcore.
                    #[allow(clippy::neg_cmp_op_on_partial_ord)]
                    let right = !(rows[n.feature as usize] <= n.threshold);
                    n = self.nodes[(n.left + u32::from(right)) as usize];
                }
                f(0, t, n.threshold);
            }
            return;
        }
        let first = &rows[..nf];
        let varies: Vec<bool> = (0..=nf)
            .map(|j| {
                j < nf
                    && rows
                        .chunks_exact(nf)
                        .any(|r| r[j].to_bits() != first[j].to_bits())
            })
            .collect();
        if n_rows > 1 && varies.iter().filter(|v| **v).count() * 3 <= nf {
            self.walk_grouped(rows, &varies, f);
        } else {
            self.walk_lanes(rows, f);
        }
    }

    /// Mean prediction per row; the same sum order as smartcore, so bit-identical to it.
    pub fn predict(&self, rows: &[f64]) -> Vec<f64> {
        let n_rows = rows.len() / self.n_features.max(1);
        let mut sums = vec![0.0; n_rows];
        self.walk(rows, |r, _, v| sums[r] += v);
        let n = self.trees.len() as f64;
        sums.iter_mut().for_each(|s| *s /= n);
        sums
    }

    /// Mean and standard deviation across trees, per row.
    pub fn predict_with_spread(&self, rows: &[f64]) -> Vec<(f64, f64)> {
        let n_rows = rows.len() / self.n_features.max(1);
        let mut sums = vec![0.0; n_rows];
        let mut squares = vec![0.0; n_rows];
        self.walk(rows, |r, _, v| {
            sums[r] += v;
            squares[r] += v * v;
        });
        let n = self.trees.len() as f64;
        sums.iter()
            .zip(&squares)
            .map(|(s, q)| {
                let mean = s / n;
                (mean, (q / n - mean * mean).max(0.0).sqrt())
            })
            .collect()
    }

    /// Every tree's output for every row: row-major, `n_rows × n_trees` (the optimizer's
    /// posterior: one walk, from which means, pairwise win shares and Thompson draws all follow).
    pub fn predict_per_tree(&self, rows: &[f64]) -> Vec<f64> {
        let n_rows = rows.len() / self.n_features.max(1);
        let n_trees = self.trees.len();
        let mut out = vec![0.0; n_rows * n_trees];
        self.walk(rows, |r, t, v| out[r * n_trees + t] = v);
        out
    }

    /// Every tree's output for one row, in tree order.
    pub fn tree_predictions(&self, row: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; self.trees.len()];
        self.walk(row, |_, t, v| out[t] = v);
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use smartcore::linalg::basic::matrix::DenseMatrix;

    /// A small nonlinear regression problem with a known shape.
    pub(crate) fn toy(n: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut x = Vec::with_capacity(n * 4);
        let mut y = Vec::with_capacity(n);
        for _ in 0..n {
            let a: f64 = rng.random_range(0.0..10.0);
            let b: f64 = rng.random_range(0.0..5.0);
            let c: f64 = rng.random_range(-1.0..1.0);
            let d: f64 = rng.random_range(0.0..1.0);
            x.extend_from_slice(&[a, b, c, d]);
            y.push(a * a + 10.0 * b.sin() + if c > 0.0 { 5.0 } else { 0.0 } + d);
        }
        (x, y)
    }

    #[test]
    fn compact_layout_predicts_exactly_what_smartcore_predicts() {
        let (x, y) = toy(600, 1);
        let p = ForestParams {
            n_trees: 25,
            max_depth: Some(8),
            ..Default::default()
        };
        let model = fit_smartcore(&x, 4, &y, &p, 25, 7).unwrap();
        let compact = CompactForest::from_smartcore(&model, 4).unwrap();
        let (xt, _) = toy(300, 2);
        let matrix = DenseMatrix::new(300, 4, xt.clone(), false).unwrap();
        let expected = model.predict(&matrix).unwrap();
        let got = compact.predict(&xt);
        for (e, g) in expected.iter().zip(&got) {
            assert_eq!(e.to_bits(), g.to_bits(), "{e} vs {g}");
        }
        // Candidate-like rows (only one column varies) take the grouped walk: same answers.
        let mut candidates = Vec::new();
        for k in 0..60 {
            let mut r = xt[..4].to_vec();
            r[0] = k as f64 / 6.0;
            candidates.extend(r);
        }
        let m = DenseMatrix::new(60, 4, candidates.clone(), false).unwrap();
        let expected_c = model.predict(&m).unwrap();
        for (e, g) in expected_c.iter().zip(compact.predict(&candidates)) {
            assert_eq!(e.to_bits(), g.to_bits(), "grouped walk: {e} vs {g}");
        }
        // The spread's mean is the same prediction.
        let spread = compact.predict_with_spread(&xt);
        assert_eq!(spread[0].0.to_bits(), expected[0].to_bits());
        // NaN goes right, as in smartcore.
        let mut nan_row = xt[..4].to_vec();
        nan_row[0] = f64::NAN;
        let m = DenseMatrix::new(1, 4, nan_row.clone(), false).unwrap();
        assert_eq!(
            model.predict(&m).unwrap()[0].to_bits(),
            compact.predict(&nan_row)[0].to_bits()
        );
    }

    #[test]
    fn depth_means_splits_like_scikit_learn() {
        let (x, y) = toy(3000, 3);
        for d in [1u16, 3, 15] {
            let p = ForestParams {
                n_trees: 4,
                max_depth: Some(d),
                ..Default::default()
            };
            let f = train(&x, 4, &y, &p).unwrap().forest;
            assert_eq!(f.max_depth(), d, "max_depth {d}");
        }
    }

    #[test]
    fn sharded_training_is_reproducible_and_uses_all_trees() {
        let (x, y) = toy(500, 4);
        let p = ForestParams {
            n_trees: 10,
            max_depth: Some(6),
            shards: 3,
            ..Default::default()
        };
        let a = train(&x, 4, &y, &p).unwrap();
        let b = train(&x, 4, &y, &p).unwrap();
        assert_eq!(a.forest, b.forest);
        assert_eq!(a.forest.n_trees(), 10);
        assert!((a.importances.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        // Feature 0 (quadratic, wide range) dominates the variance of y.
        let top = a
            .importances
            .iter()
            .enumerate()
            .max_by(|l, r| l.1.total_cmp(r.1))
            .unwrap()
            .0;
        assert_eq!(top, 0);
        let other = train(&x, 4, &y, &ForestParams { seed: 43, ..p }).unwrap();
        assert_ne!(a.forest, other.forest);
    }

    #[test]
    fn per_tree_outputs_average_to_the_prediction() {
        let (x, y) = toy(400, 5);
        let f = train(
            &x,
            4,
            &y,
            &ForestParams {
                n_trees: 12,
                max_depth: Some(5),
                ..Default::default()
            },
        )
        .unwrap()
        .forest;
        let row = &x[..4];
        let trees = f.tree_predictions(row);
        assert_eq!(trees.len(), 12);
        let mean = trees.iter().sum::<f64>() / 12.0;
        assert!((mean - f.predict(row)[0]).abs() < 1e-9);
        assert!(
            trees.iter().any(|t| (t - mean).abs() > 1e-12),
            "trees should disagree somewhat"
        );
    }

    #[test]
    fn bad_training_data_is_refused() {
        assert!(train(&[1.0, f64::NAN], 1, &[1.0, 2.0], &ForestParams::default()).is_err());
        assert!(train(&[1.0], 2, &[1.0], &ForestParams::default()).is_err());
        assert!(train(
            &[1.0],
            1,
            &[1.0],
            &ForestParams {
                n_trees: 0,
                ..Default::default()
            }
        )
        .is_err());
    }

    #[test]
    fn from_parts_refuses_out_of_range_nodes() {
        let (x, y) = toy(200, 6);
        let f = train(
            &x,
            4,
            &y,
            &ForestParams {
                n_trees: 2,
                max_depth: Some(4),
                ..Default::default()
            },
        )
        .unwrap()
        .forest;
        assert!(CompactForest::from_parts(4, f.trees.clone(), f.nodes.clone()).is_ok());
        let mut nodes = f.nodes.clone();
        nodes[0].left = nodes.len() as u32;
        assert!(CompactForest::from_parts(4, f.trees.clone(), nodes).is_err());
        let mut trees = f.trees.clone();
        trees[0].depth = 1;
        assert!(CompactForest::from_parts(4, trees, f.nodes.clone()).is_err());
    }
}
