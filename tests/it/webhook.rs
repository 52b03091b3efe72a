//! The webhook over real HTTPS with real AdmissionReview bodies; patches are applied to the
//! submitted pods and the resulting pods asserted.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use inframind::admission::Settings;
use inframind::client::{Client, ClientError};
use inframind::model::ModelDir;
use inframind::optimizer::recommender::Recommender;
use inframind::optimizer::{Optimizer, OptimizerConfig};
use inframind::registry::{live, LiveModel, Registry, WatchConfig};
use inframind::simulate::demo_runs;
use inframind::webhook::stats_cache::StatsCache;
use serde_json::{json, Value};

use crate::harness::{
    admission_review, apply_response, pg_store, redis_url, small_model, unique, TestWebhook,
};

fn exploit() -> Settings {
    Settings {
        recommender: Recommender::new(Optimizer::new(OptimizerConfig {
            exploration_rate: 0.0,
            ..Default::default()
        }))
        .with_cache(Arc::new(inframind::optimizer::cache::DecisionCache::new())),
        ..Settings::default()
    }
}

/// A store with simulated history, the stats cache refreshed from it, and a model trained on it.
async fn world() -> (Arc<LiveModel>, Arc<StatsCache>, String) {
    let store = pg_store().await;
    store
        .insert_runs(&demo_runs(900, Utc::now(), 77), Utc::now())
        .await
        .unwrap();
    let stats = Arc::new(StatsCache::new());
    assert_eq!(stats.refresh(&store).await.unwrap(), 6);
    let dir = tempfile::tempdir().unwrap();
    let (model, _) = small_model(&ModelDir::new(dir.path()), "model_v20261127_000001", 77);
    let version = model.version.clone();
    let live = Arc::new(LiveModel::new());
    live.set(model);
    (live, stats, version)
}

fn gitlab_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "generateName": "runner-xdnsadt3-project-2806-concurrent-0",
            "namespace": "ci",
            "labels": {"pod": "runner-xdnsadt3-project-2806-concurrent-0", "project.runner.gitlab.com/id": "2806"},
            "annotations": {
                "job.runner.gitlab.com/url": "https://gitlab.example.com/acme/api/-/jobs/16326",
                "job.runner.gitlab.com/ref": "main",
                "job.runner.gitlab.com/sha": "1989c02f32ea5d2a2d06630711c5a3b895e0ad1e",
                "project.runner.gitlab.com/id": "2806"
            }
        },
        "spec": {
            "containers": [
                {"name": "build", "image": "rust:1.82", "command": ["sh", "-c", "cargo build"],
                 "resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"cpu": "4", "memory": "4Gi"}},
                 "env": [{"name": "MAKEFLAGS", "value": "-k -j2"}, {"name": "CI_JOB_ID", "value": "16326"}]},
                {"name": "helper", "image": "registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper:x86_64-v16.8.0",
                 "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}
            ],
            "initContainers": [{"name": "init-permissions", "image": "helper", "resources": {}}],
            "nodeSelector": {"node.kubernetes.io/instance-type": "m5.2xlarge"},
            "restartPolicy": "Never"
        }
    })
}

fn tekton_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "build-engine-run-x7k2p-compile-", "namespace": "ci",
            "labels": {"tekton.dev/pipeline": "acme/engine", "tekton.dev/pipelineRun": "build-engine-run-x7k2p", "tekton.dev/taskRun": "build-engine-run-x7k2p-compile", "app.kubernetes.io/managed-by": "tekton-pipelines"},
            "annotations": {"pipelinesascode.tekton.dev/branch": "pr-12", "pipelinesascode.tekton.dev/url-repository": "https://github.com/acme/engine", "pipeline.tekton.dev/release": "v0.59.0"}},
        "spec": {"containers": [{"name": "step-compile", "image": "gcc:14", "command": ["/tekton/bin/entrypoint"]}, {"name": "sidecar-registry", "image": "registry:2"}],
                 "initContainers": [{"name": "prepare", "image": "entrypoint"}]}
    })
}

fn bare_pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "nightly-docs-28841234-", "namespace": "ci"},
           "spec": {"containers": [{"name": "docs", "image": "python:3.12"}]}})
}

