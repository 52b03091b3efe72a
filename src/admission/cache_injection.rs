//! Optional shared build cache on admission (off by default): when the platform team configures
//! a cache (a PersistentVolumeClaim in each opted-in namespace, or a remote sccache backend) and a
//! pod is opted in, the build container is pointed at it (`CCACHE_DIR` / `SCCACHE_DIR`, sizes
//! from the pipeline's observed output). Pure.
//!
//! The cache is part of an applied decision: pods left as requested (kept, cold start, holdout,
//! dry run) are not given it, so the control group measures its effect like any other change.
//! Only additions: a variable, volume or mount the pod already has is the team's own and wins;
//! a claim the webhook has not seen bound in the pod's namespace is never mounted (the pod would
//! stay Pending, which is worse than a cold cache).

use json_patch::PatchOperation;
use serde_json::{json, Value};

use super::patch::{append_ops, env_position, ptr};

use crate::features::PipelineHistory;

/// Name of the volume the webhook adds for the cache claim.
pub const VOLUME_NAME: &str = "inframind-build-cache";
/// Where the cache claim is mounted in the build container.
pub const MOUNT_PATH: &str = "/var/cache/inframind";
/// Cache size when the pipeline's output is unknown, GB.
pub const DEFAULT_SIZE_GB: u32 = 5;
/// Cache size per GB the pipeline writes per build: room for a few revisions of its objects.
pub const SIZE_PER_WRITTEN_GB: f64 = 4.0;

/// Whether a PersistentVolumeClaim exists and is bound in a namespace (the webhook's watch).
pub trait ClaimIndex: Send + Sync + std::fmt::Debug {
    /// `Some(true)` when `name` is bound in `namespace`, `Some(false)` when it is missing or not
    /// bound, `None` when not known yet.
    fn bound(&self, namespace: &str, name: &str) -> Option<bool>;
}

/// The shared build cache the platform team configured.
#[derive(Debug, Clone, Default)]
pub struct CacheSettings {
    /// PersistentVolumeClaim (ReadWriteMany) in each opted-in namespace, mounted at [`MOUNT_PATH`].
    pub claim: Option<String>,
    /// Variables pointing sccache at a remote backend (`SCCACHE_WEBDAV_ENDPOINT=…`,
    /// `SCCACHE_REDIS_ENDPOINT=…`), set as given.
    pub remote_env: Vec<(String, String)>,
    /// Namespaces whose pods get the cache unless they opt out; `*` for all. Pods elsewhere opt
    /// in with the annotation `inframind.io/build-cache: enabled`.
    pub namespaces: Vec<String>,
    /// Largest cache size written into `CCACHE_MAXSIZE` / `SCCACHE_CACHE_SIZE`, GB.
    pub max_size_gb: u32,
}

impl CacheSettings {
    /// Whether a cache is configured at all.
    pub fn configured(&self) -> bool {
        self.claim.is_some() || !self.remote_env.is_empty()
    }

    /// Whether a pod in `namespace` with the opt annotation `opt` gets the cache.
    pub fn opted_in(&self, namespace: &str, opt: Option<&str>) -> bool {
        match opt.map(str::trim) {
            Some("disabled") | Some("false") => false,
            Some("enabled") | Some("true") => true,
            _ => self.namespaces.iter().any(|n| n == "*" || n == namespace),
        }
    }
}

/// The cache size for a pipeline: [`SIZE_PER_WRITTEN_GB`] times what its recent builds wrote,
/// between 1 GB and the configured maximum.
pub fn size_gb(history: Option<&PipelineHistory>, max_gb: u32) -> u32 {
    let max = max_gb.max(1);
    let written: Vec<f64> = history
        .map(|h| h.recent_runs().filter_map(|r| r.io_write_gb).collect())
        .unwrap_or_default();
    if written.is_empty() {
        return DEFAULT_SIZE_GB.min(max);
    }
    let mean = written.iter().sum::<f64>() / written.len() as f64;
    ((mean * SIZE_PER_WRITTEN_GB).ceil().max(1.0) as u32).min(max)
}

/// What the cache does to a pod.
#[derive(Debug, Clone, PartialEq)]
pub enum CachePlan {
    /// Patch operations for the volume and its mount, the variables the build container gets
    /// where it does not set them (added with the decision's own, see `patch::resource_ops`),
    /// and the annotation saying what was configured.
    Inject(Vec<PatchOperation>, Vec<Value>, String),
    /// Not configured, for the reason given (annotated so the team sees why).
    Skip(String),
}

