//! Building the JSON patch that applies a decision to a pod.
//!
//! Only `add` and `replace` operations, as the VPA admission controller does: maps that are
//! missing (`resources`, `requests`, `limits`, `env`, annotations) are created whole; existing
//! members are replaced; paths are escaped per RFC 6901 (by `jsonptr`). Limits are scaled in
//! proportion to the new request when the pod had them, never below the new request.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, ReplaceOperation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::contract::{concurrency_in_env, form_of, write_jobs};
use super::quantity::{format_cpu, format_mem, parse_cpu, parse_mem_gb};
use crate::BuildConfig;

/// The build container's resources and concurrency before InfraMind touched them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Original {
    /// Requests as written (`cpu`, `memory`).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub requests: Map<String, Value>,
    /// Limits as written.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub limits: Map<String, Value>,
    /// Build concurrency found in the concurrency variables, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
}

fn container(pod: &Value, i: usize) -> &Value {
    pod.pointer(&format!("/spec/containers/{i}"))
        .unwrap_or(&Value::Null)
}

fn map_at<'a>(v: &'a Value, key: &str) -> Option<&'a Map<String, Value>> {
    v.get(key).and_then(Value::as_object)
}

/// What the build container had before any change.
pub fn original(pod: &Value, i: usize, concurrency_env: &[String]) -> Original {
    let c = container(pod, i);
    let res = c.get("resources").unwrap_or(&Value::Null);
    let env: Vec<&Value> = c
        .get("env")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let concurrency = concurrency_in_env(concurrency_env, |name| {
        env.iter()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(name))?
            .get("value")?
            .as_str()
    });
    Original {
        requests: map_at(res, "requests").cloned().unwrap_or_default(),
        limits: map_at(res, "limits").cloned().unwrap_or_default(),
        concurrency,
    }
}

struct Ops {
    ops: Vec<PatchOperation>,
}

impl Ops {
    fn set(&mut self, exists: bool, path: PointerBuf, value: Value) {
        self.ops.push(if exists {
            PatchOperation::Replace(ReplaceOperation { path, value })
        } else {
            PatchOperation::Add(AddOperation { path, value })
        });
    }
}

pub(super) fn ptr(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

/// The new limit for one resource: the old limit scaled by new/old request, never below the request.
fn scaled_limit(old_limit: f64, old_request: Option<f64>, new_request: f64) -> f64 {
    match old_request {
        Some(r) if r > 0.0 => (old_limit * new_request / r).max(new_request),
        // A limit without a request means request = limit in Kubernetes.
        _ => new_request,
    }
}

/// Resource and env operations that apply `config` to container `i`; `Err` when the pod's own
/// quantities cannot be read (the caller then admits the pod unchanged).
///
/// `extra_env` entries (`{"name": …, "value"|"valueFrom": …}`) are added when the container does
/// not already set a variable of that name.
pub fn resource_ops(
    pod: &Value,
    i: usize,
    config: &BuildConfig,
    concurrency_env: &[String],
    extra_env: &[Value],
) -> Result<Vec<PatchOperation>, String> {
    let idx = i.to_string();
    let base = ["spec", "containers", idx.as_str()];
    let path = |rest: &[&str]| ptr(&[&base[..], rest].concat());
    let c = container(pod, i);
    if !c.is_object() {
        // No member can be added to a number or a string: the patch would not apply.
        return Err(format!("container {i} is not an object"));
    }
    let mut ops = Ops { ops: Vec::new() };
    request_and_limit_ops(&mut ops, &path, c, config)?;
    env_ops(&mut ops, &path, c, config, concurrency_env, extra_env);
    Ok(ops.ops)
}

/// Sets the requests to `config`, and scales the limits the container had in proportion.
fn request_and_limit_ops(
    ops: &mut Ops,
    path: &dyn Fn(&[&str]) -> PointerBuf,
    c: &Value,
    config: &BuildConfig,
) -> Result<(), String> {
    let cpu = json!(format_cpu(config.cpu));
    let mem = json!(format_mem(config.mem_gb));
    let Some(res) = c.get("resources").and_then(Value::as_object) else {
        ops.set(
            false,
            path(&["resources"]),
            json!({"requests": {"cpu": cpu, "memory": mem}}),
        );
        return Ok(());
    };
    let requests = res.get("requests").and_then(Value::as_object);
    match requests {
        None => ops.set(
            false,
            path(&["resources", "requests"]),
            json!({"cpu": cpu, "memory": mem}),
        ),
        Some(r) => {
            ops.set(
                r.contains_key("cpu"),
                path(&["resources", "requests", "cpu"]),
                cpu,
            );
            ops.set(
                r.contains_key("memory"),
                path(&["resources", "requests", "memory"]),
                mem,
            );
        }
    }
    let Some(limits) = res.get("limits").and_then(Value::as_object) else {
        return Ok(());
    };
    let read = |m: Option<&Map<String, Value>>,
                key: &str,
                parse: fn(&str) -> Option<f64>|
     -> Result<Option<f64>, String> {
        match m.and_then(|m| m.get(key)) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .and_then(parse)
                .map(Some)
                .ok_or_else(|| format!("unreadable {key} quantity {v}")),
        }
    };
    if let Some(old) = read(Some(limits), "cpu", parse_cpu)? {
        let new = scaled_limit(old, read(requests, "cpu", parse_cpu)?, config.cpu);
        ops.set(
            true,
            path(&["resources", "limits", "cpu"]),
            json!(format_cpu(new)),
        );
    }
    if let Some(old) = read(Some(limits), "memory", parse_mem_gb)? {
        let new = scaled_limit(old, read(requests, "memory", parse_mem_gb)?, config.mem_gb);
        ops.set(
            true,
            path(&["resources", "limits", "memory"]),
            json!(format_mem(new)),
        );
    }
    Ok(())
}

