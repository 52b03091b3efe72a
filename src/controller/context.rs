//! Everything a reconcile may touch: the Kubernetes client and event recorder, the telemetry
//! store and the model registry (connected on first use and reconnected after failures), the
//! metrics, the clock, and what this process remembers between reconciles.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::Semaphore;

use super::crd::{TrainingJob, TrainingJobStatus, API_VERSION};
use super::job::JobTemplate;
use super::metrics::Metrics;
use super::status::Failure;
use super::Error;
use crate::config::Global;
use crate::model::ModelDir;
use crate::registry::Registry;
use crate::telemetry::store::redact;
use crate::telemetry::Store;

/// The field manager of every status write (server-side apply).
pub const FIELD_MANAGER: &str = "inframind-controller";

/// How the controller connects and behaves.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Telemetry store URL.
    pub database_url: String,
    /// Local model directory (a cache of the registry with Redis; the registry without).
    pub models_dir: PathBuf,
    /// Redis holding the shared registry.
    pub redis_url: Option<String>,
    /// Key prefix in Redis.
    pub redis_prefix: String,
    /// Keys that sign trained models and verify loaded ones (none: unsigned, unchecked).
    pub model_keys: crate::signing::ModelKeys,
    /// Server-side apply field manager.
    pub field_manager: String,
    /// This process (pod name), for `status.runner` and events.
    pub identity: String,
    /// Template of training Jobs (execution mode `job`); `None` where it is unavailable.
    pub job_template: Option<JobTemplate>,
    /// First retry delay after a failure; doubled per consecutive failure.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// In-process trainings at once (others wait in phase Pending).
    pub max_concurrent_trainings: usize,
    /// Reconcile idle resources at least this often (does not retrain them).
    pub resync: Duration,
}

impl Settings {
    /// Settings from the shared command-line settings, with the defaults for the rest.
    pub fn from_global(global: &Global, identity: impl Into<String>) -> Settings {
        Settings {
            database_url: global.database_url.clone(),
            models_dir: global.models_dir.clone(),
            redis_url: global.redis_url.clone(),
            redis_prefix: global.redis_prefix.clone(),
            model_keys: Default::default(),
            field_manager: FIELD_MANAGER.to_string(),
            identity: identity.into(),
            job_template: None,
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
            max_concurrent_trainings: 1,
            resync: Duration::from_secs(3600),
        }
    }
}

/// A clock (tests pass a fixed one).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The last status this process wrote for an object, and the resource versions it knows to be
/// older than that write. The watch cache can lag behind our own writes; a reconcile that sees
/// one of those older versions uses what it wrote instead, so it never repeats a run.
#[derive(Debug, Default)]
struct Written {
    status: TrainingJobStatus,
    older: Vec<String>,
    latest: Option<String>,
}

/// Consecutive failures of one object, for backoff.
#[derive(Debug, Clone, Copy)]
struct Retry {
    failures: u32,
    generation: Option<i64>,
    not_before: DateTime<Utc>,
}

/// Shared by every reconcile.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Event recorder.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Settings.
    pub settings: Settings,
    store: tokio::sync::Mutex<Option<Store>>,
    registry: tokio::sync::Mutex<Option<Registry>>,
    slots: Arc<Semaphore>,
    clock: Clock,
    written: Mutex<HashMap<String, Written>>,
    retries: Mutex<HashMap<String, Retry>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The key of an object in this process's memory.
