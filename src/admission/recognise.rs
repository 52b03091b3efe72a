//! Recognising a build pod: which pipeline, branch, image and node type, and which container
//! is the build, from the labels and annotations common CI systems put on their pods.
//!
//! Keys, in order of precedence (the first present wins):
//!
//! | what | keys |
//! |---|---|
//! | pipeline | `inframind.io/pipeline` (label or annotation); GitLab Runner: the project path from annotation `job.runner.gitlab.com/url`, else labels `project.runner.gitlab.com/namespace` + `/name`; Tekton: Pipelines-as-Code `pipelinesascode.tekton.dev/url-repository`, labels `tekton.dev/pipeline`, `tekton.dev/task`; Buildkite agent-stack-k8s: annotations `buildkite.com/pipeline-slug`, `buildkite.com/build-repo`; GitHub ARC: labels `actions.github.com/repository` (with `actions.github.com/organization`), `actions.github.com/scale-set-name`; Jenkins Kubernetes plugin: the job path in annotation `runUrl`/`buildUrl`, label `jenkins/label`; else the pod's `generateName` or first owner's name, with random suffixes removed |
//! | branch | `inframind.io/branch`; `job.runner.gitlab.com/ref`; `buildkite.com/build-branch`; `pipelinesascode.tekton.dev/branch`; the last `job/` segment of a Jenkins multibranch `runUrl`; else `unknown` |
//! | image | `inframind.io/image`; else the build container's image |
//! | node type | `inframind.io/node-type`; else the pod's nodeSelector `node.kubernetes.io/instance-type` (or the beta key); else `unknown` |
//! | container | annotation `inframind.io/container`; else the first container that is not a known sidecar |

use serde_json::Value;

use super::contract;
use crate::BuildContext;

/// Annotation naming the build container explicitly.
pub const CONTAINER_ANNOTATION: &str = contract::CONTAINER;

/// Containers that are never the build: service meshes, CI helpers and agents.
pub const KNOWN_SIDECARS: &[&str] = &[
    "istio-proxy",
    "linkerd-proxy",
    "envoy",
    "envoy-sidecar",
    "helper",
    "jnlp",
    "agent",
    "checkout",
    "dind",
    "docker",
    "docker-daemon",
    "vault-agent",
    "cloud-sql-proxy",
    "cloudsql-proxy",
    "fluent-bit",
];

fn is_sidecar(name: &str) -> bool {
    KNOWN_SIDECARS.contains(&name) || name.starts_with("svc-") || name.starts_with("sidecar-")
}

/// Reads a pod's metadata string maps.
pub struct PodMeta<'a> {
    labels: Option<&'a serde_json::Map<String, Value>>,
    annotations: Option<&'a serde_json::Map<String, Value>>,
    pod: &'a Value,
}

impl<'a> PodMeta<'a> {
    /// Views `pod`'s labels and annotations.
    pub fn new(pod: &'a Value) -> PodMeta<'a> {
        PodMeta {
            labels: pod.pointer("/metadata/labels").and_then(Value::as_object),
            annotations: pod
                .pointer("/metadata/annotations")
                .and_then(Value::as_object),
            pod,
        }
    }

    /// A label's value, if present and non-empty.
    pub fn label(&self, key: &str) -> Option<&'a str> {
        self.labels
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// An annotation's value, if present and non-empty.
    pub fn annotation(&self, key: &str) -> Option<&'a str> {
        self.annotations
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// Annotation or label.
    pub fn either(&self, key: &str) -> Option<&'a str> {
        self.annotation(key).or_else(|| self.label(key))
    }