/// The position of variable `name` in a container's `env`, if it sets it.
pub(super) fn env_position(c: &Value, name: &str) -> Option<usize> {
    c.get("env")?
        .as_array()?
        .iter()
        .position(|e| e.get("name").and_then(Value::as_str) == Some(name))
}

/// Operations appending `items` to the array at `path`: `add …/-` per item when the array
/// exists, else one `add` of the whole array (none when there is nothing to add).
pub(super) fn append_ops(exists: bool, path: PointerBuf, items: Vec<Value>) -> Vec<PatchOperation> {
    let mut ops = Ops { ops: Vec::new() };
    if !exists {
        if !items.is_empty() {
            ops.set(false, path, Value::Array(items));
        }
        return ops.ops;
    }
    for item in items {
        let mut at = path.clone();
        at.push_back("-");
        ops.set(false, at, item);
    }
    ops.ops
}

/// The entries of `extra_env` the container does not set yet, leaving out `reserved` names.
fn missing_env(c: &Value, extra_env: &[Value], reserved: &[String]) -> Vec<Value> {
    extra_env
        .iter()
        .filter(|e| {
            e.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| env_position(c, n).is_none() && !reserved.iter().any(|r| r == n))
        })
        .cloned()
        .collect()
}

/// Sets every concurrency variable (flag strings such as MAKEFLAGS, GOFLAGS, MAVEN_ARGS and
/// GRADLE_OPTS are merged, numbers replaced; `valueFrom` is left alone) and adds `extra_env`
/// (the reporter's identity) where the container does not set it.
fn env_ops(
    ops: &mut Ops,
    path: &dyn Fn(&[&str]) -> PointerBuf,
    c: &Value,
    config: &BuildConfig,
    concurrency_env: &[String],
    extra_env: &[Value],
) {
    let value_for = |name: &str, current: Option<&str>| {
        write_jobs(form_of(name), current, config.concurrency, config.cpu)
    };
    let env = c.get("env").and_then(Value::as_array);
    let mut added = Vec::new();
    for name in concurrency_env {
        match env.zip(env_position(c, name)) {
            Some((env, k)) if env[k].get("valueFrom").is_some() => {
                // Set from a ConfigMap or Secret: the team owns it; leave it.
            }
            Some((env, k)) => {
                let current = env[k].get("value").and_then(Value::as_str);
                let k = k.to_string();
                ops.set(
                    current.is_some(),
                    path(&["env", k.as_str(), "value"]),
                    json!(value_for(name, current)),
                );
            }
            None => added.push(json!({"name": name, "value": value_for(name, None)})),
        }
    }
    added.extend(missing_env(c, extra_env, concurrency_env));
    ops.ops
        .extend(append_ops(env.is_some(), path(&["env"]), added));
}