/// The cache configuration of container `i` of `pod` in `namespace`, `size_gb` large; `claims`
/// says whether the claim is bound there.
pub fn plan(
    pod: &Value,
    i: usize,
    namespace: &str,
    settings: &CacheSettings,
    claims: Option<&dyn ClaimIndex>,
    size_gb: u32,
) -> CachePlan {
    let idx = i.to_string();
    let c = pod
        .pointer(&format!("/spec/containers/{i}"))
        .unwrap_or(&Value::Null);
    let mut ops = Vec::new();
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut what = Vec::new();
    if let Some(claim) = &settings.claim {
        let volumes = pod.pointer("/spec/volumes").and_then(Value::as_array);
        let mounts = c.get("volumeMounts").and_then(Value::as_array);
        let named = |list: Option<&Vec<Value>>, key: &str, v: &str| {
            list.is_some_and(|l| {
                l.iter()
                    .any(|x| x.get(key).and_then(Value::as_str) == Some(v))
            })
        };
        if named(volumes, "name", VOLUME_NAME) || named(mounts, "mountPath", MOUNT_PATH) {
            return CachePlan::Skip(format!(
                "not configured: the pod already has a volume {VOLUME_NAME} or a mount at {MOUNT_PATH}"
            ));
        }
        match claims.and_then(|c| c.bound(namespace, claim)) {
            Some(true) => {}
            Some(false) => {
                return CachePlan::Skip(format!(
                    "not configured: no bound PersistentVolumeClaim {claim} in namespace {namespace}"
                ))
            }
            None => {
                return CachePlan::Skip(format!(
                    "not configured: PersistentVolumeClaim {claim} in namespace {namespace} not known yet"
                ))
            }
        }
        let volume = json!({"name": VOLUME_NAME, "persistentVolumeClaim": {"claimName": claim}});
        ops.extend(append_ops(
            volumes.is_some(),
            ptr(&["spec", "volumes"]),
            vec![volume],
        ));
        let mount = json!({"name": VOLUME_NAME, "mountPath": MOUNT_PATH});
        ops.extend(append_ops(
            mounts.is_some(),
            ptr(&["spec", "containers", &idx, "volumeMounts"]),
            vec![mount],
        ));
        vars.push(("CCACHE_DIR".into(), format!("{MOUNT_PATH}/ccache")));
        vars.push(("SCCACHE_DIR".into(), format!("{MOUNT_PATH}/sccache")));
        what.push(format!("claim {claim} at {MOUNT_PATH}"));
    }
    vars.extend(settings.remote_env.iter().cloned());
    if !settings.remote_env.is_empty() {
        let names: Vec<&str> = settings
            .remote_env
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        what.push(format!("remote {}", names.join(", ")));
    }
    vars.push(("CCACHE_MAXSIZE".into(), format!("{size_gb}G")));
    vars.push(("SCCACHE_CACHE_SIZE".into(), format!("{size_gb}G")));
    // The team's own variables win.
    let vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| env_position(c, k).is_none())
        .collect();
    if ops.is_empty() && vars.iter().all(|(k, _)| k.ends_with("SIZE")) {
        return CachePlan::Skip("not configured: the container sets its own cache".into());
    }
    let entries: Vec<Value> = vars
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    what.push(format!("size {size_gb}G"));
    CachePlan::Inject(ops, entries, what.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Claims(Vec<(&'static str, &'static str)>);

    impl ClaimIndex for Claims {
        fn bound(&self, ns: &str, name: &str) -> Option<bool> {
            Some(self.0.iter().any(|(n, c)| *n == ns && *c == name))
        }
    }

    fn settings() -> CacheSettings {
        CacheSettings {
            claim: Some("build-cache".into()),
            namespaces: vec!["ci".into()],
            max_size_gb: 20,
            ..Default::default()
        }
    }

    fn pod(container: Value) -> Value {
        json!({"metadata": {"name": "b"}, "spec": {"containers": [{"name": "sidecar"}, container]}})
    }

    /// `pod` with the plan applied to container `i` as admission applies it: the operations,
    /// then the variables the container does not set.
    fn applied(pod: &Value, i: usize, plan: &CachePlan) -> Value {
        let CachePlan::Inject(ops, env, _) = plan else {
            panic!("not injected: {plan:?}")
        };
        let mut p = pod.clone();
        json_patch::patch(&mut p, ops).expect("the patch applies");
        let vars = super::super::patch::missing_env_ops(&p, i, env);
        json_patch::patch(&mut p, &vars).expect("the variables apply");
        p
    }

    #[test]
    fn opt_in_by_namespace_or_annotation_and_opt_out_by_annotation() {
        let s = settings();
        assert!(s.opted_in("ci", None));
        assert!(!s.opted_in("ci", Some("disabled")));
        assert!(!s.opted_in("web", None));
        assert!(s.opted_in("web", Some("enabled")));
        assert!(!CacheSettings::default().configured());
        assert!(settings().configured());
    }

    #[test]
    fn a_bound_claim_is_mounted_and_the_build_tools_pointed_at_it() {
        let p = pod(json!({"name": "build", "env": [{"name": "CCACHE_DIR", "value": "/mine"}]}));
        let claims = Claims(vec![("ci", "build-cache")]);
        let plan = plan(&p, 1, "ci", &settings(), Some(&claims), 4);
        let CachePlan::Inject(_, _, note) = &plan else {
            panic!("{plan:?}")
        };
        assert_eq!(note, "claim build-cache at /var/cache/inframind, size 4G");
        let out = applied(&p, 1, &plan);
        assert_eq!(
            out.pointer("/spec/volumes/0"),
            Some(
                &json!({"name": VOLUME_NAME, "persistentVolumeClaim": {"claimName": "build-cache"}})
            )
        );
        let c = &out["spec"]["containers"][1];
        assert_eq!(c["volumeMounts"][0]["mountPath"], MOUNT_PATH);
        let env: Vec<(String, String)> = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap().into(),
                    e["value"].as_str().unwrap().into(),
                )
            })
            .collect();
        // The team's own CCACHE_DIR wins; the rest is added.
        assert_eq!(env[0], ("CCACHE_DIR".into(), "/mine".into()));
        assert!(env.contains(&("SCCACHE_DIR".into(), "/var/cache/inframind/sccache".into())));
        assert!(env.contains(&("CCACHE_MAXSIZE".into(), "4G".into())));
        assert_eq!(env.iter().filter(|(k, _)| k == "CCACHE_DIR").count(), 1);
        assert!(
            out["spec"]["containers"][0].get("env").is_none(),
            "only the build container"
        );
    }

    #[test]
    fn a_missing_or_unknown_claim_is_never_mounted() {
        let p = pod(json!({"name": "build"}));
        let none = Claims(vec![("other", "build-cache")]);
        let CachePlan::Skip(why) = plan(&p, 1, "ci", &settings(), Some(&none), 4) else {
            panic!()
        };
        assert!(why.contains("no bound PersistentVolumeClaim build-cache in namespace ci"));
        assert!(
            matches!(plan(&p, 1, "ci", &settings(), None, 4), CachePlan::Skip(w) if w.contains("not known yet"))
        );
    }

    #[test]
    fn a_remote_backend_needs_no_volume() {
        let s = CacheSettings {
            remote_env: vec![("SCCACHE_WEBDAV_ENDPOINT".into(), "http://cache:8080".into())],
            namespaces: vec!["*".into()],
            max_size_gb: 20,
            ..Default::default()
        };
        let p = json!({"spec": {"containers": [{"name": "build", "env": []}]}});
        let plan = plan(&p, 0, "any", &s, None, 2);
        let out = applied(&p, 0, &plan);
        assert!(out["spec"].get("volumes").is_none());
        assert_eq!(
            out["spec"]["containers"][0]["env"][0]["name"],
            "SCCACHE_WEBDAV_ENDPOINT"
        );
        let CachePlan::Inject(_, _, note) = plan else {
            panic!()
        };
        assert_eq!(note, "remote SCCACHE_WEBDAV_ENDPOINT, size 2G");
        // A container that configures all of it itself is left alone.
        let own = json!({"spec": {"containers": [{"name": "build", "env": [{"name": "SCCACHE_WEBDAV_ENDPOINT", "value": "x"}]}]}});
        assert!(matches!(
            super::plan(&own, 0, "any", &s, None, 2),
            CachePlan::Skip(_)
        ));
    }

    #[test]
    fn the_size_follows_what_the_pipeline_writes() {
        let run = |gb: f64| {
            let mut r = crate::simulate::demo_runs(1, chrono::Utc::now(), 1).remove(0);
            r.success = true;
            r.io_write_gb = Some(gb);
            r
        };
        let h = |gb: f64| PipelineHistory::from_runs(&[run(gb)]);
        assert_eq!(size_gb(None, 20), DEFAULT_SIZE_GB);
        assert_eq!(size_gb(Some(&h(0.1)), 20), 1);
        assert_eq!(size_gb(Some(&h(1.2)), 20), 5);
        assert_eq!(size_gb(Some(&h(30.0)), 20), 20);
    }
}
