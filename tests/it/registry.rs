//! The model registry against the real Redis: promotion, rollback, tampering, live pickup.

use std::sync::Arc;
use std::time::{Duration, Instant};

use inframind::model::ModelDir;
use inframind::registry::{live, LiveModel, Registry, WatchConfig};
use redis::AsyncCommands;

use crate::harness::{redis_conn, redis_url, small_model, unique};

async fn registry(prefix: &str) -> (Registry, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(ModelDir::new(dir.path()), Some(&redis_url()), prefix)
        .await
        .expect("opening the Redis registry");
    (reg, dir)
}

async fn wait_for(live: &LiveModel, version: &str, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if live.version().as_deref() == Some(version) {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

#[tokio::test]
async fn promote_and_rollback_move_the_pointer_atomically() {
    let prefix = unique("imt");
    let (reg, _d) = registry(&prefix).await;
    let (m1, meta1) = small_model(reg.dir(), "model_v20261101_000001", 1);
    let (m2, meta2) = small_model(reg.dir(), "model_v20261101_000002", 2);
    reg.publish(&m1, &meta1).await.unwrap();
    reg.publish(&m2, &meta2).await.unwrap();
    // Publishing again is idempotent.
    reg.publish(&m1, &meta1).await.unwrap();

    assert_eq!(reg.active_version().await.unwrap(), None);
    assert_eq!(reg.promote(&meta1.version).await.unwrap(), None);
    assert_eq!(
        reg.promote(&meta2.version).await.unwrap().as_deref(),
        Some(meta1.version.as_str())
    );
    let mut c = redis_conn().await;
    let active: String = c.get(format!("{prefix}:model:active")).await.unwrap();
    assert_eq!(active, meta2.version);
    let listed = reg.list().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed[1].active && !listed[0].active);

    assert_eq!(reg.rollback().await.unwrap(), meta1.version);
    assert_eq!(
        reg.active_version().await.unwrap().as_deref(),
        Some(meta1.version.as_str())
    );
    // Rolling back again swaps back: the previous pointer now names v2.
    assert_eq!(reg.rollback().await.unwrap(), meta2.version);

    // A version whose artifact vanished cannot become active, even from a direct script call.
    let _: () = c
        .del(format!("{prefix}:model:{}", meta1.version))
        .await
        .unwrap();
    std::fs::remove_file(reg.dir().path().join(format!("{}.json", meta1.version))).unwrap();
    assert!(reg.promote(&meta1.version).await.is_err());
    assert_eq!(
        reg.active_version().await.unwrap().as_deref(),
        Some(meta2.version.as_str())
    );
}

#[tokio::test]
async fn concurrent_promotions_always_leave_a_loadable_active_version() {
    let prefix = unique("imt");
    let (reg, _d) = registry(&prefix).await;
    let mut versions = Vec::new();
    for i in 0..4u64 {
        let (m, meta) = small_model(reg.dir(), &format!("model_v20261101_00001{i}"), 10 + i);
        reg.publish(&m, &meta).await.unwrap();
        versions.push(meta.version);
    }
    let mut tasks = Vec::new();
    for i in 0..40 {
        let reg = reg.clone();
        let v = versions[i % versions.len()].clone();
        tasks.push(tokio::spawn(async move { reg.promote(&v).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let (model, _) = reg.load_active().await.unwrap().expect("an active model");
    assert!(versions.contains(&model.version));
}

#[tokio::test]
async fn a_tampered_artifact_is_refused_and_the_served_model_is_kept() {
    let prefix = unique("imt");
    let (reg, dir) = registry(&prefix).await;
    let (m1, meta1) = small_model(reg.dir(), "model_v20261101_000021", 21);
    let (m2, meta2) = small_model(reg.dir(), "model_v20261101_000022", 22);
    reg.publish(&m1, &meta1).await.unwrap();
    reg.publish(&m2, &meta2).await.unwrap();
    reg.promote(&meta1.version).await.unwrap();

    let replica = Arc::new(LiveModel::new());
    let cfg = WatchConfig {
        dir: ModelDir::new(dir.path().join("replica")),
        redis_url: Some(redis_url()),
        prefix: prefix.clone(),
        poll: Duration::from_millis(200),
    };
    live::bootstrap(&replica, &cfg).await;
    assert_eq!(replica.version().as_deref(), Some(meta1.version.as_str()));
    let watcher = live::spawn(replica.clone(), cfg);

    // Someone flips bytes of v2 in Redis: promotion refuses it.
    let mut c = redis_conn().await;
    let key = format!("{prefix}:model:{}", meta2.version);
    let mut bytes: Vec<u8> = c.get(&key).await.unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    let _: () = c.set(&key, bytes).await.unwrap();
    let err = reg.promote(&meta2.version).await.unwrap_err().to_string();
    assert!(err.contains("checksum mismatch"), "{err}");
    assert_eq!(
        reg.active_version().await.unwrap().as_deref(),
        Some(meta1.version.as_str())
    );
    // Force the pointer past the registry's checks: the replica must still refuse the bytes.
    let _: () = c
        .set(format!("{prefix}:model:active"), &meta2.version)
        .await
        .unwrap();
    let _: () = c
        .publish(format!("{prefix}:model:events"), &meta2.version)
        .await
        .unwrap();
    // Wait until the replica has looked at v2 (event or poll) and refused it.
    for _ in 0..250 {
        if replica.refusals() >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        replica.version().as_deref(),
        Some(meta1.version.as_str()),
        "tampered v2 must not be served"
    );
    assert!(replica.refusals() >= 1);
    watcher.abort();
}

#[tokio::test]
async fn replicas_follow_promotions_live() {
    let prefix = unique("imt");
    let (reg, dir) = registry(&prefix).await;
    let (m1, meta1) = small_model(reg.dir(), "model_v20261101_000031", 31);
    let (m2, meta2) = small_model(reg.dir(), "model_v20261101_000032", 32);
    reg.publish(&m1, &meta1).await.unwrap();
    reg.publish(&m2, &meta2).await.unwrap();
    reg.promote(&meta1.version).await.unwrap();

    let mut replicas = Vec::new();
    for i in 0..2 {
        let live = Arc::new(LiveModel::new());
        // Slow polling: the swap within the deadline below can only come from pub/sub.
        let cfg = WatchConfig {
            dir: ModelDir::new(dir.path().join(format!("r{i}"))),
            redis_url: Some(redis_url()),
            prefix: prefix.clone(),
            poll: Duration::from_secs(30),
        };
        live::bootstrap(&live, &cfg).await;
        assert_eq!(live.version().as_deref(), Some(meta1.version.as_str()));
        replicas.push((live.clone(), live::spawn(live, cfg)));
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // let both subscribe
    let promoted_at = Instant::now();
    reg.promote(&meta2.version).await.unwrap();
    for (live, _) in &replicas {
        let took = wait_for(live, &meta2.version, Duration::from_secs(5))
            .await
            .expect("replica switched");
        let since_promotion = promoted_at.elapsed();
        println!(
            "replica switched {took:?} after polling began, {since_promotion:?} after promotion"
        );
        assert!(since_promotion < Duration::from_secs(5));
    }
    reg.rollback().await.unwrap();
    for (live, _) in &replicas {
        wait_for(live, &meta1.version, Duration::from_secs(5))
            .await
            .expect("replica rolled back");
    }
    for (_, w) in replicas {
        w.abort();
    }
}

#[tokio::test]
async fn without_redis_the_newest_valid_local_artifact_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let md = ModelDir::new(dir.path());
    small_model(&md, "model_v20261101_000041", 41);
    let live = LiveModel::new();
    let cfg = WatchConfig {
        dir: md.clone(),
        redis_url: Some("redis://127.0.0.1:1".into()),
        prefix: "x".into(),
        poll: Duration::from_secs(1),
    };
    live::bootstrap(&live, &cfg).await;
    assert_eq!(live.version().as_deref(), Some("model_v20261101_000041"));
    // And with nothing at all, the cold-start path (no model, no panic).
    let empty = LiveModel::new();
    let cfg = WatchConfig {
        dir: ModelDir::new(dir.path().join("none")),
        ..cfg
    };
    live::bootstrap(&empty, &cfg).await;
    assert!(empty.get().is_none());
}

#[tokio::test]
async fn local_registry_promotes_and_rolls_back_without_redis() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::local(ModelDir::new(dir.path()));
    small_model(reg.dir(), "model_v20261101_000051", 51);
    small_model(reg.dir(), "model_v20261101_000052", 52);
    // Unpinned: the newest valid version is active.
    assert_eq!(
        reg.active_version().await.unwrap().as_deref(),
        Some("model_v20261101_000052")
    );
    reg.promote("model_v20261101_000051").await.unwrap();
    assert_eq!(
        reg.active_version().await.unwrap().as_deref(),
        Some("model_v20261101_000051")
    );
    reg.promote("model_v20261101_000052").await.unwrap();
    assert_eq!(reg.rollback().await.unwrap(), "model_v20261101_000051");
    assert!(reg.promote("model_v_missing").await.is_err());
}

/// Issue 14: a Redis URL's password was printed in error messages (PostgreSQL's was masked).
#[tokio::test]
async fn a_redis_password_never_appears_in_errors() {
    // Nothing listens on port 1: the connection is refused at once.
    for url in [
        "redis://:s3cret-pw@127.0.0.1:1/0",
        "redis://default:s3cret-pw@127.0.0.1:notaport/0",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let Err(err) = Registry::open(ModelDir::new(dir.path()), Some(url), "im").await else {
            panic!("no Redis listens there");
        };
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(shown.contains(":***@"), "{shown}");
    }
}
