//! Admission decisions on realistic pods, asserted on the patched pod.

use base64::Engine;
use serde_json::{json, Value};

use super::*;
use crate::stats::PipelineStats;
use crate::BuildConfig;

fn request(operation: &str, kind: &str, pod: Value) -> AdmissionRequest {
    serde_json::from_value(json!({"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": kind}, "operation": operation, "object": pod})).unwrap()
}

fn build_pod(annotations: Value) -> Value {
    json!({"metadata": {"generateName": "runner-", "labels": {"inframind.io/pipeline": "acme/api"}, "annotations": annotations},
           "spec": {"containers": [{"name": "build", "image": "rust:1.82", "resources": {"requests": {"cpu": "2", "memory": "4Gi"}}}]}})
}

fn history() -> Arc<PipelineStats> {
    Arc::new(PipelineStats {
        pipeline: "acme/api".into(),
        runs: 5,
        successes: 5,
        last_success: Some(BuildConfig {
            cpu: 3.0,
            mem_gb: 6.0,
            concurrency: 3,
        }),
        rss_p95_gb: Some(2.0),
        ..Default::default()
    })
}

fn patched(pod: &Value, a: &Admission) -> Value {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(a.response.patch.as_ref().expect("a patch"))
        .unwrap();
    let ops: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let mut p = pod.clone();
    json_patch::patch(&mut p, &ops).unwrap();
    p
}

fn run(
    req: &AdmissionRequest,
    settings: &Settings,
    stats: Option<Arc<PipelineStats>>,
) -> Admission {
    admit(
        req,
        settings,
        None,
        &move |_| stats.clone(),
        chrono::Utc::now(),
    )
}

#[test]
fn non_pods_updates_and_opt_outs_are_left_alone() {
    let s = Settings::default();
    for (op, kind) in [
        ("UPDATE", "Pod"),
        ("CREATE", "Deployment"),
        ("DELETE", "Pod"),
    ] {
        let a = run(
            &request(op, kind, build_pod(json!({}))),
            &s,
            Some(history()),
        );
        assert_eq!(
            (a.outcome, a.response.patch.is_none(), a.response.allowed),
            (Outcome::Ignored, true, true)
        );
    }
    for notes in [
        json!({"inframind.io/skip": "true"}),
        json!({"inframind.io/decision": "applied"}),
    ] {
        let a = run(
            &request("CREATE", "Pod", build_pod(notes)),
            &s,
            Some(history()),
        );
        assert_eq!(a.outcome, Outcome::Unchanged);
        assert!(a.response.patch.is_none());
    }
}

fn opted_in() -> Settings {
    Settings {
        cold_start_apply_defaults: true,
        ..Settings::default()
    }
}

#[test]
fn without_a_model_the_request_is_kept_with_the_proposal_shown() {
    let pod = build_pod(json!({"team": "x"}));
    let a = run(
        &request("CREATE", "Pod", pod.clone()),
        &Settings::default(),
        Some(history()),
    );
    assert_eq!(a.outcome, Outcome::Kept);
    let out = patched(&pod, &a);
    assert_eq!(out["spec"], pod["spec"], "kept as requested");
    let notes = &out["metadata"]["annotations"];
    assert_eq!(notes["inframind.io/decision"], "unchanged");
    assert_eq!(
        notes["inframind.io/recommendation"],
        "cpu=3 memory=6Gi concurrency=3"
    );
    let reason = notes["inframind.io/reason"].as_str().unwrap();
    assert!(
        reason.starts_with("kept: cold start (no model loaded yet)"),
        "{reason}"
    );
    assert_eq!(
        a.decision.unwrap().request,
        Some(BuildConfig {
            cpu: 2.0,
            mem_gb: 4.0,
            concurrency: 2
        })
    );
}

