//! Recognising a build pod: which pipeline, branch, image and node type, and which container
//! is the build, from what each CI system puts on the pods it creates.
//!
//! # Recognition table
//!
//! Each row cites the CI system's source file that builds the pod (paths in the upstream
//! repository). "ns:" marks identifiers that are only unique inside a namespace: the pipeline
//! identity is then `<namespace>:<name>`, so two teams' `build` pipelines never share history;
//! globally unique identifiers (a GitLab project path, a repository URL) stay as they are.
//!
//! | CI system (source) | pipeline | branch | helpers (never resized) | build container |
//! |---|---|---|---|---|
//! | GitLab Runner, Kubernetes executor (`gitlab-org/gitlab-runner` `executors/kubernetes/kubernetes.go`) | project path from annotation `job.runner.gitlab.com/url`, else labels `project.runner.gitlab.com/namespace`+`/name`, else env `CI_PROJECT_PATH` | annotation `job.runner.gitlab.com/ref`, else env `CI_COMMIT_REF_NAME` | `helper`, `svc-N` services, init `init-permissions` | `build` |
//! | GitHub ARC runner pods (`actions/actions-runner-controller` `controllers/actions.github.com/resourcebuilder.go`) | `actions.github.com/organization`/`repository` labels, else ns:`actions.github.com/scale-set-name` | env `GITHUB_HEAD_REF`/`GITHUB_REF_NAME` when present | `dind`, init `init-dind-externals` | `runner` |
//! | GitHub ARC container-hook workflow pods (`actions/runner-container-hooks` `packages/k8s/src/hooks/prepare-job.ts`, `constants.ts`: name `<runner-pod>-workflow`, label `runner-pod`, container `job`) | env `GITHUB_REPOSITORY` when present, else ns:repository name from workingDir `/__w/<repo>/<repo>` | env `GITHUB_HEAD_REF`/`GITHUB_REF_NAME` when present | service containers | `job` |
//! | Tekton TaskRun pods (`tektoncd/pipeline` `pkg/pod/pod.go`: containers `step-<name>`, `sidecar-<name>`, init `prepare`/`place-scripts`) | repository of Pipelines-as-Code annotation `pipelinesascode.tekton.dev/url-repository`, else ns:`tekton.dev/pipeline` (or `tekton.dev/task`) + `/`+`tekton.dev/pipelineTask` | `pipelinesascode.tekton.dev/branch` | `sidecar-*`; steps that only fetch or ship: clone, git-init, fetch, checkout, upload, prepare, push, publish, report, notify, cache | the build step (largest requests, else a build image or a build-like name, else the first non-helper step) |
//! | Jenkins Kubernetes plugin (`jenkinsci/kubernetes-plugin` `src/main/java/org/csanchez/jenkins/plugins/kubernetes/PodTemplateBuilder.java`: `jnlp`, `jenkins/label`; `…/kubernetes/pipeline/PodTemplateStepExecution.java`: `buildUrl`/`runUrl` annotations of `podTemplate` pods) | job path from annotation `runUrl`/`buildUrl` (multibranch: without the branch), else ns:`jenkins/label` | last `job/` segment of a multibranch `runUrl` | `jnlp` agent | largest requests among the others, else the first |
//! | Buildkite agent-stack-k8s (`buildkite/agent-stack-k8s` `internal/controller/scheduler/scheduler.go`, `internal/controller/config/config.go`) | annotation `buildkite.com/pipeline-slug`, else `buildkite.com/build-repo` | `buildkite.com/build-branch`, else env `BUILDKITE_BRANCH` | `agent`, `checkout`, `sidecar-N` | `container-N` (largest requests when several) |
//! | Argo Workflows (`argoproj/argo-workflows` `workflow/controller/workflowpod.go`) | ns:label `workflows.argoproj.io/workflow` without its generated suffix, + `/` + the step of annotation `workflows.argoproj.io/node-name` | — | `wait`, init `init` | `main` |
//! | Woodpecker Kubernetes backend (`woodpecker-ci/woodpecker` `pipeline/backend/kubernetes/pod.go`: pod `wp-<uuid>`, label `step`, one container) | env `CI_REPO` + `/` + label `step` | env `CI_COMMIT_SOURCE_BRANCH` (pull requests), else `CI_COMMIT_BRANCH` | service pods (label `service`) are not builds | its one container |
//! | Plain Jobs and bare pods | label or annotation `inframind.io/pipeline` (taken as given), else ns:`generateName` or first owner's name without generated suffixes | `inframind.io/branch` | known sidecars (below) | by evidence (below) |
//!
//! Image: `inframind.io/image`, else the build container's image. Node type:
//! `inframind.io/node-type`, else nodeSelector `node.kubernetes.io/instance-type` (or the beta
//! key), else `unknown`. Every recognised string is capped at `MAX_RECOGNISED_LEN` bytes (longer ones keep their head
//! and end in a hash of the whole), so the decision cache, the annotations and the reporter's
//! environment carry at most that much per string; other copied values are capped by
//! `admission::capped`.
//!
//! # Choosing the build container, by evidence
//!
//! 1. the annotation `inframind.io/container` (a missing name admits the pod unchanged);
//! 2. the CI system's own build container (table above);
//! 3. among containers that are not helpers: the only one; else the one with the largest
//!    requests (cpu, then memory); else one running a build image; else the first.
//!
//! Helpers are never chosen. How the choice was made is written to `inframind.io/container-choice`.
//! Only the chosen container changes. The scheduler sums the requests of a pod's regular
//! containers, and Tekton steps are regular containers run one after another: the other steps
//! keep their own (usually small) requests, so the pod's total is the build step's new request
//! plus theirs, which is what the namespace's quota and LimitRange (Pod) see.