    /// Whether an annotation is "true".
    pub fn flag(&self, key: &str) -> bool {
        self.annotation(key)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

/// `group/sub/project` from a GitLab job URL like `https://host/group/sub/project/-/jobs/42`.
fn gitlab_project(url: &str) -> Option<String> {
    let path = url.split("://").nth(1).unwrap_or(url);
    let path = path.split_once('/').map(|(_, p)| p)?;
    let project = path.split("/-/").next()?.trim_matches('/');
    (!project.is_empty()).then(|| project.to_string())
}

/// `owner/repo` from a repository URL (`https://github.com/owner/repo(.git)`).
fn repo_from_url(url: &str) -> Option<String> {
    let path = url.split("://").nth(1).unwrap_or(url);
    let path = path.split_once('/').map(|(_, p)| p).unwrap_or(path);
    let repo = path.trim_end_matches('/').trim_end_matches(".git");
    (!repo.is_empty()).then(|| repo.to_string())
}

/// Jenkins `job/a/job/b/job/main/42/` → (`a/b/main` path parts).
fn jenkins_jobs(run_url: &str) -> Vec<&str> {
    let parts: Vec<&str> = run_url.split('/').filter(|s| !s.is_empty()).collect();
    parts
        .windows(2)
        .filter(|w| w[0] == "job")
        .map(|w| w[1])
        .collect()
}

/// Whether a name segment looks generated (a number or a random suffix with a digit).
fn is_generated(seg: &str) -> bool {
    !seg.is_empty()
        && (seg.chars().all(|c| c.is_ascii_digit())
            || (seg.len() >= 4
                && seg.len() <= 10
                && seg
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && seg.chars().any(|c| c.is_ascii_digit())))
}

/// A stable name from a generated one: `build-myapp-7f9c2-x8k2p` → `build-myapp`.
pub fn stable_name(name: &str) -> String {
    let mut segs: Vec<&str> = name.trim_end_matches('-').split('-').collect();
    while segs.len() > 1 && segs.last().is_some_and(|s| is_generated(s)) {
        segs.pop();
    }
    segs.join("-")
}

fn pipeline(meta: &PodMeta<'_>) -> Option<String> {
    if let Some(p) = meta.either(contract::PIPELINE) {
        return Some(p.to_string());
    }
    if let Some(p) = meta
        .annotation("job.runner.gitlab.com/url")
        .and_then(gitlab_project)
    {
        return Some(p);
    }
    if let (Some(ns), Some(name)) = (
        meta.label("project.runner.gitlab.com/namespace"),
        meta.label("project.runner.gitlab.com/name"),
    ) {
        return Some(format!("{ns}/{name}"));
    }
    if let Some(p) = meta
        .annotation("pipelinesascode.tekton.dev/url-repository")
        .and_then(repo_from_url)
    {
        return Some(p);
    }
    if let Some(p) = meta
        .label("tekton.dev/pipeline")
        .or_else(|| meta.label("tekton.dev/task"))
    {
        return Some(p.to_string());
    }
    if let Some(p) = meta.either("buildkite.com/pipeline-slug") {
        return Some(p.to_string());
    }
    if let Some(p) = meta
        .annotation("buildkite.com/build-repo")
        .and_then(repo_from_url)
    {
        return Some(p);
    }
    if let Some(repo) = meta.label("actions.github.com/repository") {
        return Some(match meta.label("actions.github.com/organization") {
            Some(org) => format!("{org}/{repo}"),
            None => repo.to_string(),
        });
    }
    if let Some(p) = meta.label("actions.github.com/scale-set-name") {
        return Some(p.to_string());
    }
    if let Some(url) = meta
        .annotation("runUrl")
        .or_else(|| meta.annotation("buildUrl"))
    {
        let jobs = jenkins_jobs(url);
        // Multibranch: the last job segment is the branch; the rest is the pipeline.
        match jobs.len() {
            0 => {}
            1 => return Some(jobs[0].to_string()),
            n => return Some(jobs[..n - 1].join("/")),
        }
    }
    if let Some(p) = meta.label("jenkins/label") {
        return Some(stable_name(p));
    }
    if let Some(g) = meta
        .pod
        .pointer("/metadata/generateName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        return Some(stable_name(g));
    }
    meta.pod
        .pointer("/metadata/ownerReferences/0/name")
        .and_then(Value::as_str)
        .map(stable_name)
        .filter(|s| !s.is_empty())
}

fn branch(meta: &PodMeta<'_>) -> Option<String> {
    let direct = meta
        .either(contract::BRANCH)
        .or_else(|| meta.annotation("job.runner.gitlab.com/ref"))
        .or_else(|| meta.either("buildkite.com/build-branch"))
        .or_else(|| meta.annotation("pipelinesascode.tekton.dev/branch"));
    if let Some(b) = direct {
        return Some(b.trim_start_matches("refs/heads/").to_string());
    }
    let url = meta
        .annotation("runUrl")
        .or_else(|| meta.annotation("buildUrl"))?;
    let jobs = jenkins_jobs(url);
    (jobs.len() > 1).then(|| jobs[jobs.len() - 1].replace("%2F", "/"))
}

/// Index of the build container in `spec.containers`.
pub fn build_container(pod: &Value) -> Option<usize> {
    let containers = pod.pointer("/spec/containers")?.as_array()?;
    let meta = PodMeta::new(pod);
    fn name_of(c: &Value) -> &str {
        c.get("name").and_then(Value::as_str).unwrap_or("")
    }
    // Only a container that is an object can be patched (fuzzed pods carry numbers and strings).
    if let Some(wanted) = meta.annotation(CONTAINER_ANNOTATION) {
        return containers
            .iter()
            .position(|c| c.is_object() && name_of(c) == wanted);
    }
    containers
        .iter()
        .position(|c| c.is_object() && !is_sidecar(name_of(c)))
}

/// The build context of a pod whose build container is at `container`; `None` without a pipeline.
pub fn context(pod: &Value, container: usize) -> Option<BuildContext> {
    let meta = PodMeta::new(pod);
    let pipeline = pipeline(&meta)?;
    let image = meta
        .either(contract::IMAGE)
        .map(str::to_string)
        .or_else(|| {
            pod.pointer(&format!("/spec/containers/{container}/image"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| crate::record::UNKNOWN.to_string());
    let node = meta
        .either(contract::NODE_TYPE)
        .or_else(|| {
            pod.pointer("/spec/nodeSelector/node.kubernetes.io~1instance-type")
                .and_then(Value::as_str)
        })
        .or_else(|| {
            pod.pointer("/spec/nodeSelector/beta.kubernetes.io~1instance-type")
                .and_then(Value::as_str)
        })
        .unwrap_or(crate::record::UNKNOWN)
        .to_string();
    Some(BuildContext {
        pipeline,
        branch: branch(&meta).unwrap_or_else(|| crate::record::UNKNOWN.to_string()),
        image,
        node,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value, annotations: Value, containers: Value) -> Value {
        json!({"metadata": {"labels": labels, "annotations": annotations, "generateName": "x-"}, "spec": {"containers": containers}})
    }

    fn ctx(p: &Value) -> BuildContext {
        context(p, build_container(p).unwrap()).unwrap()
    }

    #[test]
    fn gitlab_runner_pods() {
        let p = pod(
            json!({"project.runner.gitlab.com/name": "api", "project.runner.gitlab.com/namespace": "acme"}),
            json!({"job.runner.gitlab.com/url": "https://gitlab.example.com/acme/platform/api/-/jobs/42", "job.runner.gitlab.com/ref": "feature/x"}),
            json!([{"name": "helper", "image": "gitlab-runner-helper"}, {"name": "build", "image": "rust:1.82"}, {"name": "svc-0", "image": "postgres"}]),
        );
        assert_eq!(build_container(&p), Some(1));
        let c = ctx(&p);
        assert_eq!(
            (c.pipeline.as_str(), c.branch.as_str(), c.image.as_str()),
            ("acme/platform/api", "feature/x", "rust:1.82")
        );
    }

    #[test]
    fn tekton_buildkite_arc_and_jenkins_pods() {
        let tekton = pod(
            json!({"tekton.dev/pipeline": "build-api", "tekton.dev/taskRun": "build-api-run-x7"}),
            json!({"pipelinesascode.tekton.dev/branch": "main"}),
            json!([{"name": "step-compile", "image": "golang:1.23"}]),
        );
        assert_eq!(
            (ctx(&tekton).pipeline, ctx(&tekton).branch),
            ("build-api".to_string(), "main".to_string())
        );

        let bk = pod(
            json!({}),
            json!({"buildkite.com/pipeline-slug": "acme-web", "buildkite.com/build-branch": "pr-12"}),
            json!([{"name": "agent"}, {"name": "checkout"}, {"name": "container-0", "image": "node:22"}]),
        );
        assert_eq!(build_container(&bk), Some(2));
        assert_eq!(
            (ctx(&bk).pipeline, ctx(&bk).branch, ctx(&bk).image),
            ("acme-web".into(), "pr-12".into(), "node:22".into())
        );

        let arc = pod(
            json!({"actions.github.com/scale-set-name": "acme-linux", "actions.github.com/organization": "acme", "actions.github.com/repository": "engine"}),
            json!({}),
            json!([{"name": "runner", "image": "ghcr.io/actions/runner"}]),
        );
        assert_eq!(ctx(&arc).pipeline, "acme/engine");
        assert_eq!(ctx(&arc).branch, "unknown");

        let jenkins = pod(
            json!({"jenkins/label": "build-pod-abc12"}),
            json!({"runUrl": "job/platform/job/api/job/PR-7/15/"}),
            json!([{"name": "jnlp"}, {"name": "maven", "image": "maven:3"}]),
        );
        assert_eq!(
            (ctx(&jenkins).pipeline, ctx(&jenkins).branch),
            ("platform/api".into(), "PR-7".into())
        );
    }

    #[test]
    fn explicit_keys_win_and_fallbacks_are_stable() {
        let p = pod(
            json!({"inframind.io/pipeline": "mine", "tekton.dev/pipeline": "theirs"}),
            json!({"inframind.io/container": "second", "inframind.io/node-type": "c6i.4xlarge"}),
            json!([{"name": "first"}, {"name": "second", "image": "i"}]),
        );
        assert_eq!(build_container(&p), Some(1));
        let c = ctx(&p);
        assert_eq!(
            (c.pipeline.as_str(), c.node.as_str()),
            ("mine", "c6i.4xlarge")
        );

        let bare = json!({"metadata": {"generateName": "build-myapp-7f9c2-"}, "spec": {"containers": [{"name": "c", "image": "x"}], "nodeSelector": {"node.kubernetes.io/instance-type": "m5.2xlarge"}}});
        let c = ctx(&bare);
        assert_eq!(
            (c.pipeline.as_str(), c.node.as_str()),
            ("build-myapp", "m5.2xlarge")
        );
        assert_eq!(stable_name("nightly-28841234"), "nightly");
        assert_eq!(stable_name("api-build"), "api-build");

        let owned = json!({"metadata": {"ownerReferences": [{"kind": "Job", "name": "compile-42"}]}, "spec": {"containers": [{"name": "c"}]}});
        assert_eq!(ctx(&owned).pipeline, "compile");
        let anonymous = json!({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "c"}]}});
        assert!(context(&anonymous, 0).is_none());
        let named_missing = pod(
            json!({}),
            json!({"inframind.io/container": "nope"}),
            json!([{"name": "a"}]),
        );
        assert_eq!(build_container(&named_missing), None);
    }
}
