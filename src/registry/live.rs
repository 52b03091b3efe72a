//! Keeping a running process on the active model: an atomically swappable slot, and a watcher
//! that follows the registry (Redis pub/sub with polling as a fallback, or the model directory).
//!
//! Requests read the slot without locks or I/O; a swap never disturbs a request in flight
//! (it keeps the `Arc` it loaded). When Redis is unreachable the process keeps serving what it
//! has, logs once per outage, and reconnects with exponential backoff.
//!
//! With Redis, a process only ever serves the active version (or nothing, the cold-start path):
//! never another version because it happens to be in the local directory. At start-up it takes
//! the active version from Redis, or that version's local copy when Redis's copy does not verify,
//! or, when Redis is unreachable, the last active version it was given (pinned in the directory
//! with each swap). A refused version is tried again at the next event or poll, so a repaired
//! artifact is picked up without a restart.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use futures::StreamExt;

use super::redis::RedisRegistry;
use crate::error::{Error, Result};
use crate::model::{Model, ModelDir, ModelMeta};

/// The model a process serves right now.
#[derive(Debug, Default)]
pub struct LiveModel {
    current: ArcSwapOption<Model>,
    swaps: AtomicU64,
    refusals: AtomicU64,
}

impl LiveModel {
    /// An empty slot (the cold-start path until a model arrives).
    pub fn new() -> LiveModel {
        LiveModel::default()
    }

    /// The model to use for this request, if any.
    pub fn get(&self) -> Option<Arc<Model>> {
        self.current.load_full()
    }

    /// The version being served.
    pub fn version(&self) -> Option<String> {
        self.current.load().as_ref().map(|m| m.version.clone())
    }

    /// Replaces the model atomically.
    pub fn set(&self, model: Model) {
        tracing::info!(version = %model.version, "serving model");
        self.current.store(Some(Arc::new(model)));
        self.swaps.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times the model was swapped.
    pub fn swaps(&self) -> u64 {
        self.swaps.load(Ordering::Relaxed)
    }

    /// How many artifacts were refused (checksum or format).
    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }
}

/// Where the watcher looks for the active version.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Local artifacts (fallback at start-up, and the registry itself without Redis).
    pub dir: ModelDir,
    /// Redis URL, if the fleet shares a registry.
    pub redis_url: Option<String>,
    /// Redis key prefix.
    pub prefix: String,
    /// How often to poll besides listening for change events.
    pub poll: Duration,
}

/// What Redis says should be served at start-up.
enum Active {
    /// Nothing is active yet.
    None,
    /// The active version, verified.
    Model(Model),
    /// The active version, whose artifact in Redis was refused.
    Refused(String, Error),
}

/// Loads what may be served at start-up (see the module's doc); else nothing (cold start).
/// Never fails.
pub async fn bootstrap(live: &LiveModel, cfg: &WatchConfig) {
    let Some(url) = &cfg.redis_url else {
        // The directory is the registry: its pinned version, or its newest valid one.
        return match cfg.dir.active() {
            Ok(Some((model, _))) => live.set(model),
            Ok(None) => cold_start(cfg, "no model in the directory"),
            Err(e) => {
                live.refusals.fetch_add(1, Ordering::Relaxed);
                cold_start(cfg, &e.to_string())
            }
        };
    };
    let wanted = match tokio::time::timeout(Duration::from_secs(5), load_from_redis(url, cfg)).await
    {
        Ok(Ok(Active::Model(model))) => return live.set(model),
        Ok(Ok(Active::None)) => return cold_start(cfg, "no active model in the registry yet"),
        Ok(Ok(Active::Refused(version, e))) => {
            live.refusals.fetch_add(1, Ordering::Relaxed);
            tracing::error!(%version, error = %e, "refusing the active model from the registry; trying its local copy");
            version
        }
        Ok(Err(e)) => match cfg.dir.pinned() {
            Ok(Some(v)) => {
                tracing::warn!(error = %e, version = %v, "model registry unavailable at start-up; serving the last active version from the local copy");
                v
            }
            _ => {
                return cold_start(
                    cfg,
                    &format!("model registry unavailable ({e}) and no active version known"),
                )
            }
        },
        Err(_) => match cfg.dir.pinned() {
            Ok(Some(v)) => {
                tracing::warn!(version = %v, "model registry timed out at start-up; serving the last active version from the local copy");
                v
            }
            _ => return cold_start(cfg, "model registry timed out and no active version known"),
        },
    };
    // Only the active version itself, never a neighbour that happens to be local.
    match cfg.dir.load(&wanted) {
        Ok((model, _)) => live.set(model),
        Err(e) => {
            live.refusals.fetch_add(1, Ordering::Relaxed);
            cold_start(cfg, &format!("no usable local copy of {wanted}: {e}"))
        }
    }
}

fn cold_start(cfg: &WatchConfig, why: &str) {
    tracing::info!(dir = %cfg.dir.path().display(), reason = why, "no model to serve: cold-start path until one is active and verifies");
}

async fn load_from_redis(url: &str, cfg: &WatchConfig) -> Result<Active> {
    let reg = RedisRegistry::connect(url, &cfg.prefix, cfg.dir.keys().trust.clone()).await?;
    let Some(v) = reg.active().await? else {
        return Ok(Active::None);
    };
    match reg.fetch(&v).await {
        Ok((model, meta, bytes)) => {
            keep_local_copy(&cfg.dir, &bytes, &meta);
            Ok(Active::Model(model))
        }
        Err(e @ Error::Artifact { .. }) => Ok(Active::Refused(v, e)),
        Err(e) => Err(e),
    }
}

