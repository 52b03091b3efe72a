//! The whole loop in one process: simulated build pods are admitted by the webhook over HTTPS,
//! run (the simulator's physics decide how each ends with the resources it was given), their
//! outcomes are recorded by the pod outcome watcher, a TrainingJob's training run retrains on
//! them and promotes through Redis, and the next admission carries the new model version.
//!
//! Kubernetes is faked where it cannot run here: the watcher's node lookups go to a tower_test
//! fake of the API; the TrainingJob runs through the controller's own training path
//! (`controller::run::execute`, what `reconcile` calls) rather than through a mocked watch.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use http::{Request, Response};
use inframind::admission::Settings;
use inframind::controller::crd::TrainingJobSpec;
use inframind::controller::outcomes::Recorder;
use inframind::model::ModelDir;
use inframind::optimizer::recommender::Recommender;
use inframind::optimizer::{Optimizer, OptimizerConfig};
use inframind::registry::{live, LiveModel, WatchConfig};
use inframind::simulate::{default_profiles, Simulator};
use inframind::webhook::stats_cache::StatsCache;
use inframind::BuildConfig;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::client::Body;
use serde_json::{json, Value};

use crate::harness::{
    admission_review, apply_response, pg_schema_url, redis_url, unique, TestWebhook,
};

fn build_pod(pipeline: &str, image: &str, n: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "build-", "namespace": "ci", "labels": {"inframind.io/pipeline": pipeline}, "annotations": {"inframind.io/branch": if n.is_multiple_of(3) { "main" } else { "pr-1" }}},
        "spec": {"containers": [{"name": "build", "image": image,
            "resources": {"requests": {"cpu": "4", "memory": "8Gi"}}, "env": [{"name": "MAKEFLAGS", "value": "-j4"}]}],
            "nodeSelector": {"node.kubernetes.io/instance-type": "m5.2xlarge"}}})
}

/// The config the (patched) pod asks for.
fn config_of(pod: &Value) -> BuildConfig {
    let c = &pod["spec"]["containers"][0];
    let q = |k: &str| c["resources"]["requests"][k].as_str().unwrap().to_string();
    let env = c["env"].as_array().unwrap();
    let jobs = env
        .iter()
        .find(|e| e["name"] == "MAKEFLAGS")
        .and_then(|e| e["value"].as_str())
        .and_then(|v| {
            v.split_whitespace()
                .find_map(|t| t.strip_prefix("-j")?.parse().ok())
        })
        .unwrap();
    BuildConfig {
        cpu: inframind::admission::quantity::parse_cpu(&q("cpu")).unwrap(),
        mem_gb: inframind::admission::quantity::parse_mem_gb(&q("memory")).unwrap(),
        concurrency: jobs,
    }
}

/// The pod as the API server shows it once the build container has ended.
fn finished(
    mut pod: Value,
    uid: &str,
    start: chrono::DateTime<Utc>,
    duration_s: f64,
    oom: bool,
) -> Pod {
    pod["metadata"]["uid"] = json!(uid);
    pod["metadata"]["name"] = json!(format!("build-{uid}"));
    pod["spec"]["nodeName"] = json!("node-a");
    let end = start + chrono::Duration::milliseconds((duration_s * 1000.0) as i64);
    pod["status"] = json!({"phase": if oom { "Failed" } else { "Succeeded" }, "containerStatuses": [{"name": "build", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
        "state": {"terminated": {"exitCode": if oom { 137 } else { 0 }, "reason": if oom { "OOMKilled" } else { "Completed" },
                                 "startedAt": start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "finishedAt": end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}}}]});
    serde_json::from_value(pod).unwrap()
}

/// A fake API answering node GETs.
fn node_api() -> (kube::Api<Node>, tokio::task::JoinHandle<()>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let task = tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let name = req
                .uri()
                .path()
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_string();
            let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"node.kubernetes.io/instance-type": "m5.2xlarge"}}});
            send.send_response(
                Response::builder()
                    .status(200)
                    .body(Body::from(serde_json::to_vec(&node).unwrap()))
                    .unwrap(),
            );
        }
    });
    (kube::Api::all(client), task)
}