#[test]
fn a_pipeline_with_history_is_right_sized_without_a_model_when_opted_in() {
    let pod = build_pod(json!({"team": "x"}));
    let a = run(
        &request("CREATE", "Pod", pod.clone()),
        &opted_in(),
        Some(history()),
    );
    assert_eq!(a.outcome, Outcome::Mutated);
    let out = patched(&pod, &a);
    let c = &out["spec"]["containers"][0];
    // Baseline (last success 3 cpu, 6 GB, -j3), memory at least 1.2 × p95 RSS.
    assert_eq!(
        c["resources"]["requests"],
        json!({"cpu": "3", "memory": "6Gi"})
    );
    assert_eq!(c["env"][0], json!({"name": "MAKEFLAGS", "value": "-j3"}));
    let notes = &out["metadata"]["annotations"];
    assert_eq!(notes["team"], "x");
    assert_eq!(notes["inframind.io/decision"], "applied");
    assert_eq!(notes["inframind.io/model-version"], "none");
    assert!(notes.get("inframind.io/reason").is_none());
    assert_eq!(
        serde_json::from_str::<Value>(notes["inframind.io/original"].as_str().unwrap()).unwrap(),
        json!({"requests": {"cpu": "2", "memory": "4Gi"}})
    );
    assert!(notes["inframind.io/rationale"]
        .as_str()
        .unwrap()
        .contains("cold start"));
    // Re-invocation on the mutated pod changes nothing.
    let again = run(&request("CREATE", "Pod", out), &opted_in(), Some(history()));
    assert!(again.response.patch.is_none());
}

#[test]
fn a_model_change_is_kept_below_the_confidence_gate_and_annotated() {
    // A real model trained on simulated builds of acme/api.
    let now = chrono::Utc::now();
    let runs = crate::simulate::demo_runs(600, now, 4);
    let ok: Vec<_> = runs.iter().filter(|r| r.success).cloned().collect();
    let spec = crate::training::TrainingSpec {
        params: crate::forest::ForestParams {
            n_trees: 12,
            max_depth: Some(8),
            ..Default::default()
        },
        ..Default::default()
    };
    let (model, _) = crate::training::fit(&[], &ok, &spec, "vgate", now, &mut |_| {}).unwrap();
    let mine: Vec<_> = runs
        .iter()
        .filter(|r| r.pipeline == "acme/api")
        .cloned()
        .collect();
    let stats = Arc::new(PipelineStats::from_runs("acme/api", &mine));
    let pod = build_pod(json!({}));
    let gate = |min_confidence: f64| Settings {
        recommender: crate::optimizer::recommender::Recommender::new(
            crate::optimizer::Optimizer::new(crate::optimizer::OptimizerConfig {
                exploration_rate: 0.0,
                min_confidence,
                ..Default::default()
            }),
        ),
        ..Settings::default()
    };
    let s = stats.clone();
    let never = admit(
        &request("CREATE", "Pod", pod.clone()),
        &gate(1.01),
        Some(&model),
        &move |_| Some(s.clone()),
        now,
    );
    assert_eq!(never.outcome, Outcome::Kept);
    let d = never.decision.clone().unwrap();
    let out = patched(&pod, &never);
    assert_eq!(out["spec"], pod["spec"]);
    let notes = &out["metadata"]["annotations"];
    let reason = notes["inframind.io/reason"].as_str().unwrap();
    assert!(reason.starts_with("kept: "), "{reason}");
    if d.proposal != d.request {
        assert!(
            reason.contains("confidence that") && reason.contains("beats the requested"),
            "{reason}"
        );
        assert_eq!(
            notes["inframind.io/confidence-vs-request"],
            format!("{:.2}", d.request_confidence.unwrap())
        );
        // With no gate the same proposal is applied.
        let s = stats.clone();
        let always = admit(
            &request("CREATE", "Pod", pod.clone()),
            &gate(0.0),
            Some(&model),
            &move |_| Some(s.clone()),
            now,
        );
        assert_eq!(always.outcome, Outcome::Mutated);
        assert_eq!(always.decision.unwrap().config, d.proposal.unwrap());
    }
}

