//! The model registry: where versioned artifacts live and which one is active.
//!
//! With Redis (`INFRAMIND_REDIS_URL`), the fleet shares artifacts and the pointer
//! `im:model:active` (see `redis.rs`); the local `models/` directory keeps a copy of everything
//! published. Without Redis (the embedded default), the directory alone is the registry and its
//! `ACTIVE`/`PREVIOUS` files are the pointer. `live.rs` keeps a running process's model current.
//! Whatever the registry, artifacts are verified with the directory's keys (`signing.rs`).

pub mod live;
pub mod redis;

use crate::error::{Error, Result};
use crate::model::{write_atomic, Model, ModelDir, ModelMeta};
pub use live::{LiveModel, WatchConfig};
pub use redis::{Keys, RedisRegistry};

/// Default Redis key prefix (the design's `im:`).
pub const DEFAULT_PREFIX: &str = "im";
const PREVIOUS_FILE: &str = "PREVIOUS";
/// The directory registry's promotion history, one record per line, oldest first.
const HISTORY_FILE: &str = "HISTORY";
/// Promotions and rollbacks kept.
pub const HISTORY_LEN: usize = 200;

/// One move of the active pointer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PointerMove {
    /// When.
    pub at: chrono::DateTime<chrono::Utc>,
    /// `promote` or `rollback`.
    pub action: String,
    /// The version made active.
    pub version: String,
    /// The version it replaced, if any.
    pub previous: Option<String>,
}

impl PointerMove {
    /// Parses a stored record (`<unix ms> <action> <version> <previous|->`).
    pub fn parse(line: &str) -> Option<PointerMove> {
        let mut f = line.split_whitespace();
        let at = chrono::DateTime::from_timestamp_millis(f.next()?.parse().ok()?)?;
        let action = f.next()?.to_string();
        let version = f.next()?.to_string();
        let previous = f.next().filter(|p| *p != "-").map(str::to_string);
        Some(PointerMove {
            at,
            action,
            version,
            previous,
        })
    }

    fn line(action: &str, version: &str, previous: Option<&str>) -> String {
        format!(
            "{} {action} {version} {}",
            chrono::Utc::now().timestamp_millis(),
            previous.unwrap_or("-")
        )
    }
}

/// Artifacts and the active pointer, in Redis when configured, else in the model directory.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: ModelDir,
    redis: Option<RedisRegistry>,
}

/// One version and whether it is active.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    /// The version's metadata.
    #[serde(flatten)]
    pub meta: ModelMeta,
    /// Whether it is the active version.
    pub active: bool,
}

impl Registry {
    /// The registry over `dir`, and over Redis at `redis_url` when given.
    pub async fn open(dir: ModelDir, redis_url: Option<&str>, prefix: &str) -> Result<Registry> {
        let redis = match redis_url {
            Some(url) => Some(RedisRegistry::connect(url, prefix, dir.keys().trust.clone()).await?),
            None => None,
        };
        Ok(Registry { dir, redis })
    }

    /// A registry over the directory only.
    pub fn local(dir: ModelDir) -> Registry {
        Registry { dir, redis: None }
    }

    /// The model directory.
    pub fn dir(&self) -> &ModelDir {
        &self.dir
    }

    /// The Redis side, if configured.
    pub fn redis(&self) -> Option<&RedisRegistry> {
        self.redis.as_ref()
    }

    /// Makes a saved version available to the fleet (a no-op without Redis).
    pub async fn publish(&self, model: &Model, meta: &ModelMeta) -> Result<()> {
        if let Some(r) = &self.redis {
            r.publish(&model.to_bytes(), meta).await?;
        }
        Ok(())
    }

