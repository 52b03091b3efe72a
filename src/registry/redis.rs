//! The Redis side of the registry: artifacts, metadata, the active pointer and change events.
//!
//! Keys (prefix `im` by default, as designed): `im:model:active` (the active version),
//! `im:model:previous` (what rollback restores), `im:model:<version>` (artifact bytes),
//! `im:model:<version>:meta` (metrics JSON), `im:models` (sorted set of versions by creation
//! time). Promotion and rollback run as Lua scripts, so the pointer can never be left at a
//! version whose artifact is missing, and each publishes the new version on `im:model:events`.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;

use crate::error::{Error, Result};
use crate::model::{Model, ModelMeta};

/// Refuses to move the pointer unless both the artifact and its metadata exist.
const PROMOTE: &str = r#"
if redis.call('EXISTS', KEYS[3]) == 0 or redis.call('EXISTS', KEYS[4]) == 0 then
  return redis.error_reply('artifact or metadata of ' .. ARGV[1] .. ' is missing')
end
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then return current end
if current then redis.call('SET', KEYS[2], current) end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[1])
return current or ''
"#;

/// Swaps active and previous, after checking the previous artifact still exists.
const ROLLBACK: &str = r#"
local previous = redis.call('GET', KEYS[2])
if not previous then return redis.error_reply('no previous version to roll back to') end
if redis.call('EXISTS', ARGV[2] .. previous) == 0 then
  return redis.error_reply('artifact of previous version ' .. previous .. ' is missing')
end
local current = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], previous)
if current then redis.call('SET', KEYS[2], current) else redis.call('DEL', KEYS[2]) end
redis.call('PUBLISH', ARGV[1], previous)
return previous
"#;

/// Key names under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (`im` in production; tests use their own).
    pub fn new(prefix: impl Into<String>) -> Keys {
        Keys {
            prefix: prefix.into(),
        }
    }
    /// The active pointer.
    pub fn active(&self) -> String {
        format!("{}:model:active", self.prefix)
    }
    /// What rollback restores.
    pub fn previous(&self) -> String {
        format!("{}:model:previous", self.prefix)
    }
    /// Artifact bytes of `version`.
    pub fn artifact(&self, version: &str) -> String {
        format!("{}:model:{version}", self.prefix)
    }
    /// Metadata JSON of `version`.
    pub fn meta(&self, version: &str) -> String {
        format!("{}:model:{version}:meta", self.prefix)
    }
    /// Sorted set of versions by creation time.
    pub fn index(&self) -> String {
        format!("{}:models", self.prefix)
    }
    /// Pub/sub channel announcing the new active version.
    pub fn channel(&self) -> String {
        format!("{}:model:events", self.prefix)
    }
}

fn redis_err(context: impl Into<String>) -> impl FnOnce(redis::RedisError) -> Error {
    let context = context.into();
    move |source| Error::Redis { context, source }
}

/// A connection to the registry in Redis.
#[derive(Clone)]
pub struct RedisRegistry {
    client: redis::Client,
    conn: ConnectionManager,
    keys: Keys,
}

impl std::fmt::Debug for RedisRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRegistry")
            .field("keys", &self.keys)
            .finish()
    }
}

