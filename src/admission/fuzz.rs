//! Fuzzing the admission path with arbitrary pods: odd shapes (containers that are not objects,
//! deep nesting), huge and unicode strings, keys with `/` and `~`, odd quantities and MAKEFLAGS.
//! For every pod: admission never panics, always allows, its patch applies to the pod as sent,
//! re-invocation on the patched pod yields no patch, and the annotations stay under the API
//! server's 256 KiB. `INFRAMIND_FUZZ_CASES` raises the case count (the long mode).

use std::sync::Arc;

use base64::Engine;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::*;
use crate::stats::PipelineStats;
use crate::BuildConfig;

/// The API server's limit on the total size of a pod's annotations (keys and values).
const ANNOTATIONS_LIMIT: usize = 256 * 1024;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9./~_-]{0,24}",
        2 => "\\PC{0,40}",
        1 => (1usize..4).prop_map(|k| "ü/~".repeat(k * 20_000)),
        1 => Just(String::new()),
    ]
}

fn quantity() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("2")),
        Just(json!("500m")),
        Just(json!("4Gi")),
        Just(json!("1e3")),
        Just(json!("-1")),
        Just(json!("0.0001m")),
        Just(json!("99999999999999Ti")),
        Just(json!(7)),
        Just(json!(null)),
        text().prop_map(Value::String),
    ]
}

fn env_entry() -> impl Strategy<Value = Value> {
    let makeflags = prop_oneof![
        Just("-j4".to_string()),
        Just("-j 4".to_string()),
        Just("--jobs=4 -k".to_string()),
        Just("--jobs".to_string()),
        Just("-j99999999999".to_string()),
        text(),
    ];
    prop_oneof![
        makeflags.prop_map(|v| json!({"name": "MAKEFLAGS", "value": v})),
        text().prop_map(|v| json!({"name": "CMAKE_BUILD_PARALLEL_LEVEL", "value": v})),
        Just(
            json!({"name": "CARGO_BUILD_JOBS", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}})
        ),
        Just(json!("not an object")),
        Just(json!({"value": "no name"})),
    ]
}

fn container() -> impl Strategy<Value = Value> {
    let object = (
        prop_oneof![
            Just("build".to_string()),
            Just("helper".to_string()),
            text()
        ],
        text(),
        proptest::option::of((quantity(), quantity())),
        proptest::option::of((quantity(), quantity())),
        proptest::collection::vec(env_entry(), 0..4),
    )
        .prop_map(|(name, image, req, lim, env)| {
            let mut c = json!({"name": name, "image": image, "env": env});
            let mut res = Map::new();
            if let Some((cpu, mem)) = req {
                res.insert("requests".into(), json!({"cpu": cpu, "memory": mem}));
            }
            if let Some((cpu, mem)) = lim {
                res.insert("limits".into(), json!({"cpu": cpu, "memory": mem}));
            }
            c["resources"] = Value::Object(res);
            c
        });
    prop_oneof![
        8 => object,
        1 => Just(json!("not an object")),
        1 => Just(json!(null)),
        1 => Just(json!([[[{"deep": [[[1]]]}]]])),
        1 => Just(json!({"name": "build", "resources": "odd", "env": {"MAKEFLAGS": "-j2"}})),
    ]
}

fn string_map() -> impl Strategy<Value = Value> {
    proptest::collection::btree_map(
        prop_oneof![
            Just("inframind.io/pipeline".to_string()),
            Just("inframind.io/branch".to_string()),
            Just("inframind.io/container".to_string()),
            Just("inframind.io/dry-run".to_string()),
            Just("tekton.dev/pipeline".to_string()),
            Just("a/b~c".to_string()),
            text(),
        ],
        text(),
        0..5,
    )
    .prop_map(|m| json!(m))
}

fn pod() -> impl Strategy<Value = Value> {
    (
        string_map(),
        string_map(),
        proptest::collection::vec(container(), 0..4),
        text(),
        any::<bool>(),
    )
        .prop_map(|(labels, annotations, containers, name, odd_spec)| {
            let spec = if odd_spec {
                json!({"containers": "nope", "nodeSelector": [1, 2]})
            } else {
                json!({"containers": containers})
            };
            json!({"metadata": {"generateName": name, "labels": labels, "annotations": annotations},
                   "spec": spec})
        })
}

fn history() -> Arc<PipelineStats> {
    Arc::new(PipelineStats {
        pipeline: "fuzz".into(),
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

#[derive(Debug)]
struct AllBound;

impl super::cache_injection::ClaimIndex for AllBound {
    fn bound(&self, _: &str, _: &str) -> Option<bool> {
        Some(true)
    }
}

fn everywhere() -> super::cache_injection::CacheSettings {
    super::cache_injection::CacheSettings {
        claim: Some("build-cache".into()),
        remote_env: vec![("SCCACHE_WEBDAV_ENDPOINT".into(), "http://cache:8080".into())],
        namespaces: vec!["*".into()],
        max_size_gb: 20,
    }
}

fn admit_pod(pod: &Value, settings: &Settings) -> Admission {
    let req: AdmissionRequest = serde_json::from_value(json!({
        "uid": "fuzz", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "operation": "CREATE", "object": pod}))
    .unwrap();
    let stats = history();
    admit(
        &req,
        settings,
        None,
        &move |_| Some(stats.clone()),
        chrono::Utc::now(),
    )
}

fn annotation_bytes(pod: &Value) -> usize {
    pod.pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .map_or(0, |m| {
            m.iter()
                .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
                .sum()
        })
}

fn cases() -> u32 {
    std::env::var("INFRAMIND_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_pod_is_admitted_with_a_patch_that_applies_once(pod in pod(), dry_run in any::<bool>(), apply in any::<bool>(), cache in any::<bool>()) {
        // Applied decisions (the cold-start opt-in) and the shared cache exercise every patch.
        let settings = Settings {
            dry_run,
            cold_start_apply_defaults: apply,
            cache: if cache { everywhere() } else { Default::default() },
            claims: Some(Arc::new(AllBound)),
            ..Settings::default()
        };
        let a = admit_pod(&pod, &settings);
        prop_assert!(a.response.allowed);
        let Some(patch) = &a.response.patch else { return Ok(()) };
        let bytes = base64::engine::general_purpose::STANDARD.decode(patch).unwrap();
        let ops: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        let mut after = pod.clone();
        let applied = json_patch::patch(&mut after, &ops);
        prop_assert!(applied.is_ok(), "patch does not apply: {:?}\n{}", applied, serde_json::to_string(&ops).unwrap());
        let before = annotation_bytes(&pod);
        let total = annotation_bytes(&after);
        // Ours add at most a bounded amount, and never push a pod that fit over the limit.
        prop_assert!(total < ANNOTATIONS_LIMIT || before >= ANNOTATIONS_LIMIT, "annotations {before} -> {total} bytes");
        let again = admit_pod(&after, &settings);
        prop_assert!(again.response.patch.is_none(), "re-invocation patched again");
    }
}
