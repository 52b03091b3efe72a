//! The in-pod reporter against fake cgroup trees and a live API.
//!
//! Each test runs the real `inframind report` binary with a clean environment (only what the
//! webhook would inject, plus the test's flags) against a fake cgroup tree and a fake `/proc` in
//! a temp dir, posting to a small warp stand-in for the ingest API on 127.0.0.1:0 that checks the
//! bearer token and records every body it receives. The stand-in only plays the API's contract
//! (`{"accepted", "rejected", "duplicates"}`, 401, 503 with Retry-After); the real ingest API's
//! end-to-end test, with PostgreSQL behind it, lives with the API.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use warp::http::StatusCode;
use warp::{Filter, Reply};

const TOKEN: &str = "t0k3n-for-tests";
const UID: &str = "3f8a2c1e-5b7d-4e09-9c61-2d4f8a7b1e30";

/// One request the stand-in received.
#[derive(Debug, Clone)]
struct Received {
    authorization: Option<String>,
    body: Value,
}

/// A scripted answer: status, Retry-After, JSON body.
type Answer = (u16, Option<&'static str>, Value);

fn accepted() -> Answer {
    (
        200,
        None,
        json!({"accepted": 1, "rejected": [], "duplicates": 0}),
    )
}

struct FakeApi {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    handle: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

impl FakeApi {
    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// `POST /v1/runs`: 401 without the right bearer token, else the next scripted answer (then
/// "accepted" forever).
fn routes(
    received: Arc<Mutex<Vec<Received>>>,
    script: Vec<Answer>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    warp::post()
        .and(warp::path!("v1" / "runs"))
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::body::bytes())
        .map(move |authorization: Option<String>, body: bytes::Bytes| {
            received.lock().unwrap().push(Received {
                authorization: authorization.clone(),
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            });
            if authorization.as_deref() != Some(&format!("Bearer {TOKEN}")) {
                return warp::reply::with_status(
                    warp::reply::json(&json!({"error": "invalid bearer token"})),
                    StatusCode::UNAUTHORIZED,
                )
                .into_response();
            }
            let (status, retry_after, body) =
                script.lock().unwrap().pop_front().unwrap_or_else(accepted);
            let reply = warp::reply::with_status(
                warp::reply::json(&body),
                StatusCode::from_u16(status).unwrap(),
            );
            match retry_after {
                Some(secs) => warp::reply::with_header(reply, "retry-after", secs).into_response(),
                None => reply.into_response(),
            }
        })
}

async fn fake_api(script: Vec<Answer>) -> FakeApi {
    let received = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let filter = routes(received.clone(), script);
    let handle = tokio::spawn(async move {
        warp::serve(filter).incoming(listener).run().await;
    });
    FakeApi {
        addr,
        received,
        handle,
    }
}

/// The same stand-in over HTTPS, with a certificate for `localhost` from a fresh CA (returned).
async fn fake_api_tls(script: Vec<Answer>) -> (FakeApi, String) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::service::TowerToHyperService;
    use inframind::serving::tls;
    let generated = tls::self_signed(&["localhost".to_string()]).unwrap();
    let config = tls::CertStore::new(&generated.serving)
        .unwrap()
        .server_config()
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let received = Arc::new(Mutex::new(Vec::new()));
    let service = warp::service(routes(received.clone(), script));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, service) = (acceptor.clone(), service.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                    .await;
            });
        }
    });
    (
        FakeApi {
            addr,
            received,
            handle,
        },
        generated.ca_cert,
    )
}

/// A build pod's filesystem as the reporter sees it: cgroup tree, /proc, token file.
struct Pod {
    dir: tempfile::TempDir,
}

