//! The model registry against the real Redis: promotion, rollback, tampering, live pickup.

use std::sync::Arc;
use std::time::{Duration, Instant};

use inframind::model::ModelDir;
use inframind::registry::{live, LiveModel, Registry, WatchConfig};
use inframind::signing::{ModelKeys, PublicKey, Signer};
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
    // Every move is in the history, newest first (the dashboard's models page shows it).
    let moves: Vec<(String, String, Option<String>)> = reg
        .history()
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.action, m.version, m.previous))
        .collect();
    let (v1, v2) = (meta1.version.clone(), meta2.version.clone());
    assert_eq!(
        moves,
        [
            ("rollback".into(), v2.clone(), Some(v1.clone())),
            ("rollback".into(), v1.clone(), Some(v2.clone())),
            ("promote".into(), v2.clone(), Some(v1.clone())),
            ("promote".into(), v1.clone(), None),
        ]
    );

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

    // Someone flips bytes of v2 in Redis: with no local copy to repair it from, promotion
    // refuses it.
    std::fs::remove_file(reg.dir().path().join(format!("{}.json", meta2.version))).unwrap();
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
async fn without_redis_only_the_last_active_version_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let md = ModelDir::new(dir.path());
    small_model(&md, "model_v20261101_000041", 41);
    small_model(&md, "model_v20261101_000042", 42);
    let cfg = WatchConfig {
        dir: md.clone(),
        redis_url: Some("redis://127.0.0.1:1".into()),
        prefix: "x".into(),
        poll: Duration::from_secs(1),
    };
    // Redis down and no record of what was active: the newer local artifact is not a reason to
    // serve it (it may have been rolled back); cold start.
    let live = LiveModel::new();
    live::bootstrap(&live, &cfg).await;
    assert!(live.get().is_none());
    // The last active version this replica was given (pinned at each swap) is served.
    md.pin("model_v20261101_000041").unwrap();
    let live = LiveModel::new();
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

/// A registry whose directory signs with the trainer's key, and the public half for replicas.
async fn signed_registry(prefix: &str, seed: u8) -> (Registry, tempfile::TempDir, PublicKey) {
    let dir = tempfile::tempdir().unwrap();
    let signer = Signer::from_seed([seed; 32]);
    let public = signer.public();
    let md = ModelDir::new(dir.path()).with_keys(ModelKeys::signing(signer));
    let reg = Registry::open(md, Some(&redis_url()), prefix)
        .await
        .expect("opening the Redis registry");
    (reg, dir, public)
}

fn replica_cfg(
    dir: &std::path::Path,
    prefix: &str,
    public: &PublicKey,
    poll: Duration,
) -> WatchConfig {
    WatchConfig {
        dir: ModelDir::new(dir).with_keys(ModelKeys::verifying(public.clone())),
        redis_url: Some(redis_url()),
        prefix: prefix.to_string(),
        poll,
    }
}