pub fn key(tj: &TrainingJob) -> String {
    format!(
        "{}/{}/{}",
        tj.namespace().unwrap_or_default(),
        tj.name_any(),
        tj.uid().unwrap_or_default()
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Context {
    /// A context over `client` with `settings`.
    pub fn new(client: Client, settings: Settings, metrics: Arc<Metrics>) -> Context {
        let reporter = Reporter {
            controller: settings.field_manager.clone(),
            instance: Some(settings.identity.clone()),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            slots: Arc::new(Semaphore::new(settings.max_concurrent_trainings.max(1))),
            settings,
            store: Default::default(),
            registry: Default::default(),
            clock: Arc::new(Utc::now),
            written: Default::default(),
            retries: Default::default(),
        }
    }

    /// The same context with another clock.
    pub fn with_clock(mut self, clock: Clock) -> Context {
        self.clock = clock;
        self
    }

    /// Now, by this context's clock.
    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// `status.runner` of runs in this process.
    pub fn runner(&self) -> String {
        format!(
            "{}{}",
            super::plan::CONTROLLER_RUNNER,
            self.settings.identity
        )
    }

    /// The telemetry store, connected on first use.
    pub async fn store(&self) -> Result<Store, Failure> {
        let mut s = self.store.lock().await;
        if let Some(store) = &*s {
            return Ok(store.clone());
        }
        let store = Store::connect(&self.settings.database_url)
            .await
            .map_err(|e| {
                Failure::StoreUnavailable(format!("{}: {e}", redact(&self.settings.database_url)))
            })?;
        *s = Some(store.clone());
        Ok(store)
    }

    /// The model registry, opened on first use.
    pub async fn registry(&self) -> Result<Registry, Failure> {
        let mut r = self.registry.lock().await;
        if let Some(reg) = &*r {
            return Ok(reg.clone());
        }
        let reg = Registry::open(
            ModelDir::new(&self.settings.models_dir).with_keys(self.settings.model_keys.clone()),
            self.settings.redis_url.as_deref(),
            &self.settings.redis_prefix,
        )
        .await
        .map_err(|e| Failure::RegistryUnavailable(e.to_string()))?;
        *r = Some(reg.clone());
        Ok(reg)
    }

    /// Forgets the registry connection so the next use reconnects.
    pub async fn reset_registry(&self) {
        *self.registry.lock().await = None;
    }

    /// A permit to train in this process (at most `max_concurrent_trainings` at once), if one is
    /// free now.
    pub fn try_training_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    /// Waits for a permit to train.
    pub async fn training_slot(&self) -> tokio::sync::OwnedSemaphorePermit {
        loop {
            if let Ok(p) = self.slots.clone().acquire_owned().await {
                return p;
            }
        }
    }

    /// The status to decide on: the object's, unless it is older than what this process wrote.
    pub fn effective_status(&self, tj: &TrainingJob) -> TrainingJobStatus {
        let observed = tj.status.clone().unwrap_or_default();
        let written = lock(&self.written);
        match (written.get(&key(tj)), tj.resource_version()) {
            (Some(w), Some(rv)) if w.older.contains(&rv) && w.latest.as_ref() != Some(&rv) => {
                tracing::debug!(
                    object = %key(tj),
                    resource_version = %rv,
                    "watch cache is behind this process's last status write; using that"
                );
                w.status.clone()
            }
            _ => observed,
        }
    }

    fn remember(&self, tj: &TrainingJob, status: &TrainingJobStatus, new_rv: Option<String>) {
        let mut written = lock(&self.written);
        let w = written.entry(key(tj)).or_default();
        if let Some(rv) = tj.resource_version() {
            w.older.push(rv);
        }
        if let Some(prev) = w.latest.take() {
            w.older.push(prev);
        }
        w.older.retain(|rv| Some(rv) != new_rv.as_ref());
        w.older.dedup();
        let excess = w.older.len().saturating_sub(32);
        w.older.drain(..excess);
        w.latest = new_rv;
        w.status = status.clone();
    }

    /// Writes `status` through the status subresource (server-side apply, one field manager).
    pub async fn write_status(
        &self,
        tj: &TrainingJob,
        status: &TrainingJobStatus,
    ) -> Result<TrainingJob, Error> {
        let ns = tj.namespace().unwrap_or_default();
        let name = tj.name_any();
        let api: Api<TrainingJob> = Api::namespaced(self.client.clone(), &ns);
        let patch = Patch::Apply(serde_json::json!({
            "apiVersion": API_VERSION,
            "kind": "TrainingJob",
            "status": status,
        }));
        let pp = PatchParams::apply(&self.settings.field_manager).force();
        let updated = api
            .patch_status(&name, &pp, &patch)
            .await
            .map_err(Error::kube(format!(
                "writing the status of TrainingJob {ns}/{name}"
            )))?;
        self.remember(tj, status, updated.resource_version());
        Ok(updated)
    }

    /// Publishes an event about `tj`; failures are logged, never fatal (events are advisory).
    pub async fn event(
        &self,
        tj: &TrainingJob,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let mut note = note;
        if note.len() > 1000 {
            let mut end = 1000;
            while !note.is_char_boundary(end) {
                end -= 1;
            }
            note.truncate(end);
        }
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &tj.object_ref(&())).await {
            tracing::warn!(object = %key(tj), reason, error = %e, "could not publish an event");
        }
    }

    /// How long `tj` must still wait after failures of this generation, if at all.
    pub fn backoff_wait(&self, tj: &TrainingJob, now: DateTime<Utc>) -> Option<Duration> {
        let retries = lock(&self.retries);
        let r = retries.get(&key(tj))?;
        if r.generation != tj.metadata.generation {
            return None;
        }
        (r.not_before - now).to_std().ok().filter(|d| !d.is_zero())
    }

    /// Records a failure of `tj` and returns the delay before the next attempt.
    pub fn record_failure(&self, tj: &TrainingJob, now: DateTime<Utc>) -> Duration {
        let mut retries = lock(&self.retries);
        let r = retries.entry(key(tj)).or_insert(Retry {
            failures: 0,
            generation: tj.metadata.generation,
            not_before: now,
        });
        if r.generation != tj.metadata.generation {
            r.failures = 0;
            r.generation = tj.metadata.generation;
        }
        r.failures = r.failures.saturating_add(1);
        let factor = 2u32.saturating_pow(r.failures.saturating_sub(1).min(16));
        let delay = self
            .settings
            .backoff_base
            .saturating_mul(factor)
            .min(self.settings.backoff_max);
        r.not_before = now + chrono::Duration::from_std(delay).unwrap_or_default();
        delay
    }

    /// Forgets failures of `tj` after a success.
    pub fn clear_failures(&self, tj: &TrainingJob) {
        lock(&self.retries).remove(&key(tj));
    }
}