#[test]
fn the_request_is_read_from_the_build_container() {
    let defaults = crate::optimizer::DEFAULT_BASELINE;
    let o = |requests: Value, concurrency: Option<u32>| patch::Original {
        requests: requests.as_object().unwrap().clone(),
        limits: Default::default(),
        concurrency,
    };
    assert_eq!(
        requested(
            &o(json!({"cpu": "1500m", "memory": "3Gi"}), Some(6)),
            &defaults
        ),
        Some(BuildConfig {
            cpu: 1.5,
            mem_gb: 3.0,
            concurrency: 6
        })
    );
    // Concurrency defaults to one job per requested core; memory to the configured default.
    assert_eq!(
        requested(&o(json!({"cpu": 3}), None), &defaults),
        Some(BuildConfig {
            cpu: 3.0,
            mem_gb: 8.0,
            concurrency: 3
        })
    );
    assert_eq!(requested(&o(json!({}), Some(4)), &defaults), None);
}

#[test]
fn a_huge_branch_cannot_push_the_annotations_past_the_api_limit() {
    let mut pod = build_pod(json!({"inframind.io/branch": "x".repeat(1 << 20)}));
    pod["metadata"]["annotations"]["inframind.io/branch"] = json!("x".repeat(1 << 20));
    let a = run(
        &request("CREATE", "Pod", pod.clone()),
        &opted_in(),
        Some(history()),
    );
    let out = patched(&pod, &a);
    let branch = out["metadata"]["annotations"]["inframind.io/branch"]
        .as_str()
        .unwrap();
    assert_eq!(branch.len(), recognise::MAX_RECOGNISED_LEN);
    let env = serde_json::to_string(&out["spec"]["containers"][0]["env"]).unwrap();
    assert!(
        env.len() < 4096,
        "the reporter env carries the capped branch: {} bytes",
        env.len()
    );
}

#[test]
fn dry_run_and_cold_start_only_annotate() {
    let pod = build_pod(json!({"inframind.io/dry-run": "true"}));
    let a = run(
        &request("CREATE", "Pod", pod.clone()),
        &opted_in(),
        Some(history()),
    );
    assert_eq!(a.outcome, Outcome::DryRun);
    let out = patched(&pod, &a);
    assert_eq!(out["spec"], pod["spec"], "dry run leaves the spec alone");
    assert_eq!(
        out["metadata"]["annotations"]["inframind.io/recommendation"],
        "cpu=3 memory=6Gi concurrency=3"
    );

    let pod = build_pod(json!({}));
    let a = run(
        &request("CREATE", "Pod", pod.clone()),
        &Settings::default(),
        None,
    );
    assert_eq!(a.outcome, Outcome::ColdStart);
    let out = patched(&pod, &a);
    assert_eq!(out["spec"], pod["spec"]);
    assert_eq!(
        out["metadata"]["annotations"]["inframind.io/decision"],
        "unchanged"
    );
    let apply = Settings {
        cold_start_apply_defaults: true,
        ..Settings::default()
    };
    let a = run(&request("CREATE", "Pod", pod.clone()), &apply, None);
    assert_eq!(
        patched(&pod, &a)["spec"]["containers"][0]["resources"]["requests"],
        json!({"cpu": "4", "memory": "8Gi"})
    );
}

#[test]
fn doubtful_pods_are_admitted_unchanged_with_a_warning() {
    let mut pod = build_pod(json!({}));
    pod["spec"]["containers"][0]["resources"]["limits"] = json!({"memory": "a lot"});
    let a = run(&request("CREATE", "Pod", pod), &opted_in(), Some(history()));
    assert_eq!(a.outcome, Outcome::Error);
    assert!(a.response.patch.is_none());
    assert!(a.response.warnings[0].contains("unreadable memory"));
    let nameless = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}});
    let a = run(
        &request("CREATE", "Pod", nameless),
        &Settings::default(),
        Some(history()),
    );
    assert!(a.response.warnings[0].contains("no pipeline"));
    let mut no_obj = request("CREATE", "Pod", Value::Null);
    no_obj.object = None;
    assert_eq!(
        run(&no_obj, &Settings::default(), None).outcome,
        Outcome::Error
    );
}

