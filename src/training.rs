//! Training: recent runs → features → forest → evaluation → versioned artifact.
//!
//! [`fit`] is pure (data in, model out); [`load_training_data`] and [`train_and_save`] are the
//! edges that read the store and write the model directory.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::evaluation::{split_indices, Metrics, Split};
use crate::features::{
    build_dataset, Dataset, Encodings, FEATURE_NAMES, FEATURE_SCHEMA_VERSION, N_FEATURES,
};
use crate::forest::ForestError;
use crate::forest::{train, ForestParams, TrainedForest};
use crate::model::{Model, ModelDir, ModelMeta, TrainingWindow, ARTIFACT_FORMAT_VERSION};
use crate::optimizer::calibration::calibrate;
use crate::record::RunRecord;
use crate::telemetry::Store;

/// Why training could not produce a model.
#[derive(Debug, thiserror::Error)]
pub enum TrainingError {
    /// The window holds too few successful runs to learn from.
    #[error("too few successful runs to train: {successes} (need at least {needed}){}", pipeline.as_ref().map(|p| format!(" for pipeline {p}")).unwrap_or_default())]
    TooFewRuns {
        /// Successful runs found.
        successes: usize,
        /// Successful runs needed.
        needed: usize,
        /// The pipeline trained on, if one.
        pipeline: Option<String>,
    },
    /// The forest could not be grown.
    #[error(transparent)]
    Forest(#[from] ForestError),
    /// The blocking training task stopped before it answered.
    #[error("the training task stopped: {0}")]
    TaskStopped(String),
}

/// Fewest successful runs a model is trained on.
pub const MIN_TRAINING_ROWS: usize = 20;
/// Earlier successful runs per pipeline read to seed the history features of the window's
/// first rows: the lookback, twice over, so that runs still building when the window began do
/// not push a known run out of reach.
pub const WARMUP_RUNS: usize = 2 * crate::features::HISTORY_LOOKBACK;

/// What to train on and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainingSpec {
    /// Train on one pipeline only, or all.
    pub pipeline: Option<String>,
    /// Most recent successful runs to use.
    pub limit: usize,
    /// Split the served model is fitted on (the other is evaluated too).
    pub split: Split,
    /// Fraction held out.
    pub test_fraction: f64,
    /// Forest hyperparameters.
    pub params: ForestParams,
}

impl Default for TrainingSpec {
    fn default() -> Self {
        TrainingSpec {
            pipeline: None,
            limit: 500,
            split: Split::Random,
            test_fraction: 0.2,
            params: ForestParams::default(),
        }
    }
}

/// Where training is, for progress reporting.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// Feature rows built.
    Features {
        /// Number of rows.
        rows: usize,
    },
    /// Fitting a forest on one split.
    Fitting(Split),
    /// Scoring a forest on one split.
    Evaluated(Split, Metrics),
}

/// Reads the window (last `limit` successful runs) and, per pipeline, the runs just before it.
pub async fn load_training_data(
    store: &Store,
    spec: &TrainingSpec,
) -> Result<(Vec<RunRecord>, Vec<RunRecord>)> {
    let window = store
        .recent_successful(spec.pipeline.as_deref(), spec.limit)
        .await?;
    let mut first: std::collections::BTreeMap<&str, DateTime<Utc>> = Default::default();
    for r in &window {
        first.entry(r.pipeline.as_str()).or_insert(r.started_at);
    }
    let mut warmup = Vec::new();
    for (pipeline, start) in first {
        warmup.extend(
            store
                .successful_before(pipeline, start, WARMUP_RUNS)
                .await?,
        );
    }
    Ok((warmup, window))
}

fn fit_split(
    data: &Dataset,
    split: Split,
    spec: &TrainingSpec,
) -> std::result::Result<(TrainedForest, Metrics, Dataset), TrainingError> {
    let (train_idx, test_idx) = split_indices(
        &data.started_at,
        split,
        spec.test_fraction,
        spec.params.seed,
    );
    let train_set = data.select(&train_idx);
    let test_set = data.select(&test_idx);
    let trained = train(&train_set.x, N_FEATURES, &train_set.y, &spec.params)?;
    let pred = trained.forest.predict(&test_set.x);
    let metrics = Metrics::score(&test_set.x, &test_set.y, &pred, train_set.len());
    Ok((trained, metrics, test_set))
}

