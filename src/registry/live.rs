//! Keeping a running process on the active model: an atomically swappable slot, and a watcher
//! that follows the registry (Redis pub/sub with polling as a fallback, or the model directory).
//!
//! Requests read the slot without locks or I/O; a swap never disturbs a request in flight
//! (it keeps the `Arc` it loaded). When Redis is unreachable the process keeps serving what it
//! has, logs once per outage, and reconnects with exponential backoff.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use futures::StreamExt;

use super::redis::RedisRegistry;
use crate::error::{Error, Result};
use crate::model::{Model, ModelDir};

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

/// Loads whatever can be served at start-up: Redis's active model, else the newest valid
/// local artifact, else nothing (cold start). Never fails.
pub async fn bootstrap(live: &LiveModel, cfg: &WatchConfig) {
    if let Some(url) = &cfg.redis_url {
        match tokio::time::timeout(
            Duration::from_secs(5),
            load_from_redis(url, &cfg.prefix, &cfg.dir),
        )
        .await
        {
            Ok(Ok(Some(model))) => return live.set(model),
            Ok(Ok(None)) => tracing::info!("no active model in the registry yet"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "model registry unavailable at start-up; trying local artifacts")
            }
            Err(_) => {
                tracing::warn!("model registry timed out at start-up; trying local artifacts")
            }
        }
    }
    let local = if cfg.redis_url.is_some() {
        cfg.dir.latest_valid()
    } else {
        cfg.dir.active()
    };
    match local {
        Ok(Some((model, _))) => live.set(model),
        Ok(None) => {
            tracing::info!(dir = %cfg.dir.path().display(), "no model available: cold-start path until one is promoted")
        }
        Err(e) => {
            tracing::warn!(error = %e, "no usable local model: cold-start path until one is promoted")
        }
    }
}

async fn load_from_redis(url: &str, prefix: &str, dir: &ModelDir) -> Result<Option<Model>> {
    let reg = RedisRegistry::connect(url, prefix).await?;
    match reg.active().await? {
        Some(v) => {
            let (model, meta) = reg.fetch_verified(&v).await?;
            keep_local_copy(dir, &model, meta);
            Ok(Some(model))
        }
        None => Ok(None),
    }
}

/// Best effort: a restarted container can then serve without Redis.
fn keep_local_copy(dir: &ModelDir, model: &Model, mut meta: crate::model::ModelMeta) {
    if dir.meta(&meta.version).is_err() {
        if let Err(e) = dir.save(model, &mut meta) {
            tracing::debug!(error = %e, "could not keep a local copy of the model");
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
    let reg = match RedisRegistry::connect(url, &cfg.prefix).await {
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
            if Some(&v) != live.version().as_ref() && !outage.refused.contains(&v) {
                match reg.fetch_verified(&v).await {
                    Ok((model, meta)) => {
                        keep_local_copy(&cfg.dir, &model, meta);
                        live.set(model);
                    }
                    Err(e @ Error::Redis { .. }) => return e,
                    Err(e) => {
                        live.refusals.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(version = %v, error = %e, "refusing model from the registry; keeping the one in memory");
                        outage.refused.insert(v);
                    }
                }
            }
        }
    }
}