#[tokio::test]
async fn admitted_builds_are_recorded_retrained_on_and_the_next_admission_uses_the_new_model() {
    let db = pg_schema_url().await;
    let store = inframind::telemetry::Store::connect(&db).await.unwrap();
    let prefix = unique("ime2e");
    let dir = tempfile::tempdir().unwrap();

    // The webhook replica: no model yet, stats from the (empty) store, following the registry.
    let stats = Arc::new(StatsCache::new());
    let live_model = Arc::new(LiveModel::new());
    let watch = WatchConfig {
        dir: ModelDir::new(dir.path().join("webhook")),
        redis_url: Some(redis_url()),
        prefix: prefix.clone(),
        poll: Duration::from_millis(200),
    };
    live::bootstrap(&live_model, &watch).await;
    let watcher = live::spawn(live_model.clone(), watch);
    let settings = Settings {
        recommender: Recommender::new(Optimizer::new(OptimizerConfig {
            exploration_rate: 0.1,
            ..Default::default()
        })),
        cold_start_apply_defaults: true,
        ..Settings::default()
    };
    let wh = TestWebhook::start(settings, live_model.clone(), stats.clone()).await;

    let profiles = default_profiles();
    let mut sim = Simulator::new(
        profiles.clone(),
        Utc.with_ymd_and_hms(2026, 11, 20, 0, 0, 0).unwrap(),
        5,
    );
    let (nodes, _node_api) = node_api();
    let mut recorder = Recorder::default();
    let mut clock = Utc.with_ymd_and_hms(2026, 11, 20, 8, 0, 0).unwrap();
    let mut admitted = 0;
    for round in 0..60 {
        // Refresh stats like the webhook's background task does.
        stats.refresh(&store).await.unwrap();
        for (p, profile) in profiles.iter().enumerate().take(3) {
            let pod = build_pod(&profile.name, &profile.image, round);
            let (status, resp) = wh
                .review(&admission_review(
                    &format!("adm-{round}-{p}"),
                    "CREATE",
                    ("", "v1", "Pod"),
                    pod.clone(),
                ))
                .await;
            assert_eq!(status, 200);
            let admitted_pod = apply_response(&pod, &resp);
            assert_eq!(
                admitted_pod["metadata"]["labels"]["inframind.io/managed"],
                "true"
            );
            admitted += 1;
            let config = config_of(&admitted_pod);
            let cache = if round % 3 == 0 { 0.8 } else { 0.3 };
            let outcome = sim.run_outcome(p, &config, cache, 1.0);
            clock += chrono::Duration::minutes(7);
            let pod = finished(
                admitted_pod,
                &format!("{round}-{p}"),
                clock,
                outcome.duration_s,
                outcome.oom,
            );
            recorder.observe(&pod, &nodes, &store).await;
        }
    }
    assert_eq!(
        recorder.recorded(),
        admitted,
        "every finished build pod was recorded"
    );
    assert_eq!(store.count_runs().await.unwrap(), admitted as u64);

    // A TrainingJob retrains on them (the controller's training path) and promotes.
    let global = inframind::config::Global {
        database_url: db.clone(),
        models_dir: dir.path().join("controller"),
        redis_url: Some(redis_url()),
        redis_prefix: prefix.clone(),
        model_signing_key_file: None,
        model_public_key_file: None,
        log_format: inframind::config::LogFormat::Text,
    };
    let ctx = inframind::api::in_process_training(&global).unwrap();
    let spec: TrainingJobSpec = serde_json::from_value(json!({"hyperparameters": {"trees": 30, "maxDepth": 10}, "gates": {"maxMaeSeconds": 10000, "minR2": 0.0}})).unwrap();
    let outcome = inframind::controller::run::execute(&ctx, &spec)
        .await
        .expect("training run");
    let version = outcome.version.clone();
    assert!(
        matches!(
            outcome.promotion,
            inframind::controller::status::Promotion::Promoted { .. }
        ),
        "{:?}",
        outcome.promotion
    );

    // The webhook replica picks it up live and the next admission carries it.
    let mut carried = false;
    for attempt in 0..100 {
        let pod = build_pod(&profiles[0].name, &profiles[0].image, 0);
        let (_, resp) = wh
            .review(&admission_review(
                &format!("after-{attempt}"),
                "CREATE",
                ("", "v1", "Pod"),
                pod.clone(),
            ))
            .await;
        let out = apply_response(&pod, &resp);
        if out["metadata"]["annotations"]["inframind.io/model-version"] == version.as_str() {
            assert_eq!(
                out["metadata"]["annotations"]["inframind.io/decision"],
                "applied"
            );
            carried = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(carried, "the next admission carries model {version}");
    watcher.abort();
}