/// Best effort: a restarted container can then serve the same version without Redis. The bytes
/// are kept as fetched, so the copy carries the trainer's signature and verifies on its own.
fn keep_local_copy(dir: &ModelDir, bytes: &[u8], meta: &ModelMeta) {
    if dir.load(&meta.version).is_err() {
        if let Err(e) = dir.store(bytes, meta) {
            tracing::debug!(error = %e, "could not keep a local copy of the model");
        }
    }
    if dir.pinned().ok().flatten().as_deref() != Some(meta.version.as_str()) {
        if let Err(e) = dir.pin(&meta.version) {
            tracing::debug!(error = %e, "could not record the active version locally");
        }
    }
}

/// Follows the registry until the process ends.
pub fn spawn(live: Arc<LiveModel>, cfg: WatchConfig) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        match cfg.redis_url.clone() {
            Some(url) => watch_redis(&live, &cfg, &url).await,
            None => watch_dir(&live, &cfg).await,
        }
    })
}

async fn watch_dir(live: &LiveModel, cfg: &WatchConfig) {
    let mut tick = tokio::time::interval(cfg.poll);
    loop {
        tick.tick().await;
        let dir = cfg.dir.clone();
        let current = live.version();
        let found = tokio::task::spawn_blocking(move || match dir.pinned() {
            Ok(Some(v)) if Some(&v) != current.as_ref() => Some(dir.load(&v)),
            Ok(None) => match dir.list() {
                Ok(l) if l.last().map(|m| &m.version) != current.as_ref() => {
                    dir.latest_valid().transpose()
                }
                _ => None,
            },
            _ => None,
        })
        .await
        .ok()
        .flatten();
        match found {
            Some(Ok((model, _))) => live.set(model),
            Some(Err(e)) => {
                live.refusals.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "refusing model; keeping the one in memory");
            }
            None => {}
        }
    }
}

struct Outage {
    down: bool,
    backoff: Duration,
    /// Versions refused so far: refused again quietly (they are retried at every event or poll).
    refused: HashSet<String>,
}

async fn watch_redis(live: &LiveModel, cfg: &WatchConfig, url: &str) {
    let mut outage = Outage {
        down: false,
        backoff: Duration::from_millis(250),
        refused: HashSet::new(),
    };
    loop {
        let err = session(live, cfg, url, &mut outage).await;
        if !outage.down {
            tracing::warn!(error = %err, serving = ?live.version(), "model registry unreachable; serving the model in memory until it returns");
            outage.down = true;
        }
        tokio::time::sleep(outage.backoff).await;
        outage.backoff = (outage.backoff * 2).min(Duration::from_secs(30));
    }
}

/// One connected stretch: returns the error that ended it.
async fn session(live: &LiveModel, cfg: &WatchConfig, url: &str, outage: &mut Outage) -> Error {
    let redis_err = |context: &str| {
        let context = context.to_string();
        move |source| Error::Redis { context, source }
    };
    let reg = match RedisRegistry::connect(url, &cfg.prefix, cfg.dir.keys().trust.clone()).await {
        Ok(r) => r,
        Err(e) => return e,
    };
    let pubsub =
        match tokio::time::timeout(Duration::from_secs(2), reg.client().get_async_pubsub()).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return redis_err("opening a pub/sub connection")(e),
            Err(_) => return Error::Input("timed out opening a pub/sub connection".into()),
        };
    let mut pubsub = pubsub;
    if let Err(e) = pubsub.subscribe(reg.keys().channel()).await {
        return redis_err("subscribing to model events")(e);
    }
    let mut events = pubsub.into_on_message();
    if outage.down {
        tracing::info!("model registry reachable again");
        outage.down = false;
    }
    outage.backoff = Duration::from_millis(250);
    let mut tick = tokio::time::interval(cfg.poll);
    loop {
        let wanted = tokio::select! {
            msg = events.next() => match msg {
                Some(m) => match m.get_payload::<String>() {
                    Ok(v) => Some(v),
                    Err(e) => return redis_err("reading a model event")(e),
                },
                None => return Error::Input("model event subscription closed".into()),
            },
            _ = tick.tick() => match reg.active().await {
                Ok(v) => v,
                Err(e) => return e,
            },
        };
        if let Some(v) = wanted {
            if Some(&v) != live.version().as_ref() {
                match reg.fetch(&v).await {
                    Ok((model, meta, bytes)) => {
                        keep_local_copy(&cfg.dir, &bytes, &meta);
                        outage.refused.remove(&v);
                        live.set(model);
                    }
                    Err(e @ Error::Redis { .. }) => return e,
                    Err(e) => {
                        live.refusals.fetch_add(1, Ordering::Relaxed);
                        if outage.refused.insert(v.clone()) {
                            tracing::error!(version = %v, error = %e, serving = ?live.version(), "refusing model from the registry; keeping the one in memory and retrying at the next event or poll");
                        } else {
                            tracing::debug!(version = %v, error = %e, "model still refused");
                        }
                    }
                }
            }
        }
    }
}
