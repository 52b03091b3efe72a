//! Every CI system's build pod (tests/fixtures/pods, built from each system's source) posted to
//! the webhook over real HTTPS: the recognised pipeline and branch, the chosen container, helpers
//! untouched, the env each build tool reads, namespace LimitRange and ResourceQuota bounds, and
//! same-named pipelines in two namespaces kept apart. No API server runs here: the namespace
//! bounds come either from a fake of the API's LIST/WATCH HTTP contract (kube-rs `tower_test`)
//! driving the real reflector, or are set in the webhook's in-memory policy cache.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use inframind::admission::contract::{self, form_of, read_jobs, Form, DEFAULT_CONCURRENCY_ENV};
use inframind::admission::limits::{NamespacePolicy, Policies};
use inframind::admission::quantity::{parse_cpu, parse_mem_gb};
use inframind::admission::Settings;
use inframind::optimizer::recommender::Recommender;
use inframind::optimizer::{Optimizer, OptimizerConfig};
use inframind::registry::LiveModel;
use inframind::stats::PipelineStats;
use inframind::webhook::stats_cache::StatsCache;
use inframind::BuildConfig;
use k8s_openapi::api::core::v1::{LimitRange, ResourceQuota};
use kube::client::Body;
use serde_json::{json, Value};
use tower_test::mock;

use crate::harness::{admission_review, apply_response, TestWebhook};

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/pods/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// History for `pipeline`: its last success ran at 3 cpu, 6 GiB, 3 jobs.
fn history(pipeline: &str) -> PipelineStats {
    PipelineStats {
        pipeline: pipeline.into(),
        runs: 5,
        successes: 5,
        last_success: Some(BuildConfig {
            cpu: 3.0,
            mem_gb: 6.0,
            concurrency: 3,
        }),
        rss_p95_gb: Some(2.0),
        ..Default::default()
    }
}

fn settings(policies: Arc<Policies>) -> Settings {
    Settings {
        recommender: Recommender::new(Optimizer::new(OptimizerConfig {
            exploration_rate: 0.0,
            ..Default::default()
        })),
        policies,
        // No model here: the guarded baseline is applied only with the operator's opt-in.
        cold_start_apply_defaults: true,
        ..Settings::default()
    }
}

/// Posts `pod` for creation in `namespace`; returns the response and the patched pod.
async fn admit(wh: &TestWebhook, uid: &str, namespace: &str, pod: &Value) -> (Value, Value) {
    let mut review = admission_review(uid, "CREATE", ("", "v1", "Pod"), pod.clone());
    review["request"]["namespace"] = json!(namespace);
    let (status, resp) = wh.review(&review).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["response"]["allowed"], true);
    let out = apply_response(pod, &resp);
    (resp, out)
}

fn env_value<'a>(c: &'a Value, name: &str) -> Option<&'a Value> {
    c["env"].as_array()?.iter().find(|e| e["name"] == name)
}

/// One CI system's expectations.
struct Case {
    fixture: &'static str,
    pipeline: &'static str,
    branch: &'static str,
    container: &'static str,
    helpers: &'static [&'static str],
    /// Tool variables whose merged value is asserted exactly.
    env: &'static [(&'static str, &'static str)],
}

const CASES: &[Case] = &[
    Case {
        fixture: "gitlab",
        pipeline: "acme/api",
        branch: "feature/fast",
        container: "build",
        helpers: &["helper", "svc-0"],
        env: &[
            ("MAKEFLAGS", "-k --output-sync -j3"),
            ("GOFLAGS", "-mod=mod -p=3"),
            (
                "GRADLE_OPTS",
                "-Xmx2g -Dorg.gradle.daemon=false -Dorg.gradle.workers.max=3",
            ),
        ],
    },
    Case {
        fixture: "github-arc-runner",
        pipeline: "ci:linux-x64",
        branch: "unknown",
        container: "runner",
        helpers: &["dind"],
        env: &[("MAKEFLAGS", "-j3")],
    },
    Case {
        fixture: "github-arc-workflow",
        pipeline: "ci:engine",
        branch: "unknown",
        container: "job",
        helpers: &["redis"],
        env: &[("CARGO_BUILD_JOBS", "3")],
    },
    Case {
        fixture: "tekton",
        pipeline: "ci:build/compile",
        branch: "unknown",
        container: "step-build",
        helpers: &["step-clone", "step-upload", "sidecar-registry"],
        env: &[("CMAKE_BUILD_PARALLEL_LEVEL", "3")],
    },
    Case {
        fixture: "jenkins",
        pipeline: "platform/api",
        branch: "PR-7",
        container: "maven",
        helpers: &["jnlp", "golang"],
        env: &[("MAVEN_ARGS", "-B -Dstyle.color=always -T 3")],
    },
    Case {
        fixture: "buildkite",
        pipeline: "acme-web",
        branch: "main",
        container: "container-0",
        helpers: &["agent", "checkout"],
        env: &[("GRADLE_OPTS", "-Xmx3g -Dorg.gradle.workers.max=3")],
    },
    Case {
        fixture: "argo",
        pipeline: "ci:release/compile",
        branch: "unknown",
        container: "main",
        helpers: &["wait"],
        env: &[("GOFLAGS", "-p=3"), ("GOMAXPROCS", "3")],
    },
    Case {
        fixture: "woodpecker",
        pipeline: "acme/engine/build",
        branch: "main",
        container: "wp-01jdx4z8k2m3n4p5q6r7s8t9v0",
        helpers: &[],
        env: &[("CARGO_BUILD_JOBS", "3")],
    },
    Case {
        fixture: "job",
        pipeline: "ci:nightly-docs",
        branch: "unknown",
        container: "docs",
        helpers: &[],
        env: &[("MAX_JOBS", "3")],
    },
    Case {
        fixture: "labelled",
        pipeline: "acme/engine-release",
        branch: "release/2.4",
        container: "compile",
        helpers: &["log-shipper"],
        env: &[("CMAKE_BUILD_PARALLEL_LEVEL", "3")],
    },
];

