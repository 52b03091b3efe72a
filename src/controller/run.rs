//! One training run against the real store and registry: recent runs → fit → gates → store →
//! publish → promote, and the measurements behind the retraining triggers.
//!
//! Fitting is CPU-bound and runs on the blocking pool, so the controller keeps reconciling other
//! resources meanwhile. Each step's failure maps to a [`Failure`] the status can explain.

use chrono::{DateTime, Utc};

use super::context::Context;
use super::crd::{chrono_time, TrainingJob, TrainingJobSpec, TrainingJobStatus};
use super::gates::{self, ActiveComparison, Candidate};
use super::status::{run_metrics, Failure, Outcome, Promotion};
use super::triggers::{self, Observation};
use crate::error::Error as CrateError;
use crate::registry::Registry;
use crate::training::{fit, load_training_data, TrainingError};

fn store_failure(e: CrateError) -> Failure {
    Failure::StoreUnavailable(e.to_string())
}

/// Trains, evaluates, gates, stores, publishes and (when asked and allowed) promotes a model for
/// `spec`. Never touches the Kubernetes API.
pub async fn execute(ctx: &Context, spec: &TrainingJobSpec) -> Result<Outcome, Failure> {
    spec.validate().map_err(Failure::InvalidSpec)?;
    let store = ctx.store().await?;
    let registry = ctx.registry().await?;
    // The model to beat, read before training so the comparison is against what was active.
    let active = if spec.gates.must_beat_active {
        match registry.load_active().await {
            Ok(a) => a,
            Err(e) => {
                ctx.reset_registry().await;
                return Err(Failure::RegistryUnavailable(format!(
                    "reading the active model: {e}"
                )));
            }
        }
    } else {
        None
    };
    let training = spec.training_spec();
    let (warmup, window) = load_training_data(&store, &training)
        .await
        .map_err(store_failure)?;
    let now = ctx.now();
    let version = fresh_version(&registry, now).await;
    let job_spec = training.clone();
    let fitted = tokio::task::spawn_blocking(move || {
        let (model, meta) = fit(&warmup, &window, &job_spec, &version, now, &mut |_| {})?;
        let comparison = active.map(|(am, ameta)| {
            gates::compare_with_active(
                &am,
                &ameta,
                &warmup,
                &window,
                job_spec.split,
                job_spec.test_fraction,
                job_spec.params.seed,
            )
        });
        Ok::<_, TrainingError>((model, meta, comparison))
    })
    .await
    .map_err(|e| Failure::TrainingFailed(format!("the training task stopped: {e}")))?;
    let (model, mut meta, comparison) = fitted.map_err(|e| match e {
        e @ TrainingError::TooFewRuns { .. } => Failure::InsufficientData(e.to_string()),
        other => Failure::TrainingFailed(other.to_string()),
    })?;
    let verdicts = gates::evaluate(
        &spec.gates,
        &Candidate {
            mae_s: meta.metrics().mae_s,
            r2: meta.metrics().r2,
            rank_accuracy: meta.metrics().rank_accuracy,
            active: comparison.clone(),
        },
    );
    registry
        .dir()
        .save(&model, &mut meta)
        .map_err(|e| Failure::TrainingFailed(format!("storing {}: {e}", meta.version)))?;
    let published = match registry.publish(&model, &meta).await {
        Ok(()) => Ok(()),
        Err(e) => {
            ctx.reset_registry().await;
            Err(e.to_string())
        }
    };
    let compared_with = comparison
        .as_ref()
        .map(|c: &ActiveComparison| c.version.clone());
    let promotion = if gates::first_failure(&verdicts).is_some() {
        Promotion::GatesFailed
    } else if !spec.promote {
        Promotion::NotRequested
    } else if let Err(e) = &published {
        Promotion::Pending { error: e.clone() }
    } else {
        promote(
            ctx,
            &registry,
            &meta.version,
            spec.gates.must_beat_active.then_some(compared_with.clone()),
        )
        .await
    };
    Ok(Outcome {
        version: meta.version.clone(),
        metrics: run_metrics(&meta, comparison.as_ref()),
        gates: verdicts,
        compared_with,
        published,
        promotion,
    })
}