/// Fits and evaluates a model on `window` (with `warmup` feeding the history features).
pub fn fit(
    warmup: &[RunRecord],
    window: &[RunRecord],
    spec: &TrainingSpec,
    version: &str,
    now: DateTime<Utc>,
    progress: &mut dyn FnMut(Stage),
) -> std::result::Result<(Model, ModelMeta), TrainingError> {
    let successes = window.iter().filter(|r| r.success).count();
    if successes < MIN_TRAINING_ROWS {
        return Err(TrainingError::TooFewRuns {
            successes,
            needed: MIN_TRAINING_ROWS,
            pipeline: spec.pipeline.clone(),
        });
    }
    let encodings = Encodings::fit(window);
    let data = build_dataset(&encodings, warmup, window);
    progress(Stage::Features { rows: data.len() });
    let other = match spec.split {
        Split::Random => Split::Temporal,
        Split::Temporal => Split::Random,
    };
    progress(Stage::Fitting(spec.split));
    let (served, served_metrics, served_test) = fit_split(&data, spec.split, spec)?;
    progress(Stage::Evaluated(spec.split, served_metrics));
    progress(Stage::Fitting(other));
    let (other_forest, other_metrics, other_test) = fit_split(&data, other, spec)?;
    progress(Stage::Evaluated(other, other_metrics));
    // The optimizer's confidence, checked on the temporal holdout: how the model is used.
    let calibration = Some(match spec.split {
        Split::Temporal => calibrate(&served.forest, &served_test),
        Split::Random => calibrate(&other_forest.forest, &other_test),
    });
    let (random_holdout, temporal_holdout) = match spec.split {
        Split::Random => (served_metrics, other_metrics),
        Split::Temporal => (other_metrics, served_metrics),
    };
    let mut importances: Vec<(String, f64)> = FEATURE_NAMES
        .iter()
        .map(|n| n.to_string())
        .zip(served.importances.iter().copied())
        .collect();
    importances.sort_by(|a, b| b.1.total_cmp(&a.1));
    let model = Model {
        version: version.to_string(),
        forest: served.forest,
        encodings: encodings.clone(),
    };
    let meta = ModelMeta {
        version: version.to_string(),
        format_version: ARTIFACT_FORMAT_VERSION,
        feature_schema_version: FEATURE_SCHEMA_VERSION,
        feature_names: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
        created_at: now,
        hyperparameters: spec.params.clone(),
        split: spec.split,
        random_holdout,
        temporal_holdout,
        calibration,
        importances,
        window: TrainingWindow {
            pipeline: spec.pipeline.clone(),
            from: data.started_at.iter().min().copied(),
            to: data.started_at.iter().max().copied(),
            rows: data.len(),
        },
        encodings,
        artifact: String::new(),
        sha256: String::new(),
        bytes: 0,
        signature: None,
    };
    Ok((model, meta))
}

/// Loads data, fits, evaluates and saves a new version into `dir`.
pub async fn train_and_save(
    store: &Store,
    dir: &ModelDir,
    spec: &TrainingSpec,
    now: DateTime<Utc>,
    progress: &mut (dyn FnMut(Stage) + Send),
) -> Result<(Model, ModelMeta)> {
    let (warmup, window) = load_training_data(store, spec).await?;
    let version = dir.next_version(now);
    let spec_owned = spec.clone();
    // Training is CPU-bound: keep it off the async workers.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let job = tokio::task::spawn_blocking(move || {
        fit(&warmup, &window, &spec_owned, &version, now, &mut |s| {
            let _ = tx.send(s);
        })
    });
    while let Some(stage) = rx.recv().await {
        progress(stage);
    }
    let (model, mut meta) = job
        .await
        .map_err(|e| TrainingError::TaskStopped(e.to_string()))??;
    dir.save(&model, &mut meta)?;
    Ok((model, meta))
}