fn by_name<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

#[tokio::test]
async fn every_ci_systems_build_pod_is_recognised_and_only_its_build_container_resized() {
    let stats = Arc::new(StatsCache::new());
    for case in CASES {
        stats.insert(history(case.pipeline));
    }
    let wh = TestWebhook::start(
        settings(Arc::new(Policies::new())),
        Arc::new(LiveModel::new()),
        stats,
    )
    .await;
    for case in CASES {
        let pod = fixture(case.fixture);
        let (resp, out) = admit(&wh, &format!("uid-{}", case.fixture), "ci", &pod).await;
        let what = case.fixture;
        let notes = &out["metadata"]["annotations"];
        assert_eq!(notes[contract::PIPELINE], case.pipeline, "{what}: {resp}");
        assert_eq!(notes[contract::BRANCH], case.branch, "{what}");
        assert_eq!(notes[contract::CONTAINER], case.container, "{what}");
        assert_eq!(notes[contract::DECISION_ANNOTATION], "applied", "{what}");
        assert!(
            notes[contract::CONTAINER_CHOICE]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "{what}: the choice is explained"
        );
        // Helpers, init containers and everything else in the spec are untouched.
        for helper in case.helpers {
            assert_eq!(
                by_name(&out, helper),
                by_name(&pod, helper),
                "{what}: {helper}"
            );
        }
        assert_eq!(out["spec"]["initContainers"], pod["spec"]["initContainers"]);
        let build = by_name(&out, case.container);
        assert_eq!(
            build["resources"]["requests"],
            json!({"cpu": "3", "memory": "6Gi"}),
            "{what}"
        );
        // Every tool's variable is set, reads back as the concurrency, and kept its neighbours.
        for name in DEFAULT_CONCURRENCY_ENV {
            let var = env_value(build, name).unwrap_or_else(|| panic!("{what}: {name} missing"));
            let original = env_value(by_name(&pod, case.container), name);
            if original.is_some_and(|o| o.get("valueFrom").is_some()) {
                assert_eq!(
                    Some(var),
                    original,
                    "{what}: {name} from a ConfigMap is left alone"
                );
                continue;
            }
            let value = var["value"].as_str().unwrap();
            match form_of(name) {
                Form::CpuCount => assert_eq!(value, "3", "{what}: {name}"),
                form => assert_eq!(read_jobs(form, value), Some(3), "{what}: {name}={value}"),
            }
        }
        for (name, value) in case.env {
            assert_eq!(
                env_value(build, name).unwrap()["value"],
                *value,
                "{what}: {name}"
            );
        }
    }
    // GitLab's MAVEN_ARGS comes from a ConfigMap: still exactly as written.
    let out = admit(&wh, "uid-gitlab-again", "ci", &fixture("gitlab"))
        .await
        .1;
    assert_eq!(
        env_value(by_name(&out, "build"), "MAVEN_ARGS").unwrap()["valueFrom"]["configMapKeyRef"]
            ["key"],
        "maven-args"
    );
}