impl Pod {
    fn new() -> Pod {
        let pod = Pod {
            dir: tempfile::tempdir().unwrap(),
        };
        pod.write("token", &format!("{TOKEN}\n"));
        pod
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn arg(&self, rel: &str) -> String {
        self.path(rel).display().to_string()
    }

    fn write(&self, rel: &str, content: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    /// A cgroup v2 container (private cgroup namespace): 3 GiB peak, 1.5 GiB read over two
    /// devices, 0.5 GiB written.
    fn cgroup_v2(&self) {
        self.write(
            "cgroup/cgroup.controllers",
            "cpuset cpu io memory hugetlb pids rdma misc\n",
        );
        self.write("cgroup/memory.peak", "3221225472\n");
        self.write("cgroup/memory.current", "1048576000\n");
        self.write(
            "cgroup/io.stat",
            "259:0 rbytes=1073741824 wbytes=536870912 rios=20011 wios=9120 dbytes=0 dios=0\n\
             253:0 rbytes=536870912 wbytes=0 rios=4410 wios=0 dbytes=0 dios=0\n",
        );
        self.write(
            "cgroup/cpu.stat",
            "usage_usec 1402889211\nuser_usec 1200001000\nsystem_usec 202888211\n\
             nr_periods 0\nnr_throttled 0\nthrottled_usec 0\n",
        );
    }

    /// A cgroup v1 container: the runtime mounted each controller's own cgroup at the
    /// controller's directory; /proc/self/cgroup names host paths that do not exist there.
    fn cgroup_v1(&self) {
        self.write("cgroup/memory/memory.max_usage_in_bytes", "1610612736\n");
        self.write("cgroup/memory/memory.usage_in_bytes", "805306368\n");
        self.write(
            "cgroup/blkio/blkio.throttle.io_service_bytes",
            "8:0 Read 268435456\n8:0 Write 268435456\n8:0 Sync 536870912\n8:0 Async 0\n\
             8:0 Discard 0\n8:0 Total 536870912\n\
             8:16 Read 0\n8:16 Write 536870912\n8:16 Sync 0\n8:16 Async 536870912\n\
             8:16 Discard 0\n8:16 Total 536870912\nTotal 1073741824\n",
        );
        self.write("cgroup/blkio/blkio.io_service_bytes_recursive", "Total 0\n");
        self.write("cgroup/cpuacct/cpuacct.usage", "84217563000\n");
        self.write(
            "proc/self/cgroup",
            "12:memory:/kubepods/burstable/pod3f8a/cri-abc\n\
             5:cpu,cpuacct:/kubepods/burstable/pod3f8a/cri-abc\n\
             3:blkio:/kubepods/burstable/pod3f8a/cri-abc\n",
        );
    }

    /// /proc where the container's PID 1 started 625 s ago.
    fn proc_started_625s_ago(&self) {
        self.write("proc/uptime", "5000.00 9000.00\n");
        self.write(
            "proc/1/stat",
            "1 (sh) S 0 1 1 0 -1 4194560 1423 58203 0 12 3 2 41 17 20 0 1 0 437500 4505600 214 \
             18446744073709551615 1 1 0 0 0 0 0 3686404 1266761467 0 0 0 17 1 0 0 0 0 0\n",
        );
        self.write("proc/self/cgroup", "0::/\n");
    }
}

/// What the webhook injects into the build container.
fn downward_api_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("INFRAMIND_POD_UID", UID),
        ("INFRAMIND_POD_NAME", "acme-api-build-7x2kq"),
        ("INFRAMIND_POD_NAMESPACE", "ci"),
        ("INFRAMIND_PIPELINE", "acme/api"),
        ("INFRAMIND_BRANCH", "feature/cache"),
        ("INFRAMIND_IMAGE", "rust:1.89"),
        ("INFRAMIND_NODE_TYPE", "m5.2xlarge"),
        ("INFRAMIND_CPU_REQUEST_MILLI", "2500"),
        ("INFRAMIND_MEM_REQUEST_MIB", "6144"),
        ("INFRAMIND_CONCURRENCY", "6"),
    ]
}

/// Runs `inframind report ARGS` with exactly `env` (no PATH: no ccache or sccache is found).
async fn report(env: Vec<(&'static str, String)>, args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_inframind"))
            .arg("report")
            .args(&args)
            .env_clear()
            .envs(env)
            .output()
            .expect("running inframind report")
    })
    .await
    .unwrap()
}

fn env_of(pairs: Vec<(&'static str, &'static str)>) -> Vec<(&'static str, String)> {
    pairs.into_iter().map(|(k, v)| (k, v.to_string())).collect()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    )
}

/// Exit 0, and one `warning:` line containing `needle`.
fn assert_warned(out: &Output, needle: &str) {
    assert_eq!(out.status.code(), Some(0), "{}", describe(out));
    let err = stderr(out);
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning: ")).collect();
    assert_eq!(warnings.len(), 1, "{}", describe(out));
    assert!(warnings[0].contains(needle), "{}", describe(out));
}