use serde_json::Value;

use super::contract;
use super::quantity::{parse_cpu, parse_mem_gb};
use crate::BuildContext;

/// Longest recognised string kept as is, bytes.
pub const MAX_RECOGNISED_LEN: usize = 128;

/// `s` within `MAX_RECOGNISED_LEN`: as is when short enough; else its head, `~`, and the first
/// 16 hex digits of the SHA-256 of the whole (distinct long names stay distinct, stably).
pub fn bounded(s: String) -> String {
    if s.len() <= MAX_RECOGNISED_LEN {
        return s;
    }
    contract::cap_bytes(&s, MAX_RECOGNISED_LEN)
}

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
    "wait",
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

/// Tekton steps that fetch sources or ship results rather than build.
const TEKTON_HELPER_STEPS: &[&str] = &[
    "clone", "git-init", "git", "fetch", "checkout", "upload", "prepare", "push", "publish",
    "report", "notify", "cache",
];

fn is_tekton_helper_step(step: &str) -> bool {
    TEKTON_HELPER_STEPS.iter().any(|h| {
        step == *h || step.starts_with(&format!("{h}-")) || step.ends_with(&format!("-{h}"))
    })
}

/// Images whose presence says "this container compiles".
const BUILD_IMAGES: &[&str] = &[
    "gcc",
    "clang",
    "llvm",
    "rust",
    "golang",
    "maven",
    "gradle",
    "openjdk",
    "eclipse-temurin",
    "node",
    "python",
    "bazel",
    "buildpack-deps",
    "cmake",
    "kaniko",
    "buildkit",
    "dotnet",
    "swift",
];

fn is_build_image(image: &str) -> bool {
    let repo = image.rsplit('/').next().unwrap_or(image);
    let repo = repo.split([':', '@']).next().unwrap_or(repo);
    BUILD_IMAGES
        .iter()
        .any(|b| repo == *b || repo.starts_with(&format!("{b}-")))
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

/// The CI system that created a pod, from the marks it leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CiSystem {
    /// GitLab Runner's Kubernetes executor.
    GitLab,
    /// A GitHub ARC runner pod.
    ArcRunner,
    /// A pod created by ARC's container hooks for a job (`<runner-pod>-workflow`).
    ArcWorkflow,
    /// A Tekton TaskRun pod.
    Tekton,
    /// The Jenkins Kubernetes plugin.
    Jenkins,
    /// Buildkite's agent-stack-k8s.
    Buildkite,
    /// Argo Workflows.
    Argo,
    /// Woodpecker's Kubernetes backend.
    Woodpecker,
    /// A Job or bare pod.
    Plain,
}