#[tokio::test]
async fn same_named_pipelines_in_two_namespaces_stay_apart() {
    let stats = Arc::new(StatsCache::new());
    stats.insert(history("team-a:build/compile"));
    let wh = TestWebhook::start(
        settings(Arc::new(Policies::new())),
        Arc::new(LiveModel::new()),
        stats,
    )
    .await;
    let pod = fixture("tekton");
    let (_, a) = admit(&wh, "uid-a", "team-a", &pod).await;
    let (_, b) = admit(&wh, "uid-b", "team-b", &pod).await;
    let note = |p: &Value, k: &str| p["metadata"]["annotations"][k].clone();
    assert_eq!(note(&a, contract::PIPELINE), "team-a:build/compile");
    assert_eq!(note(&b, contract::PIPELINE), "team-b:build/compile");
    assert_eq!(note(&a, contract::DECISION_ANNOTATION), "applied");
    // team-b has no history of its own: team-a's does not steer it. team-a runs its own last
    // success (3 cpu / 6 GB / -j3); team-b gets the configured defaults (4 cpu / 8 GB / -j4).
    assert_eq!(
        note(&a, contract::RECOMMENDATION),
        "cpu=3 memory=6Gi concurrency=3"
    );
    assert_eq!(
        note(&b, contract::RECOMMENDATION),
        "cpu=4 memory=8Gi concurrency=4"
    );
    // Globally unique identifiers are not scoped.
    let (_, g) = admit(&wh, "uid-g", "team-b", &fixture("gitlab")).await;
    assert_eq!(note(&g, contract::PIPELINE), "acme/api");
}

/// What the LimitRanger's validation checks, written independently of the webhook's code:
/// per container min ≤ request, limit ≤ max, limit/request ≤ maxLimitRequestRatio.
fn limit_range_admits(pod: &Value, lr: &Value) -> Result<(), String> {
    for item in lr["spec"]["limits"].as_array().unwrap() {
        if item["type"] != "Container" {
            continue;
        }
        for c in pod["spec"]["containers"].as_array().unwrap() {
            for key in ["cpu", "memory"] {
                let parse = |v: &Value| {
                    v.as_str().and_then(if key == "cpu" {
                        parse_cpu
                    } else {
                        parse_mem_gb
                    })
                };
                let req = parse(&c["resources"]["requests"][key]);
                let lim = parse(&c["resources"]["limits"][key]);
                let name = &c["name"];
                if let (Some(max), Some(l)) = (parse(&item["max"][key]), lim.or(req)) {
                    if l > max + 1e-9 {
                        return Err(format!("{name} {key} {l} over max {max}"));
                    }
                }
                if let (Some(min), Some(r)) = (parse(&item["min"][key]), req.or(lim)) {
                    if r < min - 1e-9 {
                        return Err(format!("{name} {key} {r} under min {min}"));
                    }
                }
                let ratio = item["maxLimitRequestRatio"][key]
                    .as_str()
                    .and_then(parse_cpu);
                if let (Some(ratio), Some(l), Some(r)) = (ratio, lim, req) {
                    if l / r > ratio + 1e-9 {
                        return Err(format!("{name} {key} ratio {} over {ratio}", l / r));
                    }
                }
            }
        }
    }
    Ok(())
}

fn limit_range_json(max_cpu: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "LimitRange",
           "metadata": {"name": "build-bounds", "namespace": "ci", "resourceVersion": "7"},
           "spec": {"limits": [{"type": "Container",
               "max": {"cpu": max_cpu, "memory": "5Gi"}, "min": {"cpu": "50m", "memory": "64Mi"},
               "maxLimitRequestRatio": {"cpu": "2"}}]}})
}

fn quota_json(namespace: &str, used_cpu: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ResourceQuota",
           "metadata": {"name": "team", "namespace": namespace, "resourceVersion": "8"},
           "spec": {"hard": {"requests.cpu": "10", "requests.memory": "64Gi"}},
           "status": {"hard": {"requests.cpu": "10", "requests.memory": "64Gi"},
                      "used": {"requests.cpu": used_cpu, "requests.memory": "8Gi"}}})
}