fn annotations_bytes(pod: &Value) -> usize {
    pod["metadata"]["annotations"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| k.len() + v.as_str().unwrap().len())
        .sum()
}

/// Issue 14 (fuzzing): a container entry that is not an object got a patch that did not apply.
#[test]
fn containers_that_are_not_objects_are_skipped_and_the_patch_applies() {
    let mut pod = build_pod(json!({}));
    let build = pod["spec"]["containers"][0].clone();
    pod["spec"]["containers"] = json!([42, "sidecar", null, build]);
    // No model: the guarded baseline is applied only when the operator opts in.
    let settings = Settings {
        cold_start_apply_defaults: true,
        ..Settings::default()
    };
    let a = run(
        &request("CREATE", "Pod", pod.clone()),
        &settings,
        Some(history()),
    );
    assert_eq!(a.outcome, Outcome::Mutated);
    let out = patched(&pod, &a);
    assert_eq!(out["spec"]["containers"][0], json!(42));
    assert_eq!(
        out["spec"]["containers"][3]["resources"]["requests"],
        json!({"cpu": "3", "memory": "6Gi"})
    );
    // Only non-objects: nothing to right-size, and no patch that could fail.
    let mut pod = build_pod(json!({}));
    pod["spec"]["containers"] = json!([42, "build"]);
    let a = run(
        &request("CREATE", "Pod", pod.clone()),
        &Settings::default(),
        Some(history()),
    );
    assert_eq!(a.outcome, Outcome::Unchanged);
    assert!(a.response.patch.is_none());
}

/// Issue 14 (fuzzing): a 90 KB value copied into several annotations pushed the pod over the
/// API server's 256 KiB limit on annotations, so the pod could not be created at all.
#[test]
fn copied_values_are_capped_and_annotations_stay_under_the_limit() {
    let huge = |c: char| c.to_string().repeat(90 * 1024);
    let mut pod = build_pod(json!({"inframind.io/branch": huge('b')}));
    pod["metadata"]["labels"] = json!({});
    pod["metadata"]["annotations"]["inframind.io/pipeline"] = json!(huge('p'));
    pod["spec"]["containers"][0]["image"] = json!(huge('i'));
    pod["spec"]["nodeSelector"] = json!({"node.kubernetes.io/instance-type": huge('n')});
    assert!(annotations_bytes(&pod) < ANNOTATIONS_LIMIT_BYTES);
    let a = run(
        &request("CREATE", "Pod", pod.clone()),
        &Settings::default(),
        None,
    );
    let out = patched(&pod, &a);
    assert!(
        annotations_bytes(&out) < ANNOTATIONS_LIMIT_BYTES,
        "{} bytes of annotations",
        annotations_bytes(&out)
    );
    let notes = &out["metadata"]["annotations"];
    for key in ["pipeline", "branch", "image", "node-type"] {
        let v = notes[format!("inframind.io/{key}")].as_str().unwrap();
        assert!(
            v.len() <= MAX_COPIED_VALUE_BYTES,
            "{key}: {} bytes",
            v.len()
        );
        // Recognised strings are bounded at recognition (a hash of the whole marks the cut).
        assert!(v.contains('~') || v.contains("…sha256:"), "{key}");
    }
    // The same value always caps the same way (the pod watcher records it as the pipeline).
    assert_eq!(capped(&huge('p')), capped(&huge('p')));
    assert_ne!(capped(&huge('p')), capped(&(huge('p') + "q")));
    assert_eq!(capped("acme/api"), "acme/api");
    assert!(capped(&"é".repeat(600)).len() <= MAX_COPIED_VALUE_BYTES);

    // A pod whose own annotations leave no room is admitted unchanged, without a patch.
    let mut full = build_pod(json!({"big": "x".repeat(ANNOTATIONS_LIMIT_BYTES - 200)}));
    full["metadata"]["labels"] = json!({"inframind.io/pipeline": "acme/api"});
    let a = run(
        &request("CREATE", "Pod", full.clone()),
        &Settings::default(),
        Some(history()),
    );
    assert_eq!(a.outcome, Outcome::Unchanged);
    assert!(a.response.patch.is_none());
    assert!(a.response.warnings[0].contains("annotations would exceed"));
}