/// The served split's holdout rows as (predicted, actual) durations: the rows `fit` held out of
/// `window` (same split, fraction and seed), predicted by the model it trained. For the
/// predicted-vs-actual plot `inframind train` writes next to the artifact.
pub fn holdout_pairs(
    model: &Model,
    meta: &ModelMeta,
    warmup: &[RunRecord],
    window: &[RunRecord],
    spec: &TrainingSpec,
) -> Vec<(f64, f64)> {
    let data = build_dataset(&model.encodings, warmup, window);
    let (_, test_idx) = split_indices(
        &data.started_at,
        meta.split,
        spec.test_fraction,
        spec.params.seed,
    );
    let test = data.select(&test_idx);
    let predicted = model.forest.predict(&test.x);
    predicted.into_iter().zip(test.y).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::simulate::demo_runs;

    pub(crate) fn small_model(rows: usize) -> (Model, ModelMeta) {
        let now = DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let runs: Vec<_> = demo_runs(rows, now, 3)
            .into_iter()
            .filter(|r| r.success)
            .collect();
        let spec = TrainingSpec {
            params: ForestParams {
                n_trees: 20,
                max_depth: Some(10),
                ..Default::default()
            },
            ..Default::default()
        };
        fit(
            &[],
            &runs,
            &spec,
            "model_v20261101_000000",
            now,
            &mut |_| {},
        )
        .unwrap()
    }

    #[test]
    fn a_model_trained_on_simulated_builds_is_useful() {
        let (model, meta) = small_model(900);
        assert_eq!(model.forest.n_trees(), 20);
        assert!(
            meta.random_holdout.r2 > 0.7,
            "random holdout {:?}",
            meta.random_holdout
        );
        assert!(
            meta.temporal_holdout.r2 > 0.6,
            "temporal holdout {:?}",
            meta.temporal_holdout
        );
        assert_eq!(meta.importances.len(), N_FEATURES);
        assert!(meta.importances.windows(2).all(|w| w[0].1 >= w[1].1));
        // The confidence calibration is measured on the temporal holdout and kept in the JSON.
        let c = meta.calibration.clone().expect("a calibration table");
        eprintln!(
            "calibration on simulated builds: {}",
            serde_json::to_string(&c).unwrap()
        );
        assert!(c.pairs > 50, "{c:?}");
        assert!(c.confident_observed.unwrap() >= 0.8, "{c:?}");
        assert_eq!(c.bins.iter().map(|b| b.pairs).sum::<usize>(), c.pairs);
        let json = serde_json::to_value(&meta).unwrap();
        assert_eq!(json["calibration"]["pairs"], c.pairs);
    }

    #[test]
    fn too_few_runs_is_a_clear_error() {
        let now = Utc::now();
        let runs = demo_runs(5, now, 1);
        let err = fit(&[], &runs, &TrainingSpec::default(), "v", now, &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("too few successful runs"), "{err}");
    }

    #[test]
    fn artifact_round_trips_and_refuses_damage() {
        let (model, _) = small_model(300);
        let bytes = model.to_bytes();
        let sha = crate::model::sha256_hex(&bytes);
        let back = Model::from_bytes(&bytes, Some(&sha)).unwrap();
        assert_eq!(back.forest, model.forest);
        assert_eq!(back.encodings, model.encodings);
        // Truncated.
        let cut = &bytes[..bytes.len() - 20];
        assert!(Model::from_bytes(cut, None)
            .unwrap_err()
            .contains("truncated"));
        // Altered: checksum catches it; without a checksum the structure checks still hold.
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n - 30] ^= 0xff;
        assert!(Model::from_bytes(&bad, Some(&sha))
            .unwrap_err()
            .contains("checksum mismatch"));
        assert!(Model::from_bytes(b"garbage-garbage-garbage", None)
            .unwrap_err()
            .contains("magic"));
    }

    #[test]
    fn model_dir_saves_lists_loads_and_refuses_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let md = ModelDir::new(dir.path());
        let (model, mut meta) = small_model(300);
        md.save(&model, &mut meta).unwrap();
        let t = meta.created_at;
        assert_ne!(
            md.next_version(t),
            meta.version,
            "a taken version is not reused"
        );
        assert_eq!(md.list().unwrap().len(), 1);
        let (loaded, m2) = md.load(&meta.version).unwrap();
        assert_eq!(loaded.forest, model.forest);
        assert_eq!(m2.sha256, meta.sha256);
        let artifact = dir.path().join(&meta.artifact);
        let mut bytes = std::fs::read(&artifact).unwrap();
        bytes.truncate(bytes.len() / 2);
        std::fs::write(&artifact, &bytes).unwrap();
        let err = md.load(&meta.version).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
        assert!(md.latest_valid().unwrap().is_none());
    }

    #[test]
    fn a_forged_artifact_with_a_recomputed_checksum_is_refused_when_a_key_is_configured() {
        use crate::model::sha256_hex;
        use crate::signing::{ModelKeys, Signer};
        let dir = tempfile::tempdir().unwrap();
        let trainer = Signer::from_seed([3; 32]);
        let public = trainer.public();
        let signed = ModelDir::new(dir.path()).with_keys(ModelKeys::signing(trainer));
        let (model, mut meta) = small_model(300);
        signed.save(&model, &mut meta).unwrap();
        assert!(meta.signature.is_some(), "the trainer signs on save");
        let replica = ModelDir::new(dir.path()).with_keys(ModelKeys::verifying(public));
        replica
            .load(&meta.version)
            .expect("a signed artifact verifies");

        // Someone who can write the directory (or Redis) but has no key alters the forest and
        // recomputes the checksum: the checksum agrees, the signature does not.
        let artifact = dir.path().join(&meta.artifact);
        let mut forged = model.clone();
        forged.forest = small_model(301).0.forest;
        let bytes = forged.to_bytes();
        std::fs::write(&artifact, &bytes).unwrap();
        let mut forged_meta = meta.clone();
        forged_meta.sha256 = sha256_hex(&bytes);
        forged_meta.bytes = bytes.len() as u64;
        std::fs::write(
            dir.path().join(format!("{}.json", meta.version)),
            serde_json::to_vec(&forged_meta).unwrap(),
        )
        .unwrap();
        let err = replica.load(&meta.version).unwrap_err().to_string();
        assert!(err.contains("signature does not verify"), "{err}");
        assert!(replica.latest_valid().unwrap().is_none());
        // Without a key configured (quickstart) nothing is checked beyond the checksum.
        ModelDir::new(dir.path()).load(&meta.version).unwrap();

        // Dropping the signature does not help either: a configured verifier refuses unsigned.
        forged_meta.signature = None;
        std::fs::write(
            dir.path().join(format!("{}.json", meta.version)),
            serde_json::to_vec(&forged_meta).unwrap(),
        )
        .unwrap();
        let err = replica.load(&meta.version).unwrap_err().to_string();
        assert!(err.contains("not signed"), "{err}");
    }
}
