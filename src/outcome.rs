//! A finished build pod → a telemetry row (pure). What the pod outcome watcher records.
//!
//! The webhook labels every pod it decided on (`inframind.io/managed: "true"`) and annotates
//! the context it recognised (pipeline, branch, image, node type, container). When the build
//! container has terminated, its row carries the pipeline context, the requests and concurrency
//! it ran with, its duration (container start to termination), success (exit code 0), restarts
//! as `retry_count`, and whether it was OOM-killed. The run_id is `pod-<uid>`, the same as the
//! in-pod reporter's, so both rows merge.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};

use crate::admission::contract;
use crate::admission::quantity::{parse_cpu, parse_mem_gb};
use crate::record::{DecisionTag, RunRecord, UNKNOWN};

/// Label the webhook puts on every pod it decided on; the watcher selects on it.
pub use crate::admission::contract::MANAGED_LABEL;

/// The run_id of a pod's build.
pub fn run_id(pod_uid: &str) -> String {
    format!("pod-{pod_uid}")
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

/// The decision tag the webhook annotated: `applied` with `explored: true` is an exploration.
pub fn decision_tag(pod: &Pod) -> Option<DecisionTag> {
    let tag = DecisionTag::parse(annotation(pod, contract::DECISION_ANNOTATION)?)?;
    let explored = annotation(pod, contract::EXPLORED) == Some("true");
    Some(match tag {
        DecisionTag::Applied if explored => DecisionTag::Explored,
        other => other,
    })
}

/// Concurrency from the container's env, by the contract's one rule (the same admission used).
fn concurrency(env: &[k8s_openapi::api::core::v1::EnvVar]) -> Option<u32> {
    contract::concurrency_in_env(contract::DEFAULT_CONCURRENCY_ENV, |name| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.as_deref())
    })
}

/// The build container's final termination, if it has ended.
fn terminated<'a>(pod: &'a Pod, container: &str) -> Option<(&'a ContainerStateTerminated, u32)> {
    let status = pod
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|s| s.name == container)?;
    let t = status.state.as_ref()?.terminated.as_ref()?;
    Some((t, status.restart_count.max(0) as u32))
}

/// Why a build's pod was decided as it was, from its annotations.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DecisionNote {
    /// `inframind.io/rationale`.
    pub rationale: String,
    /// `inframind.io/expected-cache`, when the model predicted.
    pub expected_cache: Option<String>,
    /// `inframind.io/cache`, when a shared cache was configured (or why not).
    pub cache: Option<String>,
}

/// The decision note of a pod InfraMind decided on (`None` without a rationale).
pub fn note_from_pod(pod: &Pod) -> Option<DecisionNote> {
    Some(DecisionNote {
        rationale: annotation(pod, contract::RATIONALE)?.to_string(),
        expected_cache: annotation(pod, contract::EXPECTED_CACHE).map(str::to_string),
        cache: annotation(pod, contract::CACHE).map(str::to_string),
    })
}

/// The row for `pod`: `None` while its build is still running; `Err` when it ended but cannot
/// be described (the reason says which field is missing). `node_type` is the instance type of
/// the node it ran on, when known.
pub fn run_from_pod(pod: &Pod, node_type: Option<&str>) -> Option<Result<RunRecord, String>> {
    let spec = pod.spec.as_ref()?;
    let container_name = annotation(pod, contract::CONTAINER)
        .map(str::to_string)
        .or_else(|| spec.containers.first().map(|c| c.name.clone()))?;
    let (term, restarts) = terminated(pod, &container_name)?;
    Some(describe(pod, &container_name, term, restarts, node_type))
}