/// The pod after admission, as the outcome watcher later sees it: uid set, build container
/// terminated.
fn finished(pod: &Value) -> k8s_openapi::api::core::v1::Pod {
    let mut p = pod.clone();
    p["metadata"]["uid"] = json!("u-1");
    p["status"] = json!({"phase": "Succeeded", "containerStatuses": [
        {"name": "build", "ready": false, "restartCount": 0, "image": "rust:1.82", "imageID": "",
         "state": {"terminated": {"exitCode": 0, "startedAt": "2026-11-27T10:00:05Z", "finishedAt": "2026-11-27T10:05:17Z"}}}]});
    serde_json::from_value(p).unwrap()
}

#[test]
fn the_watcher_reads_back_the_concurrency_admission_saw_or_wrote() {
    let vars = [
        ("MAKEFLAGS", "-j4"),
        ("MAKEFLAGS", "-j 4"),
        ("MAKEFLAGS", "--jobs=4"),
        ("MAKEFLAGS", "--jobs 4"),
        ("MAKEFLAGS", "-k -j 4 V=1"),
        ("GOFLAGS", "-mod=mod -p=4"),
        ("MAVEN_ARGS", "-B -T 4 -ntp"),
        ("MAVEN_ARGS", "--threads=4"),
        ("GRADLE_OPTS", "-Xmx2g -Dorg.gradle.workers.max=4"),
        ("MAX_JOBS", "4"),
        ("CARGO_BUILD_JOBS", "4"),
    ];
    for (var, flags) in vars {
        let mut pod = build_pod(json!({}));
        pod["spec"]["containers"][0]["env"] = json!([{"name": var, "value": flags}]);
        for (dry_run, stats) in [
            (true, Some(history())),
            (false, None),
            (false, Some(history())),
        ] {
            let settings = Settings {
                dry_run,
                ..Settings::default()
            };
            let a = run(&request("CREATE", "Pod", pod.clone()), &settings, stats);
            let after = patched(&pod, &a);
            let notes = &after["metadata"]["annotations"];
            let written: patch::Original =
                serde_json::from_str(notes[contract::ORIGINAL].as_str().unwrap()).unwrap();
            assert_eq!(written.concurrency, Some(4), "{flags}: admission's reading");
            let expected = if a.outcome == Outcome::Mutated {
                a.decision.as_ref().unwrap().config.concurrency
            } else {
                4
            };
            let row = crate::outcome::run_from_pod(&finished(&after), None)
                .expect("terminated")
                .expect("a row");
            assert_eq!(
                row.concurrency, expected,
                "{flags} ({:?}): the watcher must read what the pod runs with",
                a.outcome
            );
            assert_eq!(row.pipeline, notes[contract::PIPELINE].as_str().unwrap());
        }
    }
}

