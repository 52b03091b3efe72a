//! Fault drills with the real `inframind` binary against a PostgreSQL and a Redis that the test
//! starts on free ports and then kills, stops and restarts under load. Load is bounded in time
//! and count and stays on 127.0.0.1. The figures are printed (run with `--nocapture`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use inframind::client::{tls_config, Client};
use inframind::model::ModelDir;
use inframind::registry::Registry;
use inframind::telemetry::Store;

use crate::harness::{admission_review, small_model};
use crate::servers::{free_port, localhost_certs, TestPostgres, TestRedis};

/// The binary as a child process, killed when dropped.
struct Binary(Child);

impl Binary {
    fn start(dir: &Path, env: &[(&str, String)], args: &[String]) -> Binary {
        let log = std::fs::File::create(dir.join("inframind.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_inframind"));
        cmd.args(args)
            .env_remove("INFRAMIND_REDIS_URL")
            .env("INFRAMIND_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Binary(cmd.spawn().expect("starting inframind"))
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pod(i: u64) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "generateName": format!("runner-drill-{i}-"),
            "namespace": "ci",
            "labels": {"project.runner.gitlab.com/id": "2806"},
            "annotations": {
                "job.runner.gitlab.com/url": "https://gitlab.example.com/acme/api/-/jobs/1",
                "job.runner.gitlab.com/ref": "main",
                "project.runner.gitlab.com/id": "2806"
            }
        },
        "spec": {
            "containers": [{"name": "build", "image": "rust:1.82",
                            "resources": {"requests": {"cpu": "2", "memory": "4Gi"}},
                            "env": [{"name": "MAKEFLAGS", "value": "-j2"}]}],
            "restartPolicy": "Never"
        }
    })
}