impl CiSystem {
    /// Short name for annotations.
    pub fn as_str(self) -> &'static str {
        match self {
            CiSystem::GitLab => "gitlab",
            CiSystem::ArcRunner => "github-arc",
            CiSystem::ArcWorkflow => "github-arc-workflow",
            CiSystem::Tekton => "tekton",
            CiSystem::Jenkins => "jenkins",
            CiSystem::Buildkite => "buildkite",
            CiSystem::Argo => "argo",
            CiSystem::Woodpecker => "woodpecker",
            CiSystem::Plain => "plain",
        }
    }
}

fn containers(pod: &Value) -> &[Value] {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn name_of(c: &Value) -> &str {
    c.get("name").and_then(Value::as_str).unwrap_or("")
}

fn has_container(pod: &Value, name: &str) -> bool {
    containers(pod).iter().any(|c| name_of(c) == name)
}

/// Which CI system created `pod`.
pub fn ci_system(pod: &Value) -> CiSystem {
    let meta = PodMeta::new(pod);
    let has_prefix = |prefix: &str| {
        [meta.labels, meta.annotations]
            .iter()
            .flatten()
            .any(|m| m.keys().any(|k| k.starts_with(prefix)))
    };
    if has_prefix("job.runner.gitlab.com/") || has_prefix("project.runner.gitlab.com/") {
        CiSystem::GitLab
    } else if meta.label("runner-pod").is_some() && has_container(pod, "job") {
        CiSystem::ArcWorkflow
    } else if has_prefix("actions.github.com/") {
        CiSystem::ArcRunner
    } else if meta.label("tekton.dev/taskRun").is_some() || meta.label("tekton.dev/task").is_some()
    {
        CiSystem::Tekton
    } else if has_prefix("buildkite.com/") {
        CiSystem::Buildkite
    } else if meta.label("workflows.argoproj.io/workflow").is_some() {
        CiSystem::Argo
    } else if meta.label("jenkins/label").is_some()
        || meta.annotation("runUrl").is_some()
        || meta.annotation("buildUrl").is_some()
    {
        CiSystem::Jenkins
    } else if meta.label("step").is_some()
        && (pod
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .is_some_and(|n| n.starts_with("wp-"))
            || env_in(containers(pod).first(), "CI") == Some("woodpecker"))
    {
        CiSystem::Woodpecker
    } else {
        CiSystem::Plain
    }
}

/// A literal env value of container `c`.
fn env_in<'a>(c: Option<&'a Value>, name: &str) -> Option<&'a str> {
    c?.get("env")?
        .as_array()?
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))?
        .get("value")?
        .as_str()
        .filter(|v| !v.is_empty())
}

/// The chosen build container and how it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    /// Index in `spec.containers`.
    pub index: usize,
    /// How it was chosen (the `inframind.io/container-choice` annotation).
    pub how: String,
}

/// (cpu cores, memory GiB) requested by a container (a limit alone counts as the request).
fn requested(c: &Value) -> (f64, f64) {
    let read = |key: &str, parse: fn(&str) -> Option<f64>| {
        ["requests", "limits"].iter().find_map(|m| {
            c.pointer(&format!("/resources/{m}/{key}"))
                .and_then(Value::as_str)
                .and_then(parse)
        })
    };
    (
        read("cpu", parse_cpu).unwrap_or(0.0),
        read("memory", parse_mem_gb).unwrap_or(0.0),
    )
}

/// Among `candidates` (indices), the one the evidence points at, and why.
fn by_evidence(all: &[Value], candidates: &[usize], what: &str) -> Option<Chosen> {
    let chosen = |index: usize, why: &str| {
        Some(Chosen {
            index,
            how: format!("{why} ({what})"),
        })
    };
    match candidates {
        [] => None,
        [only] => chosen(*only, "the only candidate"),
        _ => {
            let largest = candidates.iter().copied().max_by(|&a, &b| {
                let (ra, rb) = (requested(&all[a]), requested(&all[b]));
                ra.0.total_cmp(&rb.0)
                    .then(ra.1.total_cmp(&rb.1))
                    // Ties go to the earlier container.
                    .then(b.cmp(&a))
            })?;
            if requested(&all[largest]) != (0.0, 0.0) {
                return chosen(largest, "largest requests");
            }
            if let Some(i) = candidates.iter().copied().find(|&i| {
                all[i]
                    .get("image")
                    .and_then(Value::as_str)
                    .is_some_and(is_build_image)
            }) {
                return chosen(i, "build image");
            }
            chosen(candidates[0], "first candidate")
        }
    }
}

