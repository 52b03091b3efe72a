//! The pod outcome watcher against a fake of the Kubernetes API's HTTP contract (kube-rs
//! `tower_test`: it answers the pod LIST and WATCH and node GETs with recorded objects), with the
//! real PostgreSQL behind it. No API server can run on these machines.

use std::time::Duration;

use http::{Request, Response};
use inframind::controller::outcomes::{watch, Recorder};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use tower_test::mock;

use crate::harness::pg_store;

/// A finished (or running) build pod as the API server returns it.
fn pod(name: &str, uid: &str, exit: Option<(i32, &str)>, restarts: i32, node: &str) -> Value {
    let state = match exit {
        Some((code, reason)) => {
            json!({"terminated": {"exitCode": code, "reason": reason, "startedAt": "2026-11-27T10:00:00Z", "finishedAt": "2026-11-27T10:04:10Z"}})
        }
        None => json!({"running": {"startedAt": "2026-11-27T10:00:00Z"}}),
    };
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "ci", "uid": uid, "resourceVersion": "100",
            "labels": {"inframind.io/managed": "true"},
            "annotations": {"inframind.io/decision": "applied", "inframind.io/pipeline": "acme/api", "inframind.io/branch": "main",
                            "inframind.io/container": "build", "inframind.io/image": "rust:1.82", "inframind.io/node-type": "unknown",
                            "inframind.io/rationale": format!("chose cpu 4 for {name}"), "inframind.io/expected-cache": "warm: last build of main hit 0.91, 5 min ago"}},
        "spec": {"nodeName": node, "containers": [
            {"name": "build", "image": "rust:1.82", "resources": {"requests": {"cpu": "4", "memory": "8Gi"}}, "env": [{"name": "INFRAMIND_CONCURRENCY", "value": "6"}]},
            {"name": "helper", "image": "helper"}]},
        "status": {"phase": if exit.is_some() { "Succeeded" } else { "Running" }, "containerStatuses": [
            {"name": "build", "ready": false, "restartCount": restarts, "image": "rust:1.82", "imageID": "", "state": state}]}
    })
}

fn reply(status: u16, body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn finished_build_pods_become_rows_once_even_across_restarts() {
    let store = pg_store().await;
    let listed = vec![
        pod("build-1", "uid-1", Some((0, "Completed")), 0, "node-a"),
        pod("build-2", "uid-2", Some((137, "OOMKilled")), 1, "node-a"),
        pod("build-3", "uid-3", None, 0, "node-b"),
    ];
    // Later the running pod finishes: a MODIFIED event on the watch.
    let finished = pod("build-3", "uid-3", Some((0, "Completed")), 0, "node-b");

    for round in 0..2 {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let listed = listed.clone();
        let finished = finished.clone();
        let api = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut held = Vec::new();
            let mut watches = 0;
            while let Some((req, send)) = handle.next_request().await {
                let uri = req.uri().to_string();
                seen.push(format!("{} {uri}", req.method()));
                let path = req.uri().path();
                if path == "/api/v1/pods" && uri.contains("watch=true") {
                    assert!(
                        uri.contains("labelSelector=inframind.io%2Fmanaged%3Dtrue"),
                        "{uri}"
                    );
                    watches += 1;
                    if watches == 1 {
                        let event =
                            serde_json::to_vec(&json!({"type": "MODIFIED", "object": finished}))
                                .unwrap();
                        send.send_response(reply(200, [event, b"\n".to_vec()].concat()));
                    } else {
                        // A re-watch after the stream ended: leave it open until the test stops.
                        held.push(send);
                    }
                } else if path == "/api/v1/pods" {
                    assert!(
                        uri.contains("labelSelector=inframind.io%2Fmanaged%3Dtrue"),
                        "{uri}"
                    );
                    let list = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "100"}, "items": listed});
                    send.send_response(reply(200, serde_json::to_vec(&list).unwrap()));
                } else if let Some(node) = path.strip_prefix("/api/v1/nodes/") {
                    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "labels": {"node.kubernetes.io/instance-type": if node == "node-a" { "m5.2xlarge" } else { "c6i.4xlarge" }}}});
                    send.send_response(reply(200, serde_json::to_vec(&node).unwrap()));
                } else {
                    panic!("unexpected request {uri}");
                }
            }
            seen
        });
        let mut recorder = Recorder::default();
        let s = store.clone();
        let _ = tokio::time::timeout(Duration::from_secs(3), watch(client, s, &mut recorder)).await;
        let seen = api.await.unwrap();
        assert_eq!(
            recorder.recorded(),
            3,
            "round {round}: all three pods handled"
        );
        assert_eq!(recorder.pending(), 0);
        // Node types are looked up once per node.
        assert_eq!(
            seen.iter().filter(|r| r.contains("/api/v1/nodes/")).count(),
            2,
            "{seen:?}"
        );
    }

    let rows = store.recent_runs("acme/api", 10).await.unwrap();
    assert_eq!(
        rows.len(),
        3,
        "a second watcher (a restart) records nothing twice"
    );
    let by_id = |id: &str| rows.iter().find(|r| r.run_id == id).unwrap().clone();
    let ok = by_id("pod-uid-1");
    assert_eq!(
        (
            ok.success,
            ok.oom_killed,
            ok.duration_s,
            ok.node.as_str(),
            ok.concurrency,
            ok.cpu_req,
            ok.mem_req_gb
        ),
        // The pods asked for no node type (annotation `unknown`): that, not the node they
        // landed on, is what admission knew and what the model is trained on.
        (true, false, 250.0, "unknown", 6, 4.0, 8.0)
    );
    let oom = by_id("pod-uid-2");
    assert_eq!(
        (oom.success, oom.oom_killed, oom.retry_count),
        (false, true, 1)
    );
    assert_eq!(by_id("pod-uid-3").node, "unknown");
    // Why each was decided so is kept next to the rows (the dashboard's last decisions).
    let notes = store
        .notes(&["pod-uid-1", "pod-uid-2", "pod-nobody"])
        .await
        .unwrap();
    assert_eq!(notes.len(), 2);
    assert!(notes["pod-uid-1"].rationale.starts_with("chose cpu 4 for "));
    assert_eq!(
        notes["pod-uid-1"].expected_cache.as_deref(),
        Some("warm: last build of main hit 0.91, 5 min ago")
    );
    // The optimizer's stats see the OOM.
    let stats = store.pipeline_stats("acme/api").await.unwrap();
    assert_eq!(stats.ooms.len(), 1);
    assert_eq!((stats.ooms[0].mem_gb, stats.ooms[0].concurrency), (8.0, 6));
}