#[test]
fn held_out_pods_are_decided_annotated_and_left_as_requested() {
    let pod = build_pod(json!({}));
    // Without a model the baseline is applied only with the opt-in; holdout takes it back.
    let all = Settings {
        holdout_rate: 1.0,
        cold_start_apply_defaults: true,
        ..Settings::default()
    };
    let a = run(
        &request("CREATE", "Pod", pod.clone()),
        &all,
        Some(history()),
    );
    assert_eq!(a.outcome, Outcome::Holdout);
    let out = patched(&pod, &a);
    assert_runs_as_requested(&out, &pod);
    // Only the reporter's identity was added, with the decision tag it reports.
    let env = out["spec"]["containers"][0]["env"].as_array().unwrap();
    assert!(env.iter().any(|e| e["name"] == contract::ENV_DECISION
        && e["valueFrom"]["fieldRef"]["fieldPath"]
            == "metadata.annotations['inframind.io/decision']"));
    let notes = &out["metadata"]["annotations"];
    assert_eq!(notes[contract::DECISION_ANNOTATION], "holdout");
    assert_eq!(
        notes[contract::RECOMMENDATION],
        "cpu=3 memory=6Gi concurrency=3",
        "the decision is still recorded"
    );
    assert!(notes[contract::REASON]
        .as_str()
        .unwrap()
        .contains("control group"));
    assert_eq!(out["metadata"]["labels"][contract::MANAGED_LABEL], "true");
    // The watcher records the build as a holdout, at the requested config.
    let row = crate::outcome::run_from_pod(&finished(&out), None)
        .expect("terminated")
        .expect("a row");
    assert_eq!(row.decision, Some(crate::record::DecisionTag::Holdout));
    assert_eq!((row.cpu_req, row.mem_req_gb), (2.0, 4.0));

    // Cold starts and dry runs are not drawn into the control group.
    let no_opt_in = Settings {
        holdout_rate: 1.0,
        ..Settings::default()
    };
    let cold = run(&request("CREATE", "Pod", pod.clone()), &no_opt_in, None);
    assert_eq!(cold.outcome, Outcome::ColdStart);
    let dry = build_pod(json!({"inframind.io/dry-run": "true"}));
    let dry = run(&request("CREATE", "Pod", dry), &all, Some(history()));
    assert_eq!(dry.outcome, Outcome::DryRun);
    // At rate 0 the same pod is changed.
    let rate_zero = Settings {
        holdout_rate: 0.0,
        ..all
    };
    let none = run(
        &request("CREATE", "Pod", pod.clone()),
        &rate_zero,
        Some(history()),
    );
    assert_eq!(none.outcome, Outcome::Mutated);
    let row = crate::outcome::run_from_pod(&finished(&patched(&pod, &none)), None)
        .unwrap()
        .unwrap();
    assert!(row
        .decision
        .is_some_and(crate::record::DecisionTag::changed_the_pod));
}

/// A LimitRange that caps memory below the guarded decision and below the pod's own request
/// could OOM a build that would have run as requested: the pod is kept as it asked.
#[test]
fn a_limit_range_under_the_guarded_memory_keeps_the_request() {
    let mut pod = build_pod(json!({}));
    pod["metadata"]["namespace"] = json!("ci");
    let lr: k8s_openapi::api::core::v1::LimitRange = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "b", "namespace": "ci"},
        "spec": {"limits": [{"type": "Container", "max": {"memory": "3Gi"}}]}}))
    .unwrap();
    let policies = Arc::new(limits::Policies::new());
    policies.set("ci", limits::NamespacePolicy::from_objects(&[&lr], &[]));
    let settings = Settings {
        cold_start_apply_defaults: true,
        policies,
        ..Settings::default()
    };
    // History says 6 GB; the pod asks for 4Gi; the namespace allows at most 3Gi.
    let a = run(
        &request("CREATE", "Pod", pod.clone()),
        &settings,
        Some(history()),
    );
    assert_eq!(a.outcome, Outcome::Kept);
    assert!(a.response.patch.is_none());
    assert!(
        a.response.warnings[0].contains("LimitRange caps memory"),
        "{:?}",
        a.response.warnings
    );
}

/// `out` runs exactly as `pod` asked: same containers but for the reporter's `INFRAMIND_*`
/// identity variables (no concurrency, no resources, nothing else).
fn assert_runs_as_requested(out: &Value, pod: &Value) {
    let mut stripped = out["spec"].clone();
    for c in stripped["containers"].as_array_mut().unwrap() {
        if let Some(env) = c.get("env").and_then(Value::as_array) {
            for e in env {
                let name = e["name"].as_str().unwrap();
                assert!(
                    name.starts_with("INFRAMIND_") && name != contract::ENV_CONCURRENCY,
                    "{name} changes how the build runs"
                );
            }
            c.as_object_mut().unwrap().remove("env");
        }
    }
    assert_eq!(stripped, pod["spec"], "runs as requested");
}