/// The build container of `pod`, chosen by evidence (see the module docs); `None` when every
/// container is a helper or the named one is missing.
pub fn choose_container(pod: &Value) -> Option<Chosen> {
    let all = containers(pod);
    let meta = PodMeta::new(pod);
    if let Some(wanted) = meta.annotation(CONTAINER_ANNOTATION) {
        return all
            .iter()
            .position(|c| c.is_object() && name_of(c) == wanted)
            .map(|index| Chosen {
                index,
                how: "annotation inframind.io/container".into(),
            });
    }
    let ci = ci_system(pod);
    let named = |name: &str| {
        all.iter()
            .position(|c| c.is_object() && name_of(c) == name)
            .map(|index| Chosen {
                index,
                how: format!("{}: the {name} container", ci.as_str()),
            })
    };
    let where_name = |keep: &dyn Fn(&str) -> bool| -> Vec<usize> {
        // Only a container that is an object can be patched (fuzzed pods carry other values).
        (0..all.len())
            .filter(|&i| all[i].is_object() && keep(name_of(&all[i])))
            .collect()
    };
    let system = match ci {
        CiSystem::GitLab => named("build"),
        CiSystem::ArcWorkflow => named("job"),
        CiSystem::ArcRunner => named("runner"),
        CiSystem::Argo => named("main"),
        CiSystem::Tekton => {
            let steps = where_name(&|n| {
                n.strip_prefix("step-")
                    .is_some_and(|step| !is_tekton_helper_step(step))
            });
            // Without requests, a step named like a build beats the first one.
            let build_named = steps.iter().copied().find(|&i| {
                let n = name_of(&all[i]);
                ["build", "compile", "make", "test"]
                    .iter()
                    .any(|w| n.contains(w))
            });
            let chosen = by_evidence(all, &steps, "tekton build step")?;
            return Some(match (chosen.how.starts_with("first"), build_named) {
                (true, Some(i)) => Chosen {
                    index: i,
                    how: "build-like step name (tekton build step)".into(),
                },
                _ => chosen,
            });
        }
        CiSystem::Buildkite => {
            let commands = where_name(&|n| n.starts_with("container-"));
            by_evidence(all, &commands, "buildkite command container")
        }
        CiSystem::Jenkins | CiSystem::Woodpecker | CiSystem::Plain => None,
    };
    if system.is_some() {
        return system;
    }
    let others = where_name(&|n| !is_sidecar(n));
    by_evidence(all, &others, "containers that are not helpers")
}

/// Index of the build container in `spec.containers`.
pub fn build_container(pod: &Value) -> Option<usize> {
    choose_container(pod).map(|c| c.index)
}

/// `<namespace>:<name>`: identity of an identifier that is unique only inside a namespace.
fn scoped(namespace: &str, name: &str) -> String {
    format!("{namespace}:{name}")
}

/// The repository name ARC's container hooks put in the job's workingDir `/__w/<repo>/<repo>`.
fn arc_repo_from_workdir(dir: &str) -> Option<&str> {
    let mut parts = dir.strip_prefix("/__w/")?.split('/');
    let repo = parts.next().filter(|r| !r.is_empty())?;
    Some(repo)
}