    /// Makes `version` active after verifying it; returns the version it replaced.
    pub async fn promote(&self, version: &str) -> Result<Option<String>> {
        match &self.redis {
            Some(r) => {
                if let Err(in_redis) = r.fetch_verified(version).await {
                    // Saved locally but not yet (or not intact) in Redis: publish the local copy.
                    let (model, meta) = self.dir.load(version).map_err(|local| {
                        Error::artifact(
                            r.keys().artifact(version),
                            format!("{in_redis}; and no usable local copy: {local}"),
                        )
                    })?;
                    r.publish(&model.to_bytes(), &meta).await?;
                }
                r.promote(version).await
            }
            None => {
                self.dir.load(version)?;
                let previous = self.active_version().await?;
                if previous.as_deref() == Some(version) {
                    return Ok(previous);
                }
                if let Some(p) = &previous {
                    write_atomic(&self.dir.path().join(PREVIOUS_FILE), p.as_bytes())?;
                }
                self.dir.pin(version)?;
                self.record(&PointerMove::line("promote", version, previous.as_deref()))?;
                Ok(previous)
            }
        }
    }

    /// Restores the previously active version; returns it.
    pub async fn rollback(&self) -> Result<String> {
        match &self.redis {
            Some(r) => r.rollback().await,
            None => {
                let prev_path = self.dir.path().join(PREVIOUS_FILE);
                let previous = std::fs::read_to_string(&prev_path)
                    .map(|s| s.trim().to_string())
                    .map_err(|_| Error::Input("no previous version to roll back to".into()))?;
                self.dir.load(&previous)?;
                let current = self.active_version().await?;
                write_atomic(
                    &self.dir.path().join(ModelDir::ACTIVE_FILE),
                    previous.as_bytes(),
                )?;
                match &current {
                    Some(c) => write_atomic(&prev_path, c.as_bytes())?,
                    None => {
                        std::fs::remove_file(&prev_path).map_err(Error::io("removing PREVIOUS"))?
                    }
                }
                self.record(&PointerMove::line(
                    "rollback",
                    &previous,
                    current.as_deref(),
                ))?;
                Ok(previous)
            }
        }
    }

    /// Appends a record to the directory's history, keeping the newest [`HISTORY_LEN`].
    fn record(&self, line: &str) -> Result<()> {
        let path = self.dir.path().join(HISTORY_FILE);
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let mut lines: Vec<&str> = old.lines().filter(|l| !l.trim().is_empty()).collect();
        lines.push(line);
        let keep = &lines[lines.len().saturating_sub(HISTORY_LEN)..];
        Ok(write_atomic(
            &path,
            format!("{}\n", keep.join("\n")).as_bytes(),
        )?)
    }

    /// Promotions and rollbacks, newest first (unreadable records are skipped).
    pub async fn history(&self) -> Result<Vec<PointerMove>> {
        let lines = match &self.redis {
            Some(r) => r.history_lines().await?,
            None => {
                let text =
                    std::fs::read_to_string(self.dir.path().join(HISTORY_FILE)).unwrap_or_default();
                text.lines().rev().map(str::to_string).collect()
            }
        };
        Ok(lines.iter().filter_map(|l| PointerMove::parse(l)).collect())
    }

    /// The active version: Redis's pointer, or the directory's pinned or newest valid version.
    pub async fn active_version(&self) -> Result<Option<String>> {
        match &self.redis {
            Some(r) => r.active().await,
            None => Ok(match self.dir.pinned()? {
                Some(v) => Some(v),
                None => self.dir.latest_valid()?.map(|(_, m)| m.version),
            }),
        }
    }

    /// The active model, verified.
    pub async fn load_active(&self) -> Result<Option<(Model, ModelMeta)>> {
        match &self.redis {
            Some(r) => match r.active().await? {
                Some(v) => r.fetch_verified(&v).await.map(Some),
                None => Ok(None),
            },
            None => Ok(self.dir.active()?),
        }
    }

    /// Every version with its active flag, oldest first.
    pub async fn list(&self) -> Result<Vec<Listed>> {
        let active = self.active_version().await?;
        let metas = match &self.redis {
            Some(r) => r.list().await?,
            None => self.dir.list()?,
        };
        Ok(metas
            .into_iter()
            .map(|meta| Listed {
                active: Some(&meta.version) == active.as_ref(),
                meta,
            })
            .collect())
    }
}
