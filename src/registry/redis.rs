//! The Redis side of the registry: artifacts, metadata, the active pointer and change events.
//!
//! Keys (prefix `im` by default, as designed): `im:model:active` (the active version),
//! `im:model:previous` (what rollback restores), `im:model:<version>` (artifact bytes),
//! `im:model:<version>:meta` (metrics JSON), `im:models` (sorted set of versions by creation
//! time). Promotion and rollback run as Lua scripts, so the pointer can never be left at a
//! version whose artifact is missing, and each publishes the new version on `im:model:events`.
//!
//! Every artifact read is verified with the process's [`Trust`] (checksum, then the trainer's
//! signature), so a process that can write Redis but holds no signing key cannot plant a model.
//! `rediss://` URLs use TLS (rustls); `?ssl_ca_certs=FILE` names the PEM CA bundle that signs
//! the server's certificate (redis-py's parameter name), instead of the public web roots.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;

use crate::error::{Error, Result};
use crate::model::{verify, Model, ModelMeta};
use crate::signing::Trust;

/// Refuses to move the pointer unless both the artifact and its metadata exist.
const PROMOTE: &str = r#"
if redis.call('EXISTS', KEYS[3]) == 0 or redis.call('EXISTS', KEYS[4]) == 0 then
  return redis.error_reply('artifact or metadata of ' .. ARGV[1] .. ' is missing')
end
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  -- Announced again: replicas that refused it (before a repair) retry at once.
  redis.call('PUBLISH', ARGV[2], ARGV[1])
  return current
end
if current then redis.call('SET', KEYS[2], current) end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('LPUSH', KEYS[5], ARGV[3] .. ' promote ' .. ARGV[1] .. ' ' .. (current or '-'))
redis.call('LTRIM', KEYS[5], 0, ARGV[4] - 1)
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
redis.call('LPUSH', KEYS[3], ARGV[3] .. ' rollback ' .. previous .. ' ' .. (current or '-'))
redis.call('LTRIM', KEYS[3], 0, ARGV[4] - 1)
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
    /// Promotions and rollbacks, newest first (`<unix ms> <action> <version> <previous|->`).
    pub fn history(&self) -> String {
        format!("{}:model:history", self.prefix)
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

/// Query parameter of a `rediss://` URL naming the CA bundle (PEM) to trust.
pub const CA_PARAM: &str = "ssl_ca_certs";

/// A Redis client for `url`: `rediss://` with `?ssl_ca_certs=FILE` trusts that CA only.
pub fn client(url: &str) -> Result<redis::Client> {
    let parse_err = |reason: String| Error::Input(format!("Redis URL {}: {reason}", redact(url)));
    let mut parsed = url::Url::parse(url).map_err(|e| parse_err(e.to_string()))?;
    let ca_file = parsed
        .query_pairs()
        .find(|(k, _)| k == CA_PARAM)
        .map(|(_, v)| v.into_owned());
    let Some(ca_file) = ca_file else {
        return redis::Client::open(url)
            .map_err(redis_err(format!("parsing Redis URL {}", redact(url))));
    };
    if parsed.scheme() != "rediss" {
        return Err(parse_err(format!("{CA_PARAM} needs a rediss:// URL")));
    }
    let rest: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(k, _)| k != CA_PARAM)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if rest.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(rest);
    }
    let root_cert = std::fs::read(&ca_file)
        .map_err(Error::io(format!("reading the Redis CA file {ca_file}")))?;
    // rustls takes its process-wide provider: make sure it is ring (a no-op when already set).
    let _ = rustls::crypto::ring::default_provider().install_default();
    redis::Client::build_with_tls(
        parsed.as_str(),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(root_cert),
        },
    )
    .map_err(redis_err(format!("configuring TLS for {}", redact(url))))
}

/// `url` without its password, for messages (the one redaction rule, shared with the store).
pub use crate::telemetry::store::redact;

/// A connection to the registry in Redis.
#[derive(Clone)]
pub struct RedisRegistry {
    client: redis::Client,
    conn: ConnectionManager,
    keys: Keys,
    trust: Trust,
}

impl std::fmt::Debug for RedisRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRegistry")
            .field("keys", &self.keys)
            .finish()
    }
}