/// Adds the variables of `extra_env` container `i` does not set, and nothing else (the
/// control group's pods get the reporter's identity this way and run as requested). No
/// operation for a non-object container.
pub fn missing_env_ops(pod: &Value, i: usize, extra_env: &[Value]) -> Vec<PatchOperation> {
    let c = container(pod, i);
    if !c.is_object() {
        return Vec::new();
    }
    let idx = i.to_string();
    append_ops(
        c.get("env").and_then(Value::as_array).is_some(),
        ptr(&["spec", "containers", idx.as_str(), "env"]),
        missing_env(c, extra_env, &[]),
    )
}

/// Operations adding `annotations` (creating the map when the pod has none).
pub fn annotation_ops(pod: &Value, annotations: &[(String, String)]) -> Vec<PatchOperation> {
    metadata_map_ops(pod, "annotations", annotations)
}

/// Operations adding `labels` (creating the map when the pod has none).
pub fn label_ops(pod: &Value, labels: &[(String, String)]) -> Vec<PatchOperation> {
    metadata_map_ops(pod, "labels", labels)
}

fn metadata_map_ops(
    pod: &Value,
    map_name: &str,
    entries: &[(String, String)],
) -> Vec<PatchOperation> {
    let mut ops = Ops { ops: Vec::new() };
    match pod
        .get("metadata")
        .and_then(|m| m.get(map_name))
        .and_then(Value::as_object)
    {
        None => {
            let map: Map<String, Value> =
                entries.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            if pod.get("metadata").is_some_and(Value::is_object) {
                ops.set(false, ptr(&["metadata", map_name]), Value::Object(map));
            } else {
                ops.set(false, ptr(&["metadata"]), json!({ map_name: map }));
            }
        }
        Some(existing) => {
            for (k, v) in entries {
                ops.set(
                    existing.contains_key(k),
                    ptr(&["metadata", map_name, k]),
                    json!(v),
                );
            }
        }
    }
    ops.ops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(pod: &Value, ops: &[PatchOperation]) -> Value {
        let mut p = pod.clone();
        json_patch::patch(&mut p, ops).expect("patch applies");
        p
    }

    fn env_names() -> Vec<String> {
        ["MAKEFLAGS", "CMAKE_BUILD_PARALLEL_LEVEL"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    const CFG: BuildConfig = BuildConfig {
        cpu: 6.0,
        mem_gb: 12.5,
        concurrency: 6,
    };

    /// Fuzzing found patches that did not apply when a container entry was not an object.
    #[test]
    fn a_container_that_is_not_an_object_gets_no_patch() {
        for c in [json!(42), json!("build"), json!(null), json!(["x"])] {
            let pod = json!({"spec": {"containers": [c]}});
            assert!(
                resource_ops(&pod, 0, &CFG, &env_names(), &[]).is_err(),
                "{pod}"
            );
        }
    }

    #[test]
    fn bare_container_gets_requests_and_env_created() {
        let pod = json!({"spec": {"containers": [{"name": "build", "image": "x"}]}});
        let out = apply(
            &pod,
            &resource_ops(&pod, 0, &CFG, &env_names(), &[]).unwrap(),
        );
        let c = &out["spec"]["containers"][0];
        assert_eq!(
            c["resources"],
            json!({"requests": {"cpu": "6", "memory": "12800Mi"}})
        );
        assert_eq!(
            c["env"],
            json!([{"name": "MAKEFLAGS", "value": "-j6"}, {"name": "CMAKE_BUILD_PARALLEL_LEVEL", "value": "6"}])
        );
    }

    #[test]
    fn limits_scale_with_requests_and_never_fall_below_them() {
        let pod = json!({"spec": {"containers": [{"name": "b", "resources": {"requests": {"cpu": "3", "memory": "10Gi"}, "limits": {"cpu": "6", "memory": "10Gi"}}}]}});
        let out = apply(&pod, &resource_ops(&pod, 0, &CFG, &[], &[]).unwrap());
        let r = &out["spec"]["containers"][0]["resources"];
        assert_eq!(r["requests"], json!({"cpu": "6", "memory": "12800Mi"}));
        assert_eq!(r["limits"], json!({"cpu": "12", "memory": "12800Mi"}));
        // Limits only (request defaults to the limit): the new limit is the new request.
        let pod = json!({"spec": {"containers": [{"name": "b", "resources": {"limits": {"memory": "4Gi"}}}]}});
        let out = apply(&pod, &resource_ops(&pod, 0, &CFG, &[], &[]).unwrap());
        assert_eq!(
            out["spec"]["containers"][0]["resources"]["limits"]["memory"],
            "12800Mi"
        );
        let bad = json!({"spec": {"containers": [{"name": "b", "resources": {"limits": {"cpu": "lots"}}}]}});
        assert!(resource_ops(&bad, 0, &CFG, &[], &[])
            .unwrap_err()
            .contains("unreadable cpu"));
    }

    #[test]
    fn makeflags_is_merged_and_value_from_is_left_alone() {
        use super::super::contract::merge_makeflags;
        assert_eq!(
            merge_makeflags("-k -j2 --output-sync", 8),
            "-k --output-sync -j8"
        );
        assert_eq!(merge_makeflags("-j 4 -s", 8), "-s -j8");
        assert_eq!(merge_makeflags("--jobs=3", 8), "-j8");
        assert_eq!(
            super::super::contract::jobs_in_makeflags("-k -j12"),
            Some(12)
        );
        assert_eq!(
            super::super::contract::jobs_in_makeflags("--jobs 5"),
            Some(5)
        );
        let pod = json!({"spec": {"containers": [{"name": "b", "env": [
            {"name": "MAKEFLAGS", "value": "-k -j2"},
            {"name": "CMAKE_BUILD_PARALLEL_LEVEL", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}},
            {"name": "OTHER", "value": "x"}]}]}});
        let out = apply(
            &pod,
            &resource_ops(
                &pod,
                0,
                &CFG,
                &[
                    "MAKEFLAGS".into(),
                    "CMAKE_BUILD_PARALLEL_LEVEL".into(),
                    "CARGO_BUILD_JOBS".into(),
                ],
                &[
                    json!({"name": "OTHER", "value": "mine"}),
                    json!({"name": "INFRAMIND_PIPELINE", "value": "p"}),
                ],
            )
            .unwrap(),
        );
        let env = &out["spec"]["containers"][0]["env"];
        assert_eq!(env[0], json!({"name": "MAKEFLAGS", "value": "-k -j6"}));
        assert!(env[1].get("value").is_none());
        assert_eq!(env[2], json!({"name": "OTHER", "value": "x"}));
        assert_eq!(env[3], json!({"name": "CARGO_BUILD_JOBS", "value": "6"}));
        assert_eq!(
            env[4],
            json!({"name": "INFRAMIND_PIPELINE", "value": "p"}),
            "extra env added; the team's own OTHER kept"
        );
        assert_eq!(env.as_array().unwrap().len(), 5);
        assert_eq!(
            env[4],
            json!({"name": "INFRAMIND_PIPELINE", "value": "p"}),
            "extra env added, the team's own OTHER kept"
        );
        assert_eq!(env.as_array().unwrap().len(), 5);
        assert_eq!(original(&pod, 0, &env_names()).concurrency, Some(2));
    }

    #[test]
    fn annotations_are_created_or_added_with_escaped_paths() {
        let notes = vec![("inframind.io/mutated".to_string(), "true".to_string())];
        let none = json!({"metadata": {"name": "p"}});
        assert_eq!(
            apply(&none, &annotation_ops(&none, &notes))["metadata"]["annotations"]
                ["inframind.io/mutated"],
            "true"
        );
        let some = json!({"metadata": {"annotations": {"a": "b"}}});
        let ops = annotation_ops(&some, &notes);
        assert_eq!(
            serde_json::to_value(&ops).unwrap()[0]["path"],
            "/metadata/annotations/inframind.io~1mutated"
        );
        let out = apply(&some, &ops);
        assert_eq!(
            out["metadata"]["annotations"],
            json!({"a": "b", "inframind.io/mutated": "true"})
        );
        let bare = json!({"spec": {}});
        assert_eq!(
            apply(&bare, &annotation_ops(&bare, &notes))["metadata"]["annotations"]
                ["inframind.io/mutated"],
            "true"
        );
    }
}