/// A version name for `now` not yet used here nor in the shared registry: another replica or a
/// training Job's pod (with its own empty models directory) may have trained in the same second.
async fn fresh_version(registry: &Registry, now: DateTime<Utc>) -> String {
    let base = crate::model::version_at(now);
    for k in 0u32.. {
        let v = if k == 0 {
            base.clone()
        } else {
            format!("{base}_{k}")
        };
        let local = registry.dir().path().join(format!("{v}.json")).exists()
            || registry
                .dir()
                .path()
                .join(format!("{v}.{}", crate::model::ARTIFACT_EXT))
                .exists();
        let shared = match registry.redis() {
            Some(r) => r.fetch_verified(&v).await.is_ok(),
            None => false,
        };
        if !local && !shared {
            return v;
        }
    }
    unreachable!("u32 versions per second")
}

/// Makes `version` active through the registry (atomic in Redis). With `expected_active`, only
/// if the active version is still the one the model was compared with.
pub async fn promote(
    ctx: &Context,
    registry: &Registry,
    version: &str,
    expected_active: Option<Option<String>>,
) -> Promotion {
    if let Some(expected) = expected_active {
        match registry.active_version().await {
            Ok(current) if current != expected && current.as_deref() != Some(version) => {
                return Promotion::ActiveChanged {
                    compared: expected,
                    now: current,
                };
            }
            Ok(_) => {}
            Err(e) => {
                ctx.reset_registry().await;
                return Promotion::Pending {
                    error: e.to_string(),
                };
            }
        }
    }
    match registry.promote(version).await {
        Ok(previous) => Promotion::Promoted {
            previous: previous.filter(|p| p != version),
        },
        Err(e) => {
            ctx.reset_registry().await;
            Promotion::Pending {
                error: e.to_string(),
            }
        }
    }
}

/// Retries a pending promotion of `version` (see [`promote`]).
pub async fn retry_promotion(
    ctx: &Context,
    spec: &TrainingJobSpec,
    status: &TrainingJobStatus,
    version: &str,
) -> Promotion {
    let registry = match ctx.registry().await {
        Ok(r) => r,
        Err(f) => {
            return Promotion::Pending {
                error: f.detail().to_string(),
            }
        }
    };
    let expected = spec
        .gates
        .must_beat_active
        .then(|| status.compared_with.clone());
    promote(ctx, &registry, version, expected).await
}

/// Measures what the triggers of `tj` look at (see `triggers`).
pub async fn observe_triggers(
    ctx: &Context,
    tj: &TrainingJob,
    status: &TrainingJobStatus,
    now: DateTime<Utc>,
) -> Result<Observation, Failure> {
    let t = tj.spec.triggers.clone().unwrap_or_default();
    let store = ctx.store().await?;
    let registry = ctx.registry().await?;
    let active = match registry.load_active().await {
        Ok(a) => a,
        Err(e) => {
            ctx.reset_registry().await;
            return Err(Failure::RegistryUnavailable(format!(
                "reading the active model: {e}"
            )));
        }
    };
    let active_created = active.as_ref().map(|(_, m)| m.created_at);
    let last_fired = status
        .last_trigger
        .as_ref()
        .map(|r| chrono_time(&r.fired_at));
    let created = tj
        .metadata
        .creation_timestamp
        .as_ref()
        .map(chrono_time)
        .unwrap_or(now);
    let since = triggers::since(active_created, last_fired, created);
    let new_runs = store.count_runs_since(since).await.map_err(store_failure)?;
    let active_version = active.as_ref().map(|(_, m)| m.version.clone());
    let drift = match active {
        Some((model, meta))
            if t.mae_drift_fraction > 0.0 && triggers::drift_armed(active_created, last_fired) =>
        {
            let (warmup, window) = load_training_data(&store, &tj.spec.training_spec())
                .await
                .map_err(store_failure)?;
            tokio::task::spawn_blocking(move || {
                triggers::measure_drift(&model, &meta, &warmup, &window)
            })
            .await
            .ok()
            .flatten()
        }
        _ => None,
    };
    Ok(Observation {
        active_version,
        since,
        new_runs,
        drift,
    })
}