fn pipeline(meta: &PodMeta<'_>, container: Option<&Value>, ns: &str) -> Option<String> {
    let pod = meta.pod;
    if let Some(p) = meta.either(contract::PIPELINE) {
        return Some(p.to_string());
    }
    if let Some(p) = meta
        .annotation("job.runner.gitlab.com/url")
        .and_then(gitlab_project)
    {
        return Some(p);
    }
    if let (Some(group), Some(name)) = (
        meta.label("project.runner.gitlab.com/namespace"),
        meta.label("project.runner.gitlab.com/name"),
    ) {
        return Some(format!("{group}/{name}"));
    }
    if let Some(p) = env_in(container, "CI_PROJECT_PATH") {
        return Some(p.to_string());
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
        return Some(scoped(
            ns,
            &match meta.label("tekton.dev/pipelineTask") {
                Some(task) => format!("{p}/{task}"),
                None => p.to_string(),
            },
        ));
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
            None => scoped(ns, repo),
        });
    }
    if let Some(p) = meta.label("actions.github.com/scale-set-name") {
        return Some(scoped(ns, p));
    }
    if meta.label("runner-pod").is_some() {
        if let Some(repo) = env_in(container, "GITHUB_REPOSITORY") {
            return Some(repo.to_string());
        }
        if let Some(repo) = container
            .and_then(|c| c.get("workingDir"))
            .and_then(Value::as_str)
            .and_then(arc_repo_from_workdir)
        {
            return Some(scoped(ns, repo));
        }
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
        return Some(scoped(ns, &stable_name(p)));
    }
    if let Some(wf) = meta.label("workflows.argoproj.io/workflow") {
        let wf = stable_name(wf);
        let step = meta
            .annotation("workflows.argoproj.io/node-name")
            .and_then(|n| n.rsplit('.').next())
            .map(|s| s.split('(').next().unwrap_or(s).trim())
            .filter(|s| !s.is_empty() && !s.contains('[') && *s != wf);
        return Some(scoped(
            ns,
            &match step {
                Some(step) => format!("{wf}/{step}"),
                None => wf,
            },
        ));
    }
    if let Some(repo) = env_in(container, "CI_REPO") {
        return Some(match meta.label("step") {
            Some(step) => format!("{repo}/{step}"),
            None => repo.to_string(),
        });
    }
    if let Some(g) = pod
        .pointer("/metadata/generateName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        return Some(scoped(ns, &stable_name(g)));
    }
    pod.pointer("/metadata/ownerReferences/0/name")
        .and_then(Value::as_str)
        .map(stable_name)
        .filter(|s| !s.is_empty())
        .map(|s| scoped(ns, &s))
}

fn branch(meta: &PodMeta<'_>, container: Option<&Value>) -> Option<String> {
    let direct = meta
        .either(contract::BRANCH)
        .or_else(|| meta.annotation("job.runner.gitlab.com/ref"))
        .or_else(|| meta.either("buildkite.com/build-branch"))
        .or_else(|| meta.annotation("pipelinesascode.tekton.dev/branch"));
    if let Some(b) = direct {
        return Some(b.trim_start_matches("refs/heads/").to_string());
    }
    if let Some(url) = meta
        .annotation("runUrl")
        .or_else(|| meta.annotation("buildUrl"))
    {
        let jobs = jenkins_jobs(url);
        if jobs.len() > 1 {
            return Some(jobs[jobs.len() - 1].replace("%2F", "/"));
        }
    }
    [
        "CI_COMMIT_REF_NAME",
        "CI_COMMIT_SOURCE_BRANCH",
        "CI_COMMIT_BRANCH",
        "BUILDKITE_BRANCH",
        "GITHUB_HEAD_REF",
        "GITHUB_REF_NAME",
    ]
    .iter()
    .find_map(|n| env_in(container, n))
    .map(|b| b.trim_start_matches("refs/heads/").to_string())
}

/// The build context of a pod in `namespace` whose build container is at `container`; `None`
/// without a pipeline. Namespace-unique identifiers are scoped by `namespace`.
pub fn context(pod: &Value, container: usize, namespace: &str) -> Option<BuildContext> {
    let meta = PodMeta::new(pod);
    let c = containers(pod).get(container);
    let pipeline = pipeline(&meta, c, namespace)?;
    let image = meta
        .either(contract::IMAGE)
        .map(str::to_string)
        .or_else(|| {
            c.and_then(|c| c.get("image"))
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
        pipeline: bounded(pipeline),
        branch: bounded(branch(&meta, c).unwrap_or_else(|| crate::record::UNKNOWN.to_string())),
        image: bounded(image),
        node: bounded(node),
    })
}