#[tokio::test]
async fn build_pods_from_ci_systems_are_right_sized() {
    let (live, stats, version) = world().await;
    let wh = TestWebhook::start(exploit(), live, stats.clone()).await;

    // GitLab: requests set, limits scaled, MAKEFLAGS merged, sidecars and init containers untouched.
    let pod = gitlab_pod();
    let (status, resp) = wh
        .review(&admission_review(
            "uid-gitlab",
            "CREATE",
            ("", "v1", "Pod"),
            pod.clone(),
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(resp["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(resp["kind"], "AdmissionReview");
    assert_eq!(resp["response"]["uid"], "uid-gitlab");
    assert_eq!(resp["response"]["allowed"], true);
    let out = apply_response(&pod, &resp);
    let notes = &out["metadata"]["annotations"];
    assert_eq!(notes["inframind.io/decision"], "applied");
    assert_eq!(notes["inframind.io/pipeline"], "acme/api");
    assert_eq!(notes["inframind.io/model-version"], version.as_str());
    assert_eq!(
        notes["job.runner.gitlab.com/ref"], "main",
        "existing annotations kept"
    );
    let build = &out["spec"]["containers"][0];
    let rec: Vec<&str> = notes["inframind.io/recommendation"]
        .as_str()
        .unwrap()
        .split(' ')
        .collect();
    let cpu = rec[0].trim_start_matches("cpu=");
    let mem = rec[1].trim_start_matches("memory=");
    let jobs = rec[2].trim_start_matches("concurrency=");
    assert_eq!(
        build["resources"]["requests"],
        json!({"cpu": cpu, "memory": mem})
    );
    let q = inframind::admission::quantity::parse;
    // cpu limit keeps its 2× ratio to the request; the memory limit is never below the request.
    assert!(
        (q(build["resources"]["limits"]["cpu"].as_str().unwrap()).unwrap() - 2.0 * q(cpu).unwrap())
            .abs()
            < 0.002
    );
    assert!(
        q(build["resources"]["limits"]["memory"].as_str().unwrap()).unwrap() >= q(mem).unwrap()
    );
    assert_eq!(
        build["env"][0],
        json!({"name": "MAKEFLAGS", "value": format!("-k -j{jobs}")})
    );
    assert_eq!(
        build["env"][1],
        json!({"name": "CI_JOB_ID", "value": "16326"})
    );
    assert_eq!(
        build["env"][2],
        json!({"name": "CMAKE_BUILD_PARALLEL_LEVEL", "value": jobs})
    );
    assert_eq!(
        out["spec"]["containers"][1], pod["spec"]["containers"][1],
        "the helper sidecar is untouched"
    );
    assert_eq!(out["spec"]["initContainers"], pod["spec"]["initContainers"]);
    let original: Value =
        serde_json::from_str(notes["inframind.io/original"].as_str().unwrap()).unwrap();
    assert_eq!(original["concurrency"], 2);
    assert_eq!(original["limits"]["cpu"], "4");
    // The decision honours the guards: memory at least 1.2 × the pipeline's p95 peak RSS.
    let p95 = stats.get("acme/api").unwrap().rss_p95_gb.unwrap();
    assert!(inframind::admission::quantity::parse_mem_gb(mem).unwrap() >= 1.2 * p95 - 1e-6);

    // Re-invocation on the mutated pod changes nothing.
    let (_, again) = wh
        .review(&admission_review(
            "uid-gitlab-2",
            "CREATE",
            ("", "v1", "Pod"),
            out.clone(),
        ))
        .await;
    assert!(again["response"]["patch"].is_null());

    // Tekton: no resources or env at all; the maps are created.
    let pod = tekton_pod();
    let (_, out) = wh.admit("uid-tekton", &pod).await;
    let step = &out["spec"]["containers"][0];
    assert!(
        step["resources"]["requests"]["cpu"].is_string() && step["resources"]["limits"].is_null()
    );
    let env = step["env"].as_array().unwrap();
    assert_eq!(
        env.len(),
        inframind::admission::DEFAULT_CONCURRENCY_ENV.len() + 10,
        "every tool's concurrency variable and the reporter's 10 (identity and decision)"
    );
    let var = |name: &str| env.iter().find(|e| e["name"] == name).cloned().unwrap();
    assert_eq!(
        var("INFRAMIND_POD_UID")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.uid"
    );
    assert_eq!(var("INFRAMIND_PIPELINE")["value"], "acme/engine");
    assert_eq!(var("INFRAMIND_BRANCH")["value"], "pr-12");
    assert_eq!(
        var("INFRAMIND_CPU_REQUEST_MILLI")["valueFrom"]["resourceFieldRef"],
        json!({"containerName": "step-compile", "resource": "requests.cpu", "divisor": "1m"})
    );
    assert_eq!(out["metadata"]["labels"]["inframind.io/managed"], "true");
    assert_eq!(
        out["metadata"]["labels"]["tekton.dev/pipeline"],
        "acme/engine"
    );
    assert_eq!(
        out["metadata"]["annotations"]["inframind.io/pipeline"],
        "acme/engine"
    );
    assert_eq!(out["spec"]["containers"][1], pod["spec"]["containers"][1]);

    // A bare pod of a pipeline with no history: annotated, resources left as requested.
    let pod = bare_pod();
    let (_, out) = wh.admit("uid-bare", &pod).await;
    assert_eq!(out["spec"], pod["spec"]);
    assert_eq!(
        out["metadata"]["annotations"]["inframind.io/pipeline"], "ci:nightly-docs",
        "a generateName is only unique in its namespace"
    );
    assert_eq!(
        out["metadata"]["annotations"]["inframind.io/decision"],
        "unchanged"
    );

    // Metrics count what happened.
    let (status, body) = wh
        .connect()
        .send("GET", "/metrics", &[], vec![])
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 200);
    assert!(
        text.contains("inframind_admissions_total{outcome=\"mutated\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("inframind_admissions_total{outcome=\"cold_start\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(&format!("inframind_model_info{{version=\"{version}\"}} 1")),
        "{text}"
    );
    assert!(
        text.contains("inframind_admission_duration_seconds_count 4"),
        "{text}"
    );
    // The decision cache's counters are exported (every decided admission is a hit or a miss).
    let counter = |what: &str| -> u64 {
        let key = format!("inframind_decision_cache{{what=\"{what}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(key.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {what} in {text}"))
    };
    assert!(counter("misses") >= 1, "{text}");
    assert!(counter("bytes") > 0, "{text}");
    assert!(
        counter("hits") + counter("misses") + counter("uncacheable") >= 3,
        "{text}"
    );
}

#[tokio::test]
async fn other_objects_and_operations_are_admitted_unchanged() {
    let (live, stats, _) = world().await;
    let wh = TestWebhook::start(exploit(), live, stats).await;
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {}});
    for (op, kind, obj) in [
        ("CREATE", ("apps", "v1", "Deployment"), deployment),
        ("UPDATE", ("", "v1", "Pod"), gitlab_pod()),
        ("DELETE", ("", "v1", "Pod"), gitlab_pod()),
    ] {
        let (status, resp) = wh.review(&admission_review("u", op, kind, obj)).await;
        assert_eq!(status, 200);
        assert_eq!(resp["response"]["allowed"], true);
        assert!(resp["response"]["patch"].is_null(), "{op} {kind:?}");
    }
    // Opt-out per pod.
    let mut pod = gitlab_pod();
    pod["metadata"]["annotations"]["inframind.io/skip"] = json!("true");
    let (_, resp) = wh
        .review(&admission_review("u", "CREATE", ("", "v1", "Pod"), pod))
        .await;
    assert!(resp["response"]["patch"].is_null());
    // A pod whose limits cannot be read: allowed, no patch, a warning.
    let mut pod = gitlab_pod();
    pod["spec"]["containers"][0]["resources"]["limits"]["memory"] = json!("plenty");
    let (_, resp) = wh
        .review(&admission_review("u", "CREATE", ("", "v1", "Pod"), pod))
        .await;
    assert_eq!(resp["response"]["allowed"], true);
    assert!(resp["response"]["patch"].is_null());
    assert!(resp["response"]["warnings"][0]
        .as_str()
        .unwrap()
        .contains("unreadable memory"));
}

#[tokio::test]
async fn dry_run_only_annotates() {
    let (live, stats, _) = world().await;
    let wh = TestWebhook::start(
        Settings {
            dry_run: true,
            ..exploit()
        },
        live,
        stats,
    )
    .await;
    let pod = gitlab_pod();
    let (_, out) = wh.admit("u", &pod).await;
    assert_eq!(out["spec"], pod["spec"]);
    assert_eq!(
        out["metadata"]["annotations"]["inframind.io/decision"],
        "dry-run"
    );
    assert!(
        out["metadata"]["annotations"]["inframind.io/recommendation"]
            .as_str()
            .unwrap()
            .starts_with("cpu=")
    );
}

#[tokio::test]
async fn bad_requests_get_reasons_and_probes_answer() {
    let wh = TestWebhook::start(
        exploit(),
        Arc::new(LiveModel::new()),
        Arc::new(StatsCache::new()),
    )
    .await;
    let c = wh.connect();
    let (status, body) = c
        .send("POST", "/mutate", &[], b"{not json".to_vec())
        .await
        .unwrap();
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("not an AdmissionReview"));
    let (status, body) = c
        .send(
            "POST",
            "/mutate",
            &[],
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(status, 400);
    assert!(
        String::from_utf8_lossy(&body).contains("missing field `request`"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    // Over the cap: refused from the declared length, before the body is read.
    let (status, _) = c
        .send("POST", "/mutate", &[], vec![b' '; 300 * 1024])
        .await
        .unwrap();
    assert_eq!(status, 413);
    let c = wh.connect();
    assert_eq!(c.send("GET", "/mutate", &[], vec![]).await.unwrap().0, 405);
    assert_eq!(c.send("GET", "/nothing", &[], vec![]).await.unwrap().0, 404);
    assert_eq!(c.send("GET", "/healthz", &[], vec![]).await.unwrap().0, 200);
    assert_eq!(c.send("GET", "/readyz", &[], vec![]).await.unwrap().0, 200);
    wh.state
        .ready
        .store(false, std::sync::atomic::Ordering::Release);
    assert_eq!(c.send("GET", "/readyz", &[], vec![]).await.unwrap().0, 503);
    // Without a model or stats, a pod is still admitted (cold start).
    let (status, resp) = wh
        .review(&admission_review(
            "u",
            "CREATE",
            ("", "v1", "Pod"),
            gitlab_pod(),
        ))
        .await;
    assert_eq!(
        (status, resp["response"]["allowed"].as_bool()),
        (200, Some(true))
    );
    let (_, body) = c.send("GET", "/metrics", &[], vec![]).await.unwrap();
    assert!(String::from_utf8_lossy(&body).contains("inframind_bad_requests_total 3"));
}

#[tokio::test]
async fn certificates_are_reloaded_when_the_files_change() {
    use inframind::serving::tls;
    let dir = tempfile::tempdir().unwrap();
    let names = vec!["localhost".to_string()];
    // Kubernetes Secret volumes: the files are symlinks into a directory that is swapped.
    let install = |gen: &tls::SelfSigned, n: u32| {
        let data = dir.path().join(format!("..data_{n}"));
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("tls.crt"), &gen.serving.cert).unwrap();
        std::fs::write(data.join("tls.key"), &gen.serving.key).unwrap();
        let link = dir.path().join("..data");
        let tmp = dir.path().join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&data, &tmp).unwrap();
        std::fs::rename(&tmp, &link).unwrap();
        for f in ["tls.crt", "tls.key"] {
            let p = dir.path().join(f);
            if !p.exists() {
                std::os::unix::fs::symlink(link.join(f), &p).unwrap();
            }
        }
    };
    let first = tls::self_signed(&names).unwrap();
    install(&first, 1);
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let mut wh = TestWebhook::start(
        exploit(),
        Arc::new(LiveModel::new()),
        Arc::new(StatsCache::new()),
    )
    .await;
    // Swap the test server's store for one watching the files.
    let store = tls::CertStore::from_files(&cert, &key).unwrap();
    let watcher = tls::watch_files(
        store.clone(),
        cert.clone(),
        key.clone(),
        Duration::from_millis(50),
    );
    let state = Arc::new(inframind::webhook::AppState {
        certs: store.clone(),
        settings: exploit(),
        live: Arc::new(LiveModel::new()),
        stats: Arc::new(StatsCache::new()),
        metrics: Default::default(),
        ready: true.into(),
        budget: Duration::from_millis(500),
        max_body: 1 << 20,
    });
    let server = inframind::webhook::server::spawn("127.0.0.1:0".parse().unwrap(), state)
        .await
        .unwrap();
    let addr = server.addr();
    wh.addr = addr;
    wh.tls = inframind::client::tls_config(&first.ca_cert).unwrap();
    assert_eq!(
        wh.connect()
            .send("GET", "/healthz", &[], vec![])
            .await
            .unwrap()
            .0,
        200
    );

    let second = tls::self_signed(&names).unwrap();
    install(&second, 2);
    let new_trust = inframind::client::tls_config(&second.ca_cert).unwrap();
    let healthz = format!("https://localhost:{}/healthz", addr.port());
    let mut reloaded = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if Client::with_tls(new_trust.clone())
            .request("GET", &healthz, &[], vec![])
            .await
            .is_ok()
        {
            reloaded = true;
            break;
        }
    }
    assert!(reloaded, "the new certificate was never served");
    assert!(store.reloads() >= 1);
    // A fresh client and config (no pooled connection, no session to resume) that trusts only
    // the old CA no longer verifies.
    let old_trust = inframind::client::tls_config(&first.ca_cert).unwrap();
    let err = Client::with_tls(old_trust)
        .request("GET", &healthz, &[], vec![])
        .await
        .expect_err("the old CA no longer verifies");
    assert!(matches!(err, ClientError::Tls { .. }), "{err}");
    watcher.abort();
    server.abort();
}

#[tokio::test]
async fn two_webhook_replicas_follow_a_promotion_and_survive_redis_loss() {
    let store = pg_store().await;
    store
        .insert_runs(&demo_runs(600, Utc::now(), 78), Utc::now())
        .await
        .unwrap();
    let stats = Arc::new(StatsCache::new());
    stats.refresh(&store).await.unwrap();
    let prefix = unique("imwh");
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(ModelDir::new(dir.path()), Some(&redis_url()), &prefix)
        .await
        .unwrap();
    let (m1, meta1) = small_model(reg.dir(), "model_v20261127_000011", 11);
    let (m2, meta2) = small_model(reg.dir(), "model_v20261127_000012", 12);
    reg.publish(&m1, &meta1).await.unwrap();
    reg.publish(&m2, &meta2).await.unwrap();
    reg.promote(&meta1.version).await.unwrap();

    let mut replicas = Vec::new();
    for i in 0..2 {
        let live = Arc::new(LiveModel::new());
        let cfg = WatchConfig {
            dir: ModelDir::new(dir.path().join(format!("replica{i}"))),
            redis_url: Some(redis_url()),
            prefix: prefix.clone(),
            poll: Duration::from_secs(30),
        };
        live::bootstrap(&live, &cfg).await;
        let watcher = live::spawn(live.clone(), cfg);
        replicas.push((
            TestWebhook::start(exploit(), live, stats.clone()).await,
            watcher,
        ));
    }
    let version_of = |resp: &Value| {
        apply_response(&gitlab_pod(), resp)["metadata"]["annotations"]["inframind.io/model-version"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for (wh, _) in &replicas {
        let (_, resp) = wh
            .review(&admission_review(
                "a",
                "CREATE",
                ("", "v1", "Pod"),
                gitlab_pod(),
            ))
            .await;
        assert_eq!(version_of(&resp), meta1.version);
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // both subscribed
    let promoted = std::time::Instant::now();
    reg.promote(&meta2.version).await.unwrap();
    for (wh, _) in &replicas {
        let mut served = None;
        for _ in 0..250 {
            let (_, resp) = wh
                .review(&admission_review(
                    "b",
                    "CREATE",
                    ("", "v1", "Pod"),
                    gitlab_pod(),
                ))
                .await;
            if version_of(&resp) == meta2.version {
                served = Some(promoted.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(4)).await;
        }
        let took = served.expect("the replica serves the promoted version");
        println!("promotion to first admission with the new model: {took:?}");
        assert!(took < Duration::from_secs(1), "took {took:?}");
    }
    // Redis goes away (the watchers lose it): admissions continue with the model in memory.
    for (_, w) in &replicas {
        w.abort();
    }
    let broken = Arc::new(LiveModel::new());
    let cfg = WatchConfig {
        dir: ModelDir::new(dir.path().join("replica0")),
        redis_url: Some("redis://127.0.0.1:1".into()),
        prefix: prefix.clone(),
        poll: Duration::from_millis(50),
    };
    live::bootstrap(&broken, &cfg).await;
    let w = live::spawn(broken.clone(), cfg);
    let wh = TestWebhook::start(exploit(), broken, stats.clone()).await;
    let (status, resp) = wh
        .review(&admission_review(
            "c",
            "CREATE",
            ("", "v1", "Pod"),
            gitlab_pod(),
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        version_of(&resp),
        meta2.version,
        "the local copy kept by the replica is served"
    );
    w.abort();
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_is_refused() {
    let wh = TestWebhook::start(
        exploit(),
        Arc::new(LiveModel::new()),
        Arc::new(StatsCache::new()),
    )
    .await;
    let other = inframind::serving::tls::self_signed(&["localhost".to_string()]).unwrap();
    let wrong = inframind::client::tls_config(&other.ca_cert).unwrap();
    let err = Client::with_tls(wrong)
        .request(
            "GET",
            &format!("https://localhost:{}/healthz", wh.addr.port()),
            &[],
            vec![],
        )
        .await
        .expect_err("handshake must fail with an untrusted CA");
    assert!(matches!(err, ClientError::Tls { .. }), "{err}");
}

#[tokio::test]
async fn a_self_signed_ca_is_merged_into_the_webhook_configuration() {
    // A fake of the API's contract for MutatingWebhookConfigurations: GET returns the stored
    // object, a JSON patch is applied to it (a failed `test` is a 422, as the API answers).
    use http::{Request, Response};
    use kube::client::Body;
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let existing_ca = inframind::serving::tls::self_signed(&["a".to_string()])
        .unwrap()
        .ca_cert;
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let stored = Arc::new(std::sync::Mutex::new(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "inframind", "resourceVersion": "1"},
        "webhooks": [
            {"name": "namespaces.webhook.inframind.io", "clientConfig": {"caBundle": b64(&existing_ca), "service": {"name": "w", "namespace": "inframind", "path": "/mutate"}}, "admissionReviewVersions": ["v1"], "sideEffects": "None"},
            {"name": "pods.webhook.inframind.io", "clientConfig": {"service": {"name": "w", "namespace": "inframind", "path": "/mutate"}}, "admissionReviewVersions": ["v1"], "sideEffects": "None"}
        ]
    })));
    let api_state = stored.clone();
    let api = tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            assert_eq!(
                req.uri().path(),
                "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/inframind"
            );
            let method = req.method().clone();
            let body = http_body_util::BodyExt::collect(req.into_body())
                .await
                .unwrap()
                .to_bytes();
            let mut obj = api_state.lock().unwrap();
            if method == http::Method::PATCH {
                let patch: json_patch::Patch = serde_json::from_slice(&body).unwrap();
                if json_patch::patch(&mut obj, &patch).is_err() {
                    send.send_response(Response::builder().status(422).body(Body::from(serde_json::to_vec(&json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 422, "reason": "Invalid", "message": "test failed"})).unwrap())).unwrap());
                    continue;
                }
            }
            send.send_response(
                Response::builder()
                    .status(200)
                    .body(Body::from(serde_json::to_vec(&*obj).unwrap()))
                    .unwrap(),
            );
        }
    });
    let ours = inframind::serving::tls::self_signed(&["w.inframind.svc".to_string()])
        .unwrap()
        .ca_cert;
    inframind::webhook::ca::publish_ca(client.clone(), "inframind", &ours)
        .await
        .unwrap();
    // Publishing again changes nothing (no PATCH needed).
    inframind::webhook::ca::publish_ca(client, "inframind", &ours)
        .await
        .unwrap();
    let obj = stored.lock().unwrap().clone();
    let bundle = |i: usize| {
        use base64::Engine;
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(
                    obj["webhooks"][i]["clientConfig"]["caBundle"]
                        .as_str()
                        .unwrap(),
                )
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(
        inframind::webhook::ca::split_pem(&bundle(0)).len(),
        2,
        "the other replica's CA is kept"
    );
    assert!(bundle(0).contains(ours.trim()) && bundle(0).contains(existing_ca.trim()));
    assert_eq!(bundle(1).trim(), ours.trim());
    api.abort();
}