impl RedisRegistry {
    /// Connects to `url` with short timeouts (the registry must never hang a caller); artifacts
    /// read are verified with `trust`.
    pub async fn connect(url: &str, prefix: &str, trust: Trust) -> Result<RedisRegistry> {
        let client = client(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(redis_err(format!("connecting to {}", redact(url))))?;
        Ok(RedisRegistry {
            client,
            conn,
            keys: Keys::new(prefix),
            trust,
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

    /// Stores artifact and metadata after verifying them. An intact existing version is never
    /// overwritten; one that no longer verifies (altered or forged in Redis) is repaired.
    pub async fn publish(&self, bytes: &[u8], meta: &ModelMeta) -> Result<()> {
        let key = self.keys.artifact(&meta.version);
        verify(bytes, meta, &self.trust).map_err(|reason| Error::artifact(&key, reason))?;
        let mut c = self.conn.clone();
        let json = serde_json::to_string(meta)
            .map_err(|e| Error::Input(format!("serialising metadata: {e}")))?;
        let (stored, _): (bool, bool) = redis::pipe()
            .atomic()
            .set_nx(&key, bytes)
            .set_nx(self.keys.meta(&meta.version), &json)
            .query_async(&mut c)
            .await
            .map_err(redis_err(format!("publishing {}", meta.version)))?;
        if !stored {
            // Already there: fine if it is the same artifact, repaired if it no longer verifies.
            match self.fetch_verified(&meta.version).await {
                Ok(existing) if existing.1.sha256 == meta.sha256 => {}
                Ok(_) => {
                    return Err(Error::artifact(
                        key,
                        "a different artifact is already published under this version",
                    ))
                }
                Err(Error::Artifact { reason, .. }) => {
                    tracing::warn!(version = %meta.version, %reason, "the published artifact does not verify; replacing it with the verified one");
                    let _: () = redis::pipe()
                        .atomic()
                        .set(&key, bytes)
                        .set(self.keys.meta(&meta.version), json)
                        .query_async(&mut c)
                        .await
                        .map_err(redis_err(format!("repairing {}", meta.version)))?;
                }
                Err(e) => return Err(e),
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

    /// Reads and verifies one version: checksum against its metadata, signature, then a full parse.
    pub async fn fetch_verified(&self, version: &str) -> Result<(Model, ModelMeta)> {
        self.fetch(version)
            .await
            .map(|(model, meta, _)| (model, meta))
    }

    /// [`RedisRegistry::fetch_verified`], also returning the artifact's bytes as stored.
    pub async fn fetch(&self, version: &str) -> Result<(Model, ModelMeta, Vec<u8>)> {
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
        if meta.version != version {
            return Err(Error::artifact(
                key,
                format!("metadata says version {}", meta.version),
            ));
        }
        let model =
            verify(&bytes, &meta, &self.trust).map_err(|reason| Error::artifact(&key, reason))?;
        Ok((model, meta, bytes))
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
            .key(self.keys.history())
            .arg(version)
            .arg(self.keys.channel())
            .arg(chrono::Utc::now().timestamp_millis())
            .arg(super::HISTORY_LEN)
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
            .key(self.keys.history())
            .arg(self.keys.channel())
            .arg(format!("{}:model:", self.keys.prefix))
            .arg(chrono::Utc::now().timestamp_millis())
            .arg(super::HISTORY_LEN)
            .invoke_async(&mut c)
            .await
            .map_err(redis_err("rolling back"))
    }

    /// The promotion and rollback records, newest first, as stored.
    pub async fn history_lines(&self) -> Result<Vec<String>> {
        let mut c = self.conn.clone();
        c.lrange(self.keys.history(), 0, -1)
            .await
            .map_err(redis_err("reading the promotion history"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_messages_never_carry_the_password() {
        let shown = redact("rediss://user:s3cret@redis.example:6380/0?ssl_ca_certs=/ca.crt");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("redis.example:6380"), "{shown}");
        let err = client("rediss://:s3cret@localhost:1/?ssl_ca_certs=/nonexistent/ca.crt")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/nonexistent/ca.crt") && !err.contains("s3cret"),
            "{err}"
        );
    }
}