/// Exit 1 with an `error:` containing `needle`.
fn assert_failed(out: &Output, needle: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", describe(out));
    let err = stderr(out);
    assert!(
        err.lines()
            .any(|l| l.starts_with("error: ") && l.contains(needle)),
        "{}",
        describe(out)
    );
    assert!(!err.contains("warning: "), "{}", describe(out));
}

/// The received row without `started_at`, which is checked against the clock: it must be the
/// run's duration before the moment the reporter ran.
fn without_started_at(
    mut body: Value,
    duration_s: f64,
    before: DateTime<Utc>,
    after: DateTime<Utc>,
) -> Value {
    let started = body
        .as_object_mut()
        .unwrap()
        .remove("started_at")
        .expect("started_at");
    let started = DateTime::parse_from_rfc3339(started.as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    let d = chrono::Duration::milliseconds((duration_s * 1000.0) as i64);
    let slack = chrono::Duration::seconds(1);
    assert!(
        started >= before - d - slack && started <= after - d,
        "started_at {started} is not {duration_s}s before [{before}, {after}]"
    );
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_container_posts_the_exact_row_with_the_bearer_token() {
    let api = fake_api(vec![]).await;
    let pod = Pod::new();
    pod.cgroup_v2();
    pod.proc_started_625s_ago();
    // `ccache --print-stats` saved by the build: 250 + 20 hits, 130 misses.
    pod.write(
        "ccache-stats.txt",
        "stats_updated_timestamp\t1764230400\ncache_miss\t130\ncalled_for_link\t12\n\
         direct_cache_hit\t250\ndirect_cache_miss\t160\nlocal_storage_hit\t270\n\
         preprocessed_cache_hit\t20\npreprocessed_cache_miss\t130\n",
    );
    let before = Utc::now();
    let out = report(
        env_of(downward_api_env()),
        args(&[
            "--endpoint",
            &format!("http://{}", api.addr),
            "--token-file",
            &pod.arg("token"),
            "--cgroup-root",
            &pod.arg("cgroup"),
            "--proc-root",
            &pod.arg("proc"),
            "--num-steps",
            "5",
            "--ccache-stats-file",
            &pod.arg("ccache-stats.txt"),
        ]),
    )
    .await;
    let after = Utc::now();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(!stderr(&out).contains("warning"), "{}", describe(&out));
    assert!(
        stderr(&out).contains(&format!("run pod-{UID} recorded")),
        "{}",
        describe(&out)
    );
    let received = api.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(
        received[0].authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(
        without_started_at(received[0].body.clone(), 625.0, before, after),
        json!({
            "run_id": format!("pod-{UID}"),
            "pipeline": "acme/api",
            "branch": "feature/cache",
            "image": "rust:1.89",
            "node": "m5.2xlarge",
            "cpu_req": 2.5,
            "mem_req_gb": 6,
            "concurrency": 6,
            "max_rss_gb": 3,
            "io_read_gb": 1.5,
            "io_write_gb": 0.5,
            "cache_hit_ratio": 0.675,
            "num_steps": 5,
            "avg_step_duration_s": 125,
            "duration_s": 625,
            "success": 1,
            "retry_count": 0,
        })
    );
    // What the API will store: it validates as a run record.
    let row = received[0]
        .body
        .as_object()
        .unwrap()
        .clone()
        .into_iter()
        .collect();
    let run = inframind::record::validate_row(&row, Utc::now()).unwrap();
    assert_eq!(run.run_id, format!("pod-{UID}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_container_of_a_failed_build_posts_the_exact_row() {
    let api = fake_api(vec![]).await;
    let pod = Pod::new();
    pod.cgroup_v1();
    // `sccache --show-stats --stats-format=json`: 150 hits, 50 misses over two languages.
    pod.write(
        "sccache.json",
        r#"{"stats":{"compile_requests":230,"requests_executed":200,
            "cache_hits":{"counts":{"Rust":90,"C/C++":60},"adv_counts":{"rust":90,"clang":60}},
            "cache_misses":{"counts":{"Rust":30,"C/C++":20},"adv_counts":{"rust":30,"clang":20}},
            "cache_errors":{"counts":{},"adv_counts":{}},"cache_writes":50,"compile_fails":1},
            "cache_location":"Local disk: \"/cache/sccache\"","cache_size":734003200,
            "max_cache_size":10737418240,"version":"0.10.0"}"#,
    );
    // Only what is required: no branch, image or node type.
    let env: Vec<_> = downward_api_env()
        .into_iter()
        .filter(|(k, _)| {
            !matches!(
                *k,
                "INFRAMIND_BRANCH" | "INFRAMIND_IMAGE" | "INFRAMIND_NODE_TYPE"
            )
        })
        .chain([
            ("INFRAMIND_ENDPOINT", "placeholder"),
            ("INFRAMIND_TOKEN_FILE", "placeholder"),
        ])
        .collect();
    let mut env = env_of(env);
    for (k, v) in env.iter_mut() {
        match *k {
            "INFRAMIND_ENDPOINT" => *v = format!("http://{}/", api.addr),
            "INFRAMIND_TOKEN_FILE" => *v = pod.arg("token"),
            _ => {}
        }
    }
    let before = Utc::now();
    let out = report(
        env,
        args(&[
            "--cgroup-root",
            &pod.arg("cgroup"),
            "--proc-root",
            &pod.arg("proc"),
            "--duration-s",
            "300",
            "--failed",
            "--sccache-stats-file",
            &pod.arg("sccache.json"),
        ]),
    )
    .await;
    let after = Utc::now();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(!stderr(&out).contains("warning"), "{}", describe(&out));
    let received = api.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(
        without_started_at(received[0].body.clone(), 300.0, before, after),
        json!({
            "run_id": format!("pod-{UID}"),
            "pipeline": "acme/api",
            "cpu_req": 2.5,
            "mem_req_gb": 6,
            "concurrency": 6,
            "max_rss_gb": 1.5,
            "io_read_gb": 0.25,
            "io_write_gb": 0.75,
            "cache_hit_ratio": 0.75,
            "duration_s": 300,
            "success": 0,
            "retry_count": 0,
        })
    );
}

/// The flags for a pod whose build took 60 s, posting to `url`.
fn quick_args(pod: &Pod, url: &str) -> Vec<String> {
    args(&[
        "--endpoint",
        url,
        "--token-file",
        &pod.arg("token"),
        "--cgroup-root",
        &pod.arg("cgroup"),
        "--proc-root",
        &pod.arg("proc"),
        "--duration-s",
        "60",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_row_is_a_warning_and_fails_only_with_strict() {
    let rejection = (
        200,
        None,
        json!({"accepted": 0, "duplicates": 0,
               "rejected": [{"row": 0, "field": "pipeline", "reason": "unknown pipeline `acme/api`"}]}),
    );
    let api = fake_api(vec![rejection.clone(), rejection]).await;
    let pod = Pod::new();
    pod.cgroup_v2();
    let url = format!("http://{}", api.addr);
    let out = report(env_of(downward_api_env()), quick_args(&pod, &url)).await;
    assert_warned(
        &out,
        "the API rejected the run (HTTP 200): field `pipeline`: unknown pipeline `acme/api`",
    );
    assert!(
        stderr(&out).contains("ci/acme-api-build-7x2kq"),
        "{}",
        describe(&out)
    );

    let mut strict = quick_args(&pod, &url);
    strict.push("--strict".into());
    let out = report(env_of(downward_api_env()), strict).await;
    assert_failed(&out, "field `pipeline`: unknown pipeline");
    assert_eq!(api.received().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_a_warning_and_fails_only_with_strict() {
    let api = fake_api(vec![]).await;
    let pod = Pod::new();
    pod.cgroup_v2();
    pod.write("token", "  not-the-token \n");
    let url = format!("http://{}", api.addr);
    let out = report(env_of(downward_api_env()), quick_args(&pod, &url)).await;
    assert_warned(
        &out,
        "refused the bearer token (HTTP 401: invalid bearer token); check --token-file",
    );
    let mut env = env_of(downward_api_env());
    env.push(("INFRAMIND_REPORT_STRICT", "true".into()));
    let out = report(env, quick_args(&pod, &url)).await;
    assert_failed(&out, "refused the bearer token");
    // No token at all.
    let a: Vec<String> = quick_args(&pod, &url)
        .into_iter()
        .filter(|a| a != "--token-file" && !a.ends_with("/token"))
        .collect();
    let out = report(env_of(downward_api_env()), a).await;
    assert_warned(
        &out,
        "requires a bearer token (HTTP 401): pass --token-file",
    );
    let received = api.received();
    assert_eq!(received.len(), 3, "a 401 is not retried");
    assert_eq!(received[2].authorization, None);
    assert_eq!(
        received[0].authorization.as_deref(),
        Some("Bearer not-the-token")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_is_a_warning_and_fails_only_with_strict() {
    // A port nothing listens on.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let pod = Pod::new();
    let url = format!("http://{addr}");
    let started = Instant::now();
    let out = report(env_of(downward_api_env()), quick_args(&pod, &url)).await;
    assert_warned(
        &out,
        &format!("posting to http://{addr}/v1/runs failed 3 times"),
    );
    assert!(
        stderr(&out).contains("onnection refused"),
        "{}",
        describe(&out)
    );
    // Two retries, a second apart, well within the default 10 s.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );

    let mut strict = quick_args(&pod, &url);
    strict.extend(args(&["--strict", "--timeout-seconds", "1.5"]));
    let started = Instant::now();
    let out = report(env_of(downward_api_env()), strict).await;
    assert_failed(&out, "would pass the");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_is_retried_after_its_retry_after() {
    let unavailable = (
        503,
        Some("1"),
        json!({"error": "the telemetry store is unavailable"}),
    );
    let api = fake_api(vec![unavailable]).await;
    let pod = Pod::new();
    pod.cgroup_v2();
    let url = format!("http://{}", api.addr);
    let started = Instant::now();
    let out = report(env_of(downward_api_env()), quick_args(&pod, &url)).await;
    let elapsed = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(!stderr(&out).contains("warning"), "{}", describe(&out));
    assert!(stderr(&out).contains("recorded"), "{}", describe(&out));
    let received = api.received();
    assert_eq!(received.len(), 2, "{received:?}");
    assert_eq!(
        received[0].body, received[1].body,
        "the retry posts the same row"
    );
    assert_eq!(received[1].body["run_id"], json!(format!("pod-{UID}")));
    assert!(
        elapsed >= Duration::from_secs(1),
        "Retry-After honoured: {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_beyond_the_timeout_gives_up_at_once() {
    let unavailable = (
        503,
        Some("30"),
        json!({"error": "the telemetry store is unavailable"}),
    );
    let api = fake_api(vec![unavailable]).await;
    let pod = Pod::new();
    let url = format!("http://{}", api.addr);
    let mut a = quick_args(&pod, &url);
    a.extend(args(&["--timeout-seconds", "3"]));
    let started = Instant::now();
    let out = report(env_of(downward_api_env()), a).await;
    assert_warned(&out, "HTTP 503");
    assert!(
        stderr(&out).contains("retrying in 30s would pass"),
        "{}",
        describe(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(api.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_the_api_ca_and_refusal_of_another_ca() {
    let (api, ca) = fake_api_tls(vec![]).await;
    let pod = Pod::new();
    pod.cgroup_v2();
    pod.write("ca.pem", &ca);
    let url = format!("https://localhost:{}", api.addr.port());
    let mut a = quick_args(&pod, &url);
    a.extend(args(&["--ca-file", &pod.arg("ca.pem")]));
    let out = report(env_of(downward_api_env()), a).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stderr(&out).contains("recorded at https://localhost:"),
        "{}",
        describe(&out)
    );
    assert_eq!(api.received().len(), 1);
    assert_eq!(api.received()[0].body["max_rss_gb"], json!(3));

    let other = inframind::serving::tls::self_signed(&["localhost".to_string()]).unwrap();
    pod.write("other-ca.pem", &other.ca_cert);
    let mut env = env_of(downward_api_env());
    env.push(("INFRAMIND_CA_FILE", pod.arg("other-ca.pem")));
    let out = report(env, quick_args(&pod, &url)).await;
    assert_warned(&out, "TLS handshake with localhost");
    assert_eq!(api.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_malformed_inputs_are_warnings_not_usage_errors() {
    let api = fake_api(vec![]).await;
    let pod = Pod::new();
    let url = format!("http://{}", api.addr);

    // No identity at all: every missing variable is named.
    let out = report(vec![], quick_args(&pod, &url)).await;
    assert_warned(
        &out,
        "INFRAMIND_POD_UID (--pod-uid), INFRAMIND_PIPELINE (--pipeline), \
         INFRAMIND_CPU_REQUEST_MILLI (--cpu-request-milli), INFRAMIND_MEM_REQUEST_MIB \
         (--mem-request-mib), INFRAMIND_CONCURRENCY (--concurrency) not set",
    );
    let mut strict = quick_args(&pod, &url);
    strict.push("--strict".into());
    assert_failed(&report(vec![], strict).await, "INFRAMIND_POD_UID");

    // Values the row's validation refuses, named with where they came from.
    let mut env = env_of(downward_api_env());
    env.retain(|(k, _)| *k != "INFRAMIND_CPU_REQUEST_MILLI");
    env.push(("INFRAMIND_CPU_REQUEST_MILLI", "0".into()));
    let out = report(env, quick_args(&pod, &url)).await;
    assert_warned(
        &out,
        "field `cpu_req`: must be greater than 0 (check INFRAMIND_CPU_REQUEST_MILLI",
    );

    // Malformed values and flags that clap alone would turn into exit status 2.
    let mut env = env_of(downward_api_env());
    env.retain(|(k, _)| *k != "INFRAMIND_CONCURRENCY");
    env.push(("INFRAMIND_CONCURRENCY", "lots".into()));
    let out = report(env, quick_args(&pod, &url)).await;
    assert_warned(
        &out,
        "INFRAMIND_CONCURRENCY (--concurrency) is `lots`, not a number",
    );
    let mut a = quick_args(&pod, &url);
    a.extend(args(&["--num-step", "5"]));
    let out = report(env_of(downward_api_env()), a).await;
    assert_warned(&out, "unexpected arguments `--num-step 5`");
    let mut a = quick_args(&pod, &url);
    a.extend(args(&["--num-steps", "-2"]));
    let out = report(env_of(downward_api_env()), a).await;
    assert_warned(&out, "field `num_steps`: must not be negative");

    // Neither --duration-s nor a readable /proc.
    let a: Vec<String> = quick_args(&pod, &url)
        .into_iter()
        .take_while(|a| a != "--duration-s")
        .collect();
    let out = report(env_of(downward_api_env()), a).await;
    assert_warned(&out, "the build's duration is unknown");

    // No endpoint, and an endpoint that is not a URL.
    let out = report(env_of(downward_api_env()), vec![]).await;
    assert_warned(
        &out,
        "no endpoint: set INFRAMIND_ENDPOINT or pass --endpoint",
    );
    let out = report(
        env_of(downward_api_env()),
        args(&["--endpoint", "inframind:8080"]),
    )
    .await;
    assert_warned(&out, "use http:// or https://");

    assert!(api.received().is_empty(), "nothing invalid was posted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_the_row_with_the_hit_ratio_of_ccache_found_on_path() {
    let pod = Pod::new();
    pod.cgroup_v2();
    pod.proc_started_625s_ago();
    // A ccache on PATH that answers only the machine-readable stats invocation.
    let ccache = pod.path("bin/ccache");
    pod.write(
        "bin/ccache",
        "#!/bin/sh\n[ \"$*\" = \"--print-stats\" ] || exit 2\n\
         printf 'direct_cache_hit\\t30\\npreprocessed_cache_hit\\t10\\ncache_miss\\t10\\n'\n",
    );
    make_executable(&ccache);
    let mut env = env_of(downward_api_env());
    env.push(("PATH", pod.arg("bin")));
    env.push(("INFRAMIND_REPORT_DRY_RUN", "1".into()));
    let out = report(
        env,
        args(&[
            "--cgroup-root",
            &pod.arg("cgroup"),
            "--proc-root",
            &pod.arg("proc"),
        ]),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(!stderr(&out).contains("warning"), "{}", describe(&out));
    let row: Value = serde_json::from_slice(&out.stdout).expect("the row as JSON on stdout");
    assert_eq!(row["cache_hit_ratio"], json!(0.8));
    assert_eq!(row["duration_s"], json!(625));
    assert_eq!(row["max_rss_gb"], json!(3));
    assert_eq!(row["run_id"], json!(format!("pod-{UID}")));
    assert!(row.get("num_steps").is_none());
}

fn make_executable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}