/// The namespace of an admission: the request's, else the pod's, else `default`.
pub fn namespace_of<'a>(request_namespace: Option<&'a str>, pod: &'a Value) -> &'a str {
    request_namespace
        .filter(|n| !n.is_empty())
        .or_else(|| {
            pod.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
        })
        .unwrap_or("default")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn long_strings_are_capped_with_a_hash_of_the_whole() {
        let short = "acme/api".to_string();
        assert_eq!(bounded(short.clone()), short);
        let a = "é".repeat(600);
        let b = format!("{}x", "é".repeat(599));
        let (ca, cb) = (bounded(a.clone()), bounded(b));
        assert!(ca.len() <= MAX_RECOGNISED_LEN && cb.len() <= MAX_RECOGNISED_LEN);
        assert_ne!(ca, cb, "distinct long names stay distinct");
        assert_eq!(ca, bounded(a), "stable");
        let p = pod(
            json!({"inframind.io/pipeline": "p"}),
            json!({"inframind.io/branch": "b".repeat(1 << 20)}),
            json!([{"name": "build", "image": "i"}]),
        );
        assert_eq!(
            context(&p, 0, "ci").unwrap().branch.len(),
            MAX_RECOGNISED_LEN
        );
    }

    fn pod(labels: Value, annotations: Value, containers: Value) -> Value {
        json!({"metadata": {"labels": labels, "annotations": annotations, "generateName": "x-"}, "spec": {"containers": containers}})
    }

    fn ctx(p: &Value) -> BuildContext {
        context(p, build_container(p).unwrap(), "ci").unwrap()
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
            ("ci:build-api".to_string(), "main".to_string())
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
            ("ci:build-myapp", "m5.2xlarge")
        );
        assert_eq!(stable_name("nightly-28841234"), "nightly");
        assert_eq!(stable_name("api-build"), "api-build");

        let owned = json!({"metadata": {"ownerReferences": [{"kind": "Job", "name": "compile-42"}]}, "spec": {"containers": [{"name": "c"}]}});
        assert_eq!(ctx(&owned).pipeline, "ci:compile");
        let anonymous = json!({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "c"}]}});
        assert!(context(&anonymous, 0, "ci").is_none());
        let named_missing = pod(
            json!({}),
            json!({"inframind.io/container": "nope"}),
            json!([{"name": "a"}]),
        );
        assert_eq!(build_container(&named_missing), None);
    }

    #[test]
    fn the_build_container_is_chosen_by_evidence_never_a_helper() {
        let tekton = pod(
            json!({"tekton.dev/taskRun": "tr-1", "tekton.dev/task": "build"}),
            json!({}),
            json!([{"name": "step-clone", "image": "alpine/git"},
                   {"name": "step-build", "image": "gcc:12", "resources": {"requests": {"cpu": "2", "memory": "3Gi"}}},
                   {"name": "step-upload", "image": "curl", "resources": {"requests": {"cpu": "100m"}}},
                   {"name": "step-lint", "image": "golangci-lint", "resources": {"requests": {"cpu": "500m"}}},
                   {"name": "sidecar-registry", "image": "registry:2", "resources": {"requests": {"cpu": "4"}}}]),
        );
        let c = choose_container(&tekton).unwrap();
        assert_eq!(c.index, 1);
        assert!(c.how.contains("largest requests"), "{}", c.how);
        // No requests anywhere: a build image, then a build-like name, beat order.
        let plain = pod(
            json!({}),
            json!({}),
            json!([{"name": "fetch", "image": "alpine/git"}, {"name": "compile", "image": "rust:1.82"}]),
        );
        assert_eq!(
            choose_container(&plain).unwrap().how,
            "build image (containers that are not helpers)"
        );
        let named = pod(
            json!({"tekton.dev/task": "t"}),
            json!({}),
            json!([{"name": "step-lint", "image": "a"}, {"name": "step-compile", "image": "b"}]),
        );
        assert_eq!(build_container(&named), Some(1));
        let only_helpers = pod(
            json!({"tekton.dev/task": "t"}),
            json!({}),
            json!([{"name": "step-git-clone", "image": "a"}, {"name": "sidecar-x"}]),
        );
        assert_eq!(choose_container(&only_helpers), None);
        let argo = pod(
            json!({"workflows.argoproj.io/workflow": "build-x7k2p"}),
            json!({"workflows.argoproj.io/node-name": "build-x7k2p.compile"}),
            json!([{"name": "wait", "image": "argoexec"}, {"name": "main", "image": "golang:1.23"}]),
        );
        assert_eq!(build_container(&argo), Some(1));
        assert_eq!(ctx(&argo).pipeline, "ci:build/compile");
    }

    #[test]
    fn arc_workflow_pods_are_recognised_from_the_working_dir() {
        let wf = json!({"metadata": {"name": "runner-abc12-workflow", "labels": {"runner-pod": "runner-abc12"}},
            "spec": {"containers": [{"name": "job", "image": "node:22", "workingDir": "/__w/engine/engine"}]}});
        assert_eq!(ci_system(&wf), CiSystem::ArcWorkflow);
        assert_eq!(ctx(&wf).pipeline, "ci:engine");
    }
}