#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    failed: AtomicU64,
    with_model: AtomicU64,
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get((v.len() * 99 / 100).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admissions_never_fail_while_redis_and_postgres_are_killed_and_restarted() {
    let pg = TestPostgres::start(None);
    let mut redis = TestRedis::start(None);
    let db = pg.url("127.0.0.1", "");
    let redis_url = format!("redis://127.0.0.1:{}/", redis.port);
    let dir = tempfile::tempdir().unwrap();

    // History for the stats cache, and an active model in the registry.
    let store = Store::connect(&db).await.expect("the drill's PostgreSQL");
    let runs = inframind::simulate::demo_runs(300, chrono::Utc::now(), 11);
    store.insert_runs(&runs, chrono::Utc::now()).await.unwrap();
    store.close().await;
    let reg = Registry::open(
        ModelDir::new(dir.path().join("trainer")),
        Some(&redis_url),
        "im",
    )
    .await
    .unwrap();
    let (m, meta) = small_model(reg.dir(), "model_v20261101_000101", 101);
    reg.publish(&m, &meta).await.unwrap();
    reg.promote(&meta.version).await.unwrap();

    let certs = localhost_certs();
    std::fs::write(dir.path().join("tls.crt"), &certs.serving.cert).unwrap();
    std::fs::write(dir.path().join("tls.key"), &certs.serving.key).unwrap();
    let port = free_port();
    let _webhook = Binary::start(
        dir.path(),
        &[
            ("INFRAMIND_DATABASE_URL", db.clone()),
            ("INFRAMIND_REDIS_URL", redis_url.clone()),
            (
                "INFRAMIND_MODELS_DIR",
                dir.path().join("models").display().to_string(),
            ),
        ],
        &[
            "webhook".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--tls-cert".into(),
            dir.path().join("tls.crt").display().to_string(),
            "--tls-key".into(),
            dir.path().join("tls.key").display().to_string(),
            "--model-poll-seconds".into(),
            "1".into(),
            "--stats-refresh-seconds".into(),
            "1".into(),
        ],
    );
    let base = format!("https://localhost:{port}");
    let tls = tls_config(&certs.ca_cert).unwrap();
    let probe = Client::with_tls(tls.clone());
    let start = Instant::now();
    loop {
        if let Ok(r) = probe
            .request("GET", &format!("{base}/readyz"), &[], Vec::new())
            .await
        {
            if r.status == 200 {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the webhook never became ready: {}",
            std::fs::read_to_string(dir.path().join("inframind.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Four clients on keep-alive connections until told to stop (bounded by the drill below).
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut clients = Vec::new();
    for k in 0..4u64 {
        let (stop, tally, version, url) = (
            stop.clone(),
            tally.clone(),
            meta.version.clone(),
            format!("{base}/mutate"),
        );
        // One client (one keep-alive connection) per simulated API server connection.
        let client = Client::builder()
            .tls(tls.clone())
            .timeout(Duration::from_secs(10))
            .build();
        clients.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = k * 1_000_000;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let body = serde_json::to_vec(&admission_review(
                    &format!("u{i}"),
                    "CREATE",
                    ("", "v1", "Pod"),
                    pod(i),
                ))
                .unwrap();
                let t = Instant::now();
                tally.sent.fetch_add(1, Ordering::Relaxed);
                match client.request("POST", &url, &[], body).await {
                    Ok(r) if r.status == 200 => {
                        latencies.push(t.elapsed());
                        let v: serde_json::Value =
                            serde_json::from_slice(&r.body).unwrap_or_default();
                        if v["response"]["allowed"] != true {
                            tally.failed.fetch_add(1, Ordering::Relaxed);
                        }
                        let patch = v["response"]["patch"].as_str().unwrap_or_default();
                        let patch = base64::engine::general_purpose::STANDARD
                            .decode(patch)
                            .unwrap_or_default();
                        if String::from_utf8_lossy(&patch).contains(&version) {
                            tally.with_model.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {
                        tally.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }

    // The drill: Redis killed and restarted (empty: no persistence), PostgreSQL stopped and
    // restarted, each while admissions go on.
    let steps = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = tally.sent.load(Ordering::Relaxed);
    redis.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    redis.start_again();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // (Blocking: pg_ctl waits for the server; the clients keep running on the runtime.)
    let _pg = tokio::task::spawn_blocking(move || {
        pg.stop();
        std::thread::sleep(Duration::from_secs(3));
        pg.start_again();
        pg
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for c in clients {
        latencies.extend(c.await.unwrap());
    }
    let sent = tally.sent.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    let with_model = tally.with_model.load(Ordering::Relaxed);
    println!(
        "drill: {sent} admissions in {:?} ({} during the outages), {failed} failed, {with_model} decided with {}, p99 {:?}",
        steps.elapsed(),
        sent - before,
        meta.version,
        p99(latencies)
    );
    assert!(sent > 100, "too little load to mean anything: {sent}");
    assert_eq!(failed, 0, "admissions failed during the drill");
    assert_eq!(
        with_model, sent,
        "every admission used the model in memory through the outages"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_postgres_mid_ingest_loses_and_duplicates_no_row() {
    let pg = TestPostgres::start(None);
    let db = pg.url("127.0.0.1", "");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ingest"), "drill-ingest-token\n").unwrap();
    let port = free_port();
    let _api = Binary::start(
        dir.path(),
        &[
            ("INFRAMIND_DATABASE_URL", db.clone()),
            (
                "INFRAMIND_MODELS_DIR",
                dir.path().join("models").display().to_string(),
            ),
        ],
        &[
            "api".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--ingest-token-file".into(),
            dir.path().join("ingest").display().to_string(),
        ],
    );
    let base = format!("http://127.0.0.1:{port}");
    let probe = Client::plain();
    let start = Instant::now();
    loop {
        if let Ok(r) = probe
            .request("GET", &format!("{base}/healthz"), &[], Vec::new())
            .await
        {
            if r.status == 200 {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the API never came up: {}",
            std::fs::read_to_string(dir.path().join("inframind.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 2,000 runs, each posted alone by one of four reporters that retry until acknowledged
    // (after a 503 or a cut connection, as `inframind report` does; sooner than Retry-After,
    // to keep the drill short).
    const N: usize = 2000;
    let runs = inframind::simulate::demo_runs(N, chrono::Utc::now(), 12);
    let ids: std::collections::HashSet<String> = runs.iter().map(|r| r.run_id.clone()).collect();
    assert_eq!(ids.len(), N);
    let queue = Arc::new(std::sync::Mutex::new(runs));
    let acked = Arc::new(AtomicU64::new(0));
    let unavailable = Arc::new(AtomicU64::new(0));
    let cut = Arc::new(AtomicU64::new(0));
    let duplicates = Arc::new(AtomicU64::new(0));
    let mut reporters = Vec::new();
    for _ in 0..4 {
        let (queue, acked, unavailable, cut, duplicates) = (
            queue.clone(),
            acked.clone(),
            unavailable.clone(),
            cut.clone(),
            duplicates.clone(),
        );
        let url = format!("{base}/v1/runs");
        let client = Client::builder().timeout(Duration::from_secs(30)).build();
        reporters.push(tokio::spawn(async move {
            loop {
                let Some(run) = queue.lock().unwrap().pop() else {
                    return;
                };
                let body = serde_json::to_vec(&run).unwrap();
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    assert!(
                        Instant::now() < deadline,
                        "run {} never acknowledged",
                        run.run_id
                    );
                    let result = client
                        .request(
                            "POST",
                            &url,
                            &[("authorization", "Bearer drill-ingest-token")],
                            body.clone(),
                        )
                        .await
                        .map(|r| (r.status.as_u16(), r.body));
                    match result {
                        Ok((200, bytes)) => {
                            let report: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                            duplicates.fetch_add(
                                report["duplicates"].as_u64().unwrap_or(0),
                                Ordering::Relaxed,
                            );
                            acked.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Ok((503, _)) => {
                            unavailable.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok((status, bytes)) => panic!(
                            "unexpected answer {status}: {}",
                            String::from_utf8_lossy(&bytes)
                        ),
                        Err(_) => {
                            cut.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }

    // Stop PostgreSQL once a quarter of the runs are in, for 8 s (longer than the API's connect
    // and acquire timeouts, so requests are answered 503 and retried), then start it again.
    while acked.load(Ordering::Relaxed) < (N / 4) as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let at = acked.load(Ordering::Relaxed);
    let pg = tokio::task::spawn_blocking(move || {
        pg.stop();
        std::thread::sleep(Duration::from_secs(8));
        pg.start_again();
        pg
    })
    .await
    .unwrap();
    for r in reporters {
        r.await.unwrap();
    }

    let store = Store::connect(&db).await.unwrap();
    let stored = store.count_runs().await.unwrap();
    store.close().await;
    let pool = sqlx::postgres::PgPool::connect(&db).await.unwrap();
    let stored_ids: Vec<String> = sqlx::query_scalar("SELECT run_id FROM runs")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    let found: std::collections::HashSet<String> = stored_ids.iter().cloned().collect();
    assert_eq!(found.len(), stored_ids.len(), "a run stored twice");
    println!(
        "ingest drill: {N} runs posted, PostgreSQL stopped after {at}; {} acknowledged, {} answers 503, {} cut connections, {} retried runs found already stored; {stored} rows stored",
        acked.load(Ordering::Relaxed),
        unavailable.load(Ordering::Relaxed),
        cut.load(Ordering::Relaxed),
        duplicates.load(Ordering::Relaxed),
    );
    assert_eq!(acked.load(Ordering::Relaxed), N as u64);
    assert_eq!(stored, N as u64, "lost or duplicated rows");
    assert_eq!(found, ids, "the stored runs are exactly the posted ones");
    drop(pg);
}