#[tokio::test]
async fn namespace_limits_bound_the_patch_and_short_quota_keeps_requests() {
    let lr_json = limit_range_json("5");
    let lr: LimitRange = serde_json::from_value(lr_json.clone()).unwrap();
    let quota: ResourceQuota = serde_json::from_value(quota_json("tight", "7")).unwrap();
    let policies = Arc::new(Policies::new());
    policies.set("ci", NamespacePolicy::from_objects(&[&lr], &[]));
    policies.set("tight", NamespacePolicy::from_objects(&[], &[&quota]));
    let stats = Arc::new(StatsCache::new());
    stats.insert(history("acme/api"));
    let wh = TestWebhook::start(settings(policies), Arc::new(LiveModel::new()), stats).await;
    let pod = fixture("gitlab");

    // Unbounded the decision is 3 cpu / 6 GiB; the build's cpu limit is 2 × its request, so
    // max cpu 5 holds the request to 2.5, and max memory 5Gi holds memory to 5Gi.
    let (_, out) = admit(&wh, "uid-limited", "ci", &pod).await;
    let build = by_name(&out, "build");
    assert_eq!(
        build["resources"],
        json!({"requests": {"cpu": "2500m", "memory": "5Gi"}, "limits": {"cpu": "5", "memory": "5Gi"}})
    );
    limit_range_admits(&out, &lr_json).expect("built-in admission would accept the pod");
    assert!(limit_range_admits(&json!({"spec": {"containers": [{"name": "b", "resources": {"requests": {"cpu": "3"}, "limits": {"cpu": "6"}}}]}}), &lr_json).is_err(),
        "the checker catches what the unbounded decision would have written");
    let notes = &out["metadata"]["annotations"];
    let bounds = notes[contract::BOUNDS].as_str().unwrap();
    assert!(bounds.contains("LimitRange container max"), "{bounds}");
    let jobs = env_value(build, "MAKEFLAGS").unwrap()["value"]
        .as_str()
        .unwrap();
    assert!(
        notes[contract::RECOMMENDATION]
            .as_str()
            .unwrap()
            .ends_with(&format!(
                "concurrency={}",
                read_jobs(Form::MakeFlags, jobs).unwrap()
            )),
        "the recommendation annotation says what was applied"
    );

    // Quota headroom 3 cpu: the pod's other containers ask 0.6, so 3 more does not fit: cpu
    // stays as the team wrote it, memory (plenty of headroom) is raised.
    let (_, out) = admit(&wh, "uid-tight", "tight", &pod).await;
    let build = by_name(&out, "build");
    assert_eq!(
        build["resources"]["requests"],
        json!({"cpu": "2", "memory": "6Gi"})
    );
    assert!(out["metadata"]["annotations"][contract::BOUNDS]
        .as_str()
        .unwrap()
        .contains("ResourceQuota headroom is short"));
}

fn reply(status: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

#[tokio::test]
async fn the_webhook_learns_namespace_limits_from_the_api_list_and_watch() {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let api = tokio::spawn(async move {
        let mut held = Vec::new();
        let mut lr_watches = 0;
        while let Some((req, send)) = handle.next_request().await {
            let uri = req.uri().to_string();
            let path = req.uri().path().to_string();
            assert_eq!(req.method(), "GET", "read-only: {uri}");
            let watching = uri.contains("watch=true");
            match (path.as_str(), watching) {
                ("/api/v1/limitranges", false) => send.send_response(reply(
                    200,
                    &json!({"apiVersion": "v1", "kind": "LimitRangeList", "metadata": {"resourceVersion": "7"}, "items": [limit_range_json("5")]}),
                )),
                ("/api/v1/resourcequotas", false) => send.send_response(reply(
                    200,
                    &json!({"apiVersion": "v1", "kind": "ResourceQuotaList", "metadata": {"resourceVersion": "8"}, "items": [quota_json("ci", "1")]}),
                )),
                ("/api/v1/limitranges", true) if lr_watches == 0 => {
                    lr_watches += 1;
                    // The team tightens its LimitRange: max cpu 4.
                    let mut tighter = limit_range_json("4");
                    tighter["metadata"]["resourceVersion"] = json!("9");
                    let event = json!({"type": "MODIFIED", "object": tighter});
                    let mut body = serde_json::to_vec(&event).unwrap();
                    body.push(b'\n');
                    send.send_response(
                        Response::builder()
                            .status(200)
                            .body(Body::from(body))
                            .unwrap(),
                    );
                }
                // Further watches stay open until the test ends.
                (_, true) => held.push(send),
                _ => panic!("unexpected request {uri}"),
            }
        }
    });
    let policies = Arc::new(Policies::new());
    let watcher = inframind::webhook::namespace_policy::spawn(client, policies.clone());
    let mut seen = None;
    for _ in 0..100 {
        if let Some(p) = policies.get("ci") {
            if p.cpu.container.max == Some(4.0) && p.cpu.requests_headroom.is_some() {
                seen = Some(p);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let policy = seen.expect("the watched LimitRange and ResourceQuota reach the cache");
    assert_eq!(policy.cpu.requests_headroom, Some(9.0));
    assert_eq!(policy.memory.container.max, Some(5.0));

    let stats = Arc::new(StatsCache::new());
    stats.insert(history("acme/api"));
    let wh = TestWebhook::start(settings(policies), Arc::new(LiveModel::new()), stats).await;
    let (_, out) = admit(&wh, "uid-watched", "ci", &fixture("gitlab")).await;
    assert_eq!(
        by_name(&out, "build")["resources"]["limits"]["cpu"],
        "4",
        "the watched max bounds the scaled limit"
    );
    limit_range_admits(&out, &limit_range_json("4")).unwrap();
    watcher.abort();
    api.abort();
}
