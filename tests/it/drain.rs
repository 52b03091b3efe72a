//! Graceful drain of the real binary: SIGTERM under concurrent load fails no request.
//!
//! The API is started as a real process (SQLite store, plain HTTP). Clients behave as a
//! Kubernetes Service does: they keep sending until the pod reports not-ready, then stop (the
//! endpoint is removed). Every request sent must succeed, `/readyz` must turn 503 at once, and
//! the process must exit 0 after the drain.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::Site;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn status(addr: std::net::SocketAddr, path: &str) -> Option<u16> {
    // A fresh client each time: a new connection, as a kubelet probe makes.
    Site::plain(addr)
        .send("GET", path, &[], vec![])
        .await
        .ok()
        .map(|r| r.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_fails_no_request_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "drain-test-token").unwrap();
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_inframind"))
        .args(["api", "--listen", &addr.to_string(), "--drain-seconds", "1"])
        .arg("--ingest-token-file")
        .arg(&token)
        .env(
            "INFRAMIND_DATABASE_URL",
            format!("sqlite://{}", dir.path().join("im.db").display()),
        )
        .env("INFRAMIND_MODELS_DIR", dir.path().join("models"))
        .env_remove("INFRAMIND_REDIS_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting inframind api");
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(addr, "/readyz").await != Some(200) {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the API never became ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let endpoint_removed = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let (removed, sent, failed) = (endpoint_removed.clone(), sent.clone(), failed.clone());
            tokio::spawn(async move {
                let conn = Site::plain(addr);
                let body =
                    serde_json::to_vec(&serde_json::json!({"pipeline": format!("p{i}")})).unwrap();
                while !removed.load(Ordering::Acquire) {
                    sent.fetch_add(1, Ordering::Relaxed);
                    let auth = [("authorization", "Bearer drain-test-token")];
                    match conn
                        .send("POST", "/v1/recommendations", &auth, body.clone())
                        .await
                    {
                        Ok((200, _)) => {}
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before = sent.load(Ordering::Relaxed);
    let pid = child.id();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let signalled = Instant::now();
    // The Service's view: poll readiness until the pod reports not-ready.
    loop {
        match status(addr, "/readyz").await {
            Some(503) => break,
            Some(_) => {}
            None => panic!("the API stopped accepting before reporting not-ready"),
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(1),
            "still ready 1 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let not_ready_after = signalled.elapsed();
    endpoint_removed.store(true, Ordering::Release);
    for c in clients {
        c.await.unwrap();
    }
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if signalled.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the API did not exit 20 s after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "drain: {sent} requests ({before} before SIGTERM), {failed} failed; not ready after {:?}; exit {exit}",
        not_ready_after
    );
    assert!(before > 0, "no load before SIGTERM");
    assert_eq!(failed, 0, "requests failed during the drain");
    assert!(exit.success(), "exit status {exit}");
    assert!(
        signalled.elapsed() >= Duration::from_secs(1),
        "exited before its drain period"
    );
}