fn describe(
    pod: &Pod,
    container_name: &str,
    term: &ContainerStateTerminated,
    restarts: u32,
    node_type: Option<&str>,
) -> Result<RunRecord, String> {
    let uid = pod.metadata.uid.as_deref().ok_or("pod has no uid")?;
    let pipeline = annotation(pod, contract::PIPELINE)
        .ok_or_else(|| format!("pod has no {} annotation", contract::PIPELINE))?;
    let spec = pod.spec.as_ref().ok_or("pod has no spec")?;
    let container = spec
        .containers
        .iter()
        .find(|c| c.name == container_name)
        .ok_or_else(|| format!("container {container_name} is not in the pod"))?;
    let requests = container
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .ok_or_else(|| format!("container {container_name} has no resource requests"))?;
    let cpu_req = requests
        .get("cpu")
        .and_then(|q| parse_cpu(&q.0))
        .ok_or("cpu request missing or unreadable")?;
    let mem_req_gb = requests
        .get("memory")
        .and_then(|q| parse_mem_gb(&q.0))
        .ok_or("memory request missing or unreadable")?;
    let started: DateTime<Utc> = term
        .started_at
        .as_ref()
        .map(crate::kube_time::chrono_time)
        .ok_or("build container has no start time")?;
    let finished: DateTime<Utc> = term
        .finished_at
        .as_ref()
        .map(crate::kube_time::chrono_time)
        .ok_or("build container has no finish time")?;
    let duration_s = (finished - started).num_milliseconds() as f64 / 1000.0;
    if duration_s < 0.0 {
        return Err(format!(
            "build container finished before it started ({duration_s}s)"
        ));
    }
    Ok(RunRecord {
        run_id: run_id(uid),
        pipeline: pipeline.to_string(),
        branch: annotation(pod, contract::BRANCH)
            .unwrap_or(UNKNOWN)
            .to_string(),
        image: annotation(pod, contract::IMAGE)
            .map(str::to_string)
            .or_else(|| container.image.clone())
            .unwrap_or_else(|| UNKNOWN.to_string()),
        // What admission knew (the pod's request, recorded by the webhook), not where the build
        // landed: a model trained on the real instance type is asked about `unknown` at
        // admission. The real type only stands in for a pod admitted without the annotation.
        node: annotation(pod, contract::NODE_TYPE)
            .or(node_type)
            .unwrap_or(UNKNOWN)
            .to_string(),
        cpu_req,
        mem_req_gb,
        concurrency: container
            .env
            .as_deref()
            .and_then(concurrency)
            .unwrap_or(1)
            .max(1),
        max_rss_gb: None,
        io_read_gb: None,
        io_write_gb: None,
        cache_hit_ratio: None,
        num_steps: None,
        avg_step_duration_s: None,
        duration_s,
        success: term.exit_code == 0,
        retry_count: restarts,
        oom_killed: term.reason.as_deref() == Some("OOMKilled"),
        started_at: started,
        decision: decision_tag(pod),
        predicted_duration_s: annotation(pod, contract::PREDICTED_DURATION)
            .and_then(|p| p.parse::<f64>().ok())
            .filter(|p| p.is_finite() && *p >= 0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn finished_pod(exit_code: i32, reason: &str, restarts: i32) -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "runner-abc", "namespace": "ci", "uid": "7f1c-42",
                "labels": {"inframind.io/managed": "true"},
                "annotations": {"inframind.io/pipeline": "acme/api", "inframind.io/branch": "main", "inframind.io/container": "build",
                                "inframind.io/image": "rust:1.82", "inframind.io/node-type": "unknown", "inframind.io/decision": "applied"}},
            "spec": {"nodeName": "ip-10-0-0-1", "containers": [
                {"name": "helper", "image": "helper"},
                {"name": "build", "image": "rust:1.82", "resources": {"requests": {"cpu": "6", "memory": "12800Mi"}},
                 "env": [{"name": "MAKEFLAGS", "value": "-k -j6"}, {"name": "INFRAMIND_CONCURRENCY", "value": "6"}]}]},
            "status": {"phase": if exit_code == 0 { "Succeeded" } else { "Failed" }, "containerStatuses": [
                {"name": "helper", "ready": false, "restartCount": 0, "image": "helper", "imageID": "", "state": {"running": {"startedAt": "2026-11-27T10:00:00Z"}}},
                {"name": "build", "ready": false, "restartCount": restarts, "image": "rust:1.82", "imageID": "",
                 "state": {"terminated": {"exitCode": exit_code, "reason": reason, "startedAt": "2026-11-27T10:00:05Z", "finishedAt": "2026-11-27T10:05:17Z"}}}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_finished_build_becomes_a_row() {
        let run = run_from_pod(&finished_pod(0, "Completed", 0), Some("m5.2xlarge"))
            .unwrap()
            .unwrap();
        assert_eq!(run.run_id, "pod-7f1c-42");
        assert_eq!(
            (
                run.pipeline.as_str(),
                run.branch.as_str(),
                run.image.as_str(),
                run.node.as_str()
            ),
            // The pod asked for no node type: where it ran (m5.2xlarge) is not what admission knew.
            ("acme/api", "main", "rust:1.82", "unknown")
        );
        assert_eq!(
            (run.cpu_req, run.mem_req_gb, run.concurrency),
            (6.0, 12.5, 6)
        );
        assert_eq!(run.duration_s, 312.0);
        assert!(run.success && !run.oom_killed);
        assert_eq!(run.started_at.to_rfc3339(), "2026-11-27T10:00:05+00:00");
        assert_eq!(run.decision, Some(DecisionTag::Applied));
        assert_eq!(run.predicted_duration_s, None);
        // The row passes the same validation as any ingested row.
        crate::record::validate_row(&crate::record::to_raw_row(&run), Utc::now()).unwrap();
    }

    #[test]
    fn holdout_and_explored_builds_are_tagged_with_their_prediction() {
        let mut pod = finished_pod(0, "Completed", 0);
        let notes = pod.metadata.annotations.as_mut().unwrap();
        notes.insert(contract::DECISION_ANNOTATION.into(), "holdout".into());
        notes.insert(contract::PREDICTED_DURATION.into(), "281".into());
        let run = run_from_pod(&pod, None).unwrap().unwrap();
        assert_eq!(
            (run.decision, run.predicted_duration_s),
            (Some(DecisionTag::Holdout), Some(281.0))
        );
        let notes = pod.metadata.annotations.as_mut().unwrap();
        notes.insert(contract::DECISION_ANNOTATION.into(), "applied".into());
        notes.insert(contract::EXPLORED.into(), "true".into());
        notes.insert(contract::PREDICTED_DURATION.into(), "".into());
        let run = run_from_pod(&pod, None).unwrap().unwrap();
        assert_eq!(
            (run.decision, run.predicted_duration_s),
            (Some(DecisionTag::Explored), None)
        );
    }

    #[test]
    fn oom_kills_and_restarts_are_recorded_as_failures() {
        let run = run_from_pod(&finished_pod(137, "OOMKilled", 2), None)
            .unwrap()
            .unwrap();
        assert!(!run.success && run.oom_killed);
        assert_eq!(run.retry_count, 2);
        assert_eq!(run.node, "unknown");
    }

    #[test]
    fn running_pods_wait_and_undescribable_ones_say_why() {
        let mut running = finished_pod(0, "Completed", 0);
        running
            .status
            .as_mut()
            .unwrap()
            .container_statuses
            .as_mut()
            .unwrap()[1]
            .state = Some(Default::default());
        assert!(run_from_pod(&running, None).is_none());
        let mut anonymous = finished_pod(0, "Completed", 0);
        anonymous
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove("inframind.io/pipeline");
        assert!(run_from_pod(&anonymous, None)
            .unwrap()
            .unwrap_err()
            .contains("inframind.io/pipeline"));
        let mut no_requests = finished_pod(0, "Completed", 0);
        no_requests.spec.as_mut().unwrap().containers[1].resources = None;
        assert!(run_from_pod(&no_requests, None)
            .unwrap()
            .unwrap_err()
            .contains("no resource requests"));
    }
}