impl RedisRegistry {
    /// Connects to `url` with short timeouts (the registry must never hang a caller).
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisRegistry> {
        // The URL may carry a password: errors show it masked, as the database URL's.
        let shown = crate::telemetry::store::redact(url);
        let client =
            redis::Client::open(url).map_err(redis_err(format!("parsing Redis URL {shown}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(redis_err(format!("connecting to {shown}")))?;
        Ok(RedisRegistry {
            client,
            conn,
            keys: Keys::new(prefix),
        })
    }

    /// The key names.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The underlying client (for pub/sub connections).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// Stores artifact and metadata; an existing version is never overwritten.
    pub async fn publish(&self, bytes: &[u8], meta: &ModelMeta) -> Result<()> {
        let mut c = self.conn.clone();
        let json = serde_json::to_string(meta)
            .map_err(|e| Error::Input(format!("serialising metadata: {e}")))?;
        let (stored, _): (bool, bool) = redis::pipe()
            .atomic()
            .set_nx(self.keys.artifact(&meta.version), bytes)
            .set_nx(self.keys.meta(&meta.version), json)
            .query_async(&mut c)
            .await
            .map_err(redis_err(format!("publishing {}", meta.version)))?;
        if !stored {
            // Already there: fine only if it is the same artifact.
            let existing = self.fetch_verified(&meta.version).await?;
            if existing.1.sha256 != meta.sha256 {
                return Err(Error::artifact(
                    self.keys.artifact(&meta.version),
                    "a different artifact is already published under this version",
                ));
            }
        }
        let _: () = c
            .zadd(
                self.keys.index(),
                &meta.version,
                meta.created_at.timestamp_millis(),
            )
            .await
            .map_err(redis_err("indexing a published model"))?;
        Ok(())
    }

    /// Reads and verifies one version: checksum against its metadata, then a full parse.
    pub async fn fetch_verified(&self, version: &str) -> Result<(Model, ModelMeta)> {
        let mut c = self.conn.clone();
        let (bytes, meta): (Option<Vec<u8>>, Option<String>) = redis::pipe()
            .get(self.keys.artifact(version))
            .get(self.keys.meta(version))
            .query_async(&mut c)
            .await
            .map_err(redis_err(format!("fetching model {version}")))?;
        let key = self.keys.artifact(version);
        let (Some(bytes), Some(meta)) = (bytes, meta) else {
            return Err(Error::artifact(key, "not in the registry"));
        };
        let meta: ModelMeta = serde_json::from_str(&meta).map_err(|e| {
            Error::artifact(
                self.keys.meta(version),
                format!("metadata is not valid: {e}"),
            )
        })?;
        let model = Model::from_bytes(&bytes, Some(&meta.sha256))
            .map_err(|reason| Error::artifact(&key, reason))?;
        if model.version != version {
            return Err(Error::artifact(
                key,
                format!("artifact says version {}", model.version),
            ));
        }
        Ok((model, meta))
    }

    /// The active version, if any.
    pub async fn active(&self) -> Result<Option<String>> {
        let mut c = self.conn.clone();
        c.get(self.keys.active())
            .await
            .map_err(redis_err("reading the active version"))
    }

    /// The version rollback would restore, if any.
    pub async fn previous(&self) -> Result<Option<String>> {
        let mut c = self.conn.clone();
        c.get(self.keys.previous())
            .await
            .map_err(redis_err("reading the previous version"))
    }

    /// Points `im:model:active` at `version` after verifying its artifact; returns the previous one.
    pub async fn promote(&self, version: &str) -> Result<Option<String>> {
        self.fetch_verified(version).await?;
        let mut c = self.conn.clone();
        let previous: String = redis::Script::new(PROMOTE)
            .key(self.keys.active())
            .key(self.keys.previous())
            .key(self.keys.artifact(version))
            .key(self.keys.meta(version))
            .arg(version)
            .arg(self.keys.channel())
            .invoke_async(&mut c)
            .await
            .map_err(redis_err(format!("promoting {version}")))?;
        Ok((!previous.is_empty()).then_some(previous))
    }

    /// Restores the previous active version; returns it.
    pub async fn rollback(&self) -> Result<String> {
        let mut c = self.conn.clone();
        redis::Script::new(ROLLBACK)
            .key(self.keys.active())
            .key(self.keys.previous())
            .arg(self.keys.channel())
            .arg(format!("{}:model:", self.keys.prefix))
            .invoke_async(&mut c)
            .await
            .map_err(redis_err("rolling back"))
    }

    /// Metadata of every published version, oldest first.
    pub async fn list(&self) -> Result<Vec<ModelMeta>> {
        let mut c = self.conn.clone();
        let versions: Vec<String> = c
            .zrange(self.keys.index(), 0, -1)
            .await
            .map_err(redis_err("listing models"))?;
        let mut out = Vec::with_capacity(versions.len());
        for v in versions {
            let json: Option<String> = c
                .get(self.keys.meta(&v))
                .await
                .map_err(redis_err("reading model metadata"))?;
            match json.map(|j| serde_json::from_str::<ModelMeta>(&j)) {
                Some(Ok(m)) => out.push(m),
                Some(Err(e)) => {
                    tracing::warn!(version = %v, error = %e, "skipping unreadable model metadata in Redis")
                }
                None => tracing::warn!(version = %v, "indexed model has no metadata in Redis"),
            }
        }
        Ok(out)
    }
}