#[derive(Debug)]
struct BoundIn(&'static str);

impl cache_injection::ClaimIndex for BoundIn {
    fn bound(&self, namespace: &str, name: &str) -> Option<bool> {
        Some(namespace == self.0 && name == "build-cache")
    }
}

/// Issue 17: an applied decision in an opted-in namespace mounts the bound cache claim and
/// points the build tools at it; the control group and other namespaces run as requested.
#[test]
fn opted_in_applied_builds_get_the_shared_cache_and_the_control_group_does_not() {
    let cached = |holdout_rate: f64| Settings {
        cold_start_apply_defaults: true,
        holdout_rate,
        cache: cache_injection::CacheSettings {
            claim: Some("build-cache".into()),
            namespaces: vec!["ci".into()],
            max_size_gb: 20,
            ..Default::default()
        },
        claims: Some(Arc::new(BoundIn("ci"))),
        ..Settings::default()
    };
    let mut pod = build_pod(json!({}));
    pod["metadata"]["namespace"] = json!("ci");
    let a = run(
        &request("CREATE", "Pod", pod.clone()),
        &cached(0.0),
        Some(history()),
    );
    assert_eq!(a.outcome, Outcome::Mutated);
    let out = patched(&pod, &a);
    assert_eq!(
        out["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "build-cache"
    );
    let c = &out["spec"]["containers"][0];
    assert_eq!(
        c["volumeMounts"][0]["mountPath"],
        cache_injection::MOUNT_PATH
    );
    let env = c["env"].as_array().unwrap();
    let value = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
    };
    assert_eq!(
        value("MAKEFLAGS"),
        Some("-j3"),
        "the decision's env is kept"
    );
    assert_eq!(value("CCACHE_DIR"), Some("/var/cache/inframind/ccache"));
    assert_eq!(
        value("CCACHE_MAXSIZE"),
        Some("5G"),
        "no output measured yet"
    );
    let notes = &out["metadata"]["annotations"];
    assert_eq!(
        notes[contract::CACHE],
        "claim build-cache at /var/cache/inframind, size 5G"
    );
    // The patched pod is a valid Pod.
    serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(out.clone()).unwrap();
    // Re-invocation changes nothing.
    let again = run(
        &request("CREATE", "Pod", out),
        &cached(0.0),
        Some(history()),
    );
    assert!(again.response.patch.is_none());

    // The control group is left as requested, and says why it has no cache.
    let held = run(
        &request("CREATE", "Pod", pod.clone()),
        &cached(1.0),
        Some(history()),
    );
    assert_eq!(held.outcome, Outcome::Holdout);
    let out = patched(&pod, &held);
    assert_runs_as_requested(&out, &pod);
    assert!(out["spec"].get("volumes").is_none());
    assert!(out["metadata"]["annotations"][contract::CACHE]
        .as_str()
        .unwrap()
        .contains("left as requested (holdout)"));
    // Another namespace is not opted in; a pod there can opt in, but the claim is not bound
    // there, so it is not mounted.
    let mut web = build_pod(json!({}));
    web["metadata"]["namespace"] = json!("web");
    let a = run(
        &request("CREATE", "Pod", web.clone()),
        &cached(0.0),
        Some(history()),
    );
    let out = patched(&web, &a);
    assert!(out["spec"].get("volumes").is_none());
    assert!(out["metadata"]["annotations"]
        .get(contract::CACHE)
        .is_none());
    web["metadata"]["annotations"] = json!({contract::CACHE_OPT: "enabled"});
    let a = run(
        &request("CREATE", "Pod", web.clone()),
        &cached(0.0),
        Some(history()),
    );
    let out = patched(&web, &a);
    assert!(out["spec"].get("volumes").is_none());
    assert!(out["metadata"]["annotations"][contract::CACHE]
        .as_str()
        .unwrap()
        .contains("no bound PersistentVolumeClaim build-cache in namespace web"));
}