async fn wait_refusals(live: &LiveModel, at_least: u64) {
    for _ in 0..250 {
        if live.refusals() >= at_least {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("expected {at_least} refusals, saw {}", live.refusals());
}

#[tokio::test]
async fn a_forged_model_with_a_recomputed_checksum_cannot_be_planted_through_redis() {
    let prefix = unique("imt");
    let (reg, dir, public) = signed_registry(&prefix, 1).await;
    let (m1, meta1) = small_model(reg.dir(), "model_v20261101_000061", 61);
    reg.publish(&m1, &meta1).await.unwrap();
    reg.promote(&meta1.version).await.unwrap();
    assert!(meta1.signature.is_some());

    let replica = Arc::new(LiveModel::new());
    let cfg = replica_cfg(
        &dir.path().join("replica"),
        &prefix,
        &public,
        Duration::from_millis(200),
    );
    live::bootstrap(&replica, &cfg).await;
    assert_eq!(replica.version().as_deref(), Some(meta1.version.as_str()));
    let watcher = live::spawn(replica.clone(), cfg);

    // An attacker with write access to Redis but not the key trains their own model; its
    // metadata carries a correct SHA-256 (anyone can compute one) and v1's signature.
    let attacker = tempfile::tempdir().unwrap();
    let forged_version = "model_v20261101_000062";
    let (forged, mut forged_meta) =
        small_model(&ModelDir::new(attacker.path()), forged_version, 62);
    forged_meta.signature = meta1.signature.clone();
    let mut c = redis_conn().await;
    let _: () = c
        .set(
            format!("{prefix}:model:{forged_version}"),
            forged.to_bytes(),
        )
        .await
        .unwrap();
    let _: () = c
        .set(
            format!("{prefix}:model:{forged_version}:meta"),
            serde_json::to_string(&forged_meta).unwrap(),
        )
        .await
        .unwrap();
    // The checks a checksum can do pass: only the signature tells the forgery apart.
    let unkeyed = Registry::open(ModelDir::new(attacker.path()), Some(&redis_url()), &prefix)
        .await
        .unwrap();
    unkeyed
        .redis()
        .unwrap()
        .fetch_verified(forged_version)
        .await
        .expect("without a key the forgery passes the checksum");
    let err = reg.promote(forged_version).await.unwrap_err().to_string();
    assert!(err.contains("signature does not verify"), "{err}");

    // Point every replica at it past the registry's checks: they refuse it.
    let _: () = c
        .set(format!("{prefix}:model:active"), forged_version)
        .await
        .unwrap();
    let _: () = c
        .publish(format!("{prefix}:model:events"), forged_version)
        .await
        .unwrap();
    wait_refusals(&replica, 1).await;
    assert_eq!(replica.version().as_deref(), Some(meta1.version.as_str()));
    // A replica starting now serves nothing rather than the forgery or a local leftover.
    let fresh = LiveModel::new();
    let cfg = replica_cfg(
        &dir.path().join("replica"),
        &prefix,
        &public,
        Duration::from_secs(30),
    );
    live::bootstrap(&fresh, &cfg).await;
    assert!(fresh.get().is_none(), "served {:?}", fresh.version());
    watcher.abort();
}

#[tokio::test]
async fn a_restarted_replica_never_serves_a_rolled_back_version_when_the_active_one_fails() {
    let prefix = unique("imt");
    let (reg, dir, public) = signed_registry(&prefix, 2).await;
    let (m1, meta1) = small_model(reg.dir(), "model_v20261101_000071", 71);
    let (m2, meta2) = small_model(reg.dir(), "model_v20261101_000072", 72);
    reg.publish(&m1, &meta1).await.unwrap();
    reg.publish(&m2, &meta2).await.unwrap();
    reg.promote(&meta1.version).await.unwrap();
    reg.promote(&meta2.version).await.unwrap();

    // The replica served v2 (so it has a local copy of it), then v2 was rolled back to v1.
    let replica_dir = dir.path().join("replica");
    let cfg = replica_cfg(&replica_dir, &prefix, &public, Duration::from_secs(30));
    let first = LiveModel::new();
    live::bootstrap(&first, &cfg).await;
    assert_eq!(first.version().as_deref(), Some(meta2.version.as_str()));
    assert_eq!(reg.rollback().await.unwrap(), meta1.version);

    // v1's artifact in Redis stops verifying; the replica restarts.
    let mut c = redis_conn().await;
    let key = format!("{prefix}:model:{}", meta1.version);
    let mut bytes: Vec<u8> = c.get(&key).await.unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    let _: () = c.set(&key, bytes).await.unwrap();
    let restarted = LiveModel::new();
    live::bootstrap(&restarted, &cfg).await;
    assert!(
        restarted.get().is_none(),
        "the rolled-back {} must not be served, got {:?}",
        meta2.version,
        restarted.version()
    );
    assert!(restarted.refusals() >= 1);

    // With an intact local copy of the active version, that copy is what it serves.
    let bytes1 = std::fs::read(reg.dir().path().join(&meta1.artifact)).unwrap();
    cfg.dir.store(&bytes1, &meta1).unwrap();
    let again = LiveModel::new();
    live::bootstrap(&again, &cfg).await;
    assert_eq!(again.version().as_deref(), Some(meta1.version.as_str()));
}

#[tokio::test]
async fn a_refused_version_is_retried_at_the_next_poll_and_event() {
    let prefix = unique("imt");
    let (reg, dir, public) = signed_registry(&prefix, 3).await;
    let (m1, meta1) = small_model(reg.dir(), "model_v20261101_000081", 81);
    let (m2, meta2) = small_model(reg.dir(), "model_v20261101_000082", 82);
    reg.publish(&m1, &meta1).await.unwrap();
    reg.publish(&m2, &meta2).await.unwrap();
    reg.promote(&meta1.version).await.unwrap();

    // One replica relies on polling, the other (30 s poll) on events alone.
    let mut replicas = Vec::new();
    for (name, poll) in [
        ("poll", Duration::from_millis(200)),
        ("event", Duration::from_secs(30)),
    ] {
        let live = Arc::new(LiveModel::new());
        let cfg = replica_cfg(&dir.path().join(name), &prefix, &public, poll);
        live::bootstrap(&live, &cfg).await;
        assert_eq!(live.version().as_deref(), Some(meta1.version.as_str()));
        replicas.push((live.clone(), live::spawn(live, cfg)));
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // let both subscribe

    // v2's artifact is damaged in Redis, and the pointer forced to it: both refuse.
    let mut c = redis_conn().await;
    let key = format!("{prefix}:model:{}", meta2.version);
    let good: Vec<u8> = c.get(&key).await.unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    let _: () = c.set(&key, &bad).await.unwrap();
    let _: () = c
        .set(format!("{prefix}:model:active"), &meta2.version)
        .await
        .unwrap();
    let _: () = c
        .publish(format!("{prefix}:model:events"), &meta2.version)
        .await
        .unwrap();
    for (live, _) in &replicas {
        wait_refusals(live, 1).await;
        assert_eq!(live.version().as_deref(), Some(meta1.version.as_str()));
    }

    // Fixed in place, silently: the polling replica picks it up without a restart.
    let _: () = c.set(&key, &good).await.unwrap();
    wait_for(&replicas[0].0, &meta2.version, Duration::from_secs(5))
        .await
        .expect("the polling replica retried the repaired version");

    // Damaged again, then repaired by the trainer (which republishes its verified copy and
    // announces the version): the event-only replica retries at that event.
    let _: () = c.set(&key, &bad).await.unwrap();
    reg.promote(&meta2.version)
        .await
        .expect("the trainer repairs v2");
    let stored: Vec<u8> = c.get(&key).await.unwrap();
    assert_eq!(
        stored, good,
        "the registry holds the verified artifact again"
    );
    wait_for(&replicas[1].0, &meta2.version, Duration::from_secs(5))
        .await
        .expect("the event-driven replica retried the repaired version");
    for (_, w) in replicas {
        w.abort();
    }
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
    let moves: Vec<String> = reg
        .history()
        .await
        .unwrap()
        .into_iter()
        .map(|m| format!("{} {}", m.action, m.version))
        .collect();
    assert_eq!(
        moves,
        [
            "rollback model_v20261101_000051",
            "promote model_v20261101_000052",
            "promote model_v20261101_000051"
        ]
    );
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
        // Masked where the URL parses, left out whole where it does not.
        assert!(
            shown.contains(":***@") || shown.contains("<unparsable URL>"),
            "{shown}"
        );
    }
}

/// The real binary with `INFRAMIND_*` settings and no Redis.
fn inframind(
    dir: &std::path::Path,
    env: &[(&str, &std::path::Path)],
    args: &[&str],
) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_inframind"));
    cmd.args(args)
        .current_dir(dir)
        .env(
            "INFRAMIND_DATABASE_URL",
            format!("sqlite://{}", dir.join("im.db").display()),
        )
        .env("INFRAMIND_MODELS_DIR", dir.join("models"))
        .env_remove("INFRAMIND_REDIS_URL")
        .env_remove("INFRAMIND_MODEL_SIGNING_KEY_FILE")
        .env_remove("INFRAMIND_MODEL_PUBLIC_KEY_FILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running inframind")
}

fn openssl(args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl (the documented way to make model keys)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_binary_signs_with_an_openssl_key_and_refuses_models_it_cannot_verify() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (signing, public, other) = (
        d.join("signing.pem"),
        d.join("public.pem"),
        d.join("other.pem"),
    );
    // Keys made exactly as the chart's README says.
    openssl(&[
        "genpkey",
        "-algorithm",
        "ed25519",
        "-out",
        signing.to_str().unwrap(),
    ]);
    openssl(&[
        "pkey",
        "-in",
        signing.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    openssl(&[
        "genpkey",
        "-algorithm",
        "ed25519",
        "-out",
        d.join("other-signing.pem").to_str().unwrap(),
    ]);
    openssl(&[
        "pkey",
        "-in",
        d.join("other-signing.pem").to_str().unwrap(),
        "-pubout",
        "-out",
        other.to_str().unwrap(),
    ]);
    assert_eq!(
        Signer::load(&signing).unwrap().public(),
        PublicKey::load(&public).unwrap()
    );

    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    ok(inframind(
        d,
        &[],
        &["simulate", "--runs", "600", "--out", "runs.jsonl"],
    ));
    ok(inframind(d, &[], &["ingest", "runs.jsonl"]));
    let sign = [("INFRAMIND_MODEL_SIGNING_KEY_FILE", signing.as_path())];
    ok(inframind(
        d,
        &sign,
        &["train", "--trees", "10", "--limit", "300", "--promote"],
    ));
    let listed: serde_json::Value = serde_json::from_str(&ok(inframind(
        d,
        &[],
        &["models", "list", "--output", "json"],
    )))
    .unwrap();
    assert!(listed[0]["signature"].is_string(), "{listed}");

    // The right public key loads it; another key refuses it; a mismatched pair refuses to start.
    ok(inframind(
        d,
        &[("INFRAMIND_MODEL_PUBLIC_KEY_FILE", &public)],
        &["explain"],
    ));
    let out = inframind(
        d,
        &[("INFRAMIND_MODEL_PUBLIC_KEY_FILE", &other)],
        &["explain"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("signature"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = inframind(
        d,
        &[
            ("INFRAMIND_MODEL_SIGNING_KEY_FILE", &signing),
            ("INFRAMIND_MODEL_PUBLIC_KEY_FILE", &other),
        ],
        &["models", "list"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not match"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
