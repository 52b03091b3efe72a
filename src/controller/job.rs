//! Execution mode `job`: training as a batch/v1 Job running `inframind train --training-job
//! NAMESPACE/NAME` with the controller's image.
//!
//! The Job runs in the **controller's namespace** and copies the controller's own container
//! (image, environment, Secret references, volumes, security contexts, service account): the
//! database and Redis credentials live there, and the controller's service account may write
//! TrainingJob status. `spec.execution` can override the image, the service account and the
//! resources. A namespace cannot own objects in another, so the Job points back at its
//! TrainingJob through the annotation `inframind.io/training-job` (and is cleaned up by
//! `ttlSecondsAfterFinished`); the controller watches Jobs labelled
//! `app.kubernetes.io/managed-by=inframind-controller`.
//!
//! The Job's pod trains and writes the TrainingJob's status itself; the controller only steps in
//! when the Job ends without a result (its pod crashed, was evicted or OOM-killed).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, EnvVar, LocalObjectReference, Pod, PodSecurityContext, PodSpec,
    PodTemplateSpec, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;

use super::crd::TrainingJob;

/// Label selecting the Jobs this controller created.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "inframind-controller");
/// Annotation on a Job naming its TrainingJob as `NAMESPACE/NAME`.
pub const TRAINING_JOB_ANNOTATION: &str = "inframind.io/training-job";
/// Annotation on a Job with the TrainingJob generation it was created for.
pub const GENERATION_ANNOTATION: &str = "inframind.io/generation";
/// Environment variable telling the Job's pod which Job it runs in.
pub const JOB_NAME_ENV: &str = "INFRAMIND_JOB_NAME";
/// How long a finished Job is kept.
pub const TTL_SECONDS_AFTER_FINISHED: i32 = 24 * 3600;

/// What a training Job's pod is made of: the controller's own container, captured at startup.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobTemplate {
    /// Namespace the Jobs run in (the controller's).
    pub namespace: String,
    /// Image (the controller's).
    pub image: Option<String>,
    /// Service account (the controller's).
    pub service_account: Option<String>,
    /// Environment (the controller's, e.g. `INFRAMIND_DATABASE_URL` from a Secret).
    pub env: Vec<EnvVar>,
    /// Environment sources.
    pub env_from: Vec<EnvFromSource>,
    /// Volumes (minus the API token volume the API server injects by itself).
    pub volumes: Vec<Volume>,
    /// Mounts of those volumes.
    pub volume_mounts: Vec<VolumeMount>,
    /// Pod security context.
    pub pod_security_context: Option<PodSecurityContext>,
    /// Container security context.
    pub security_context: Option<SecurityContext>,
    /// Image pull secrets.
    pub image_pull_secrets: Vec<LocalObjectReference>,
}

fn is_token_volume(name: &str) -> bool {
    name.starts_with("kube-api-access-")
}

impl JobTemplate {
    /// The template of the controller's pod: its container named `controller`, else its first.
    pub fn from_pod(pod: &Pod) -> Option<JobTemplate> {
        let spec = pod.spec.as_ref()?;
        let c = spec
            .containers
            .iter()
            .find(|c| c.name == "controller")
            .or_else(|| spec.containers.first())?;
        Some(JobTemplate {
            namespace: pod.namespace().unwrap_or_else(|| "default".into()),
            image: c.image.clone(),
            service_account: spec.service_account_name.clone(),
            env: c.env.clone().unwrap_or_default(),
            env_from: c.env_from.clone().unwrap_or_default(),
            volumes: spec
                .volumes
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|v| !is_token_volume(&v.name))
                .collect(),
            volume_mounts: c
                .volume_mounts
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|m| !is_token_volume(&m.name))
                .collect(),
            pod_security_context: spec.security_context.clone(),
            security_context: c.security_context.clone(),
            image_pull_secrets: spec.image_pull_secrets.clone().unwrap_or_default(),
        })
    }
}

/// A Job name for a run of `tj` started at `now`: unique per attempt, at most 63 characters.
pub fn job_name(tj_name: &str, generation: i64, now: DateTime<Utc>) -> String {
    let suffix = format!("train-g{generation}-{}", now.format("%Y%m%d%H%M%S"));
    let max = 63 - suffix.len() - 1;
    let mut base: String = tj_name.chars().take(max).collect();
    while base.ends_with('-') || base.ends_with('.') {
        base.pop();
    }
    format!("{base}-{suffix}")
}

/// The batch/v1 Job that runs `tj` (see the module docs).
pub fn build(template: &JobTemplate, tj: &TrainingJob, name: &str) -> Result<Job, String> {
    let ns = tj.namespace().unwrap_or_default();
    let tj_name = tj.name_any();
    let exec = &tj.spec.execution;
    let image = exec
        .image
        .clone()
        .or_else(|| template.image.clone())
        .ok_or_else(|| {
            "execution mode `job` needs an image: set spec.execution.image, or run the controller in a pod (POD_NAME, POD_NAMESPACE) or with --job-image".to_string()
        })?;
    let mut env: Vec<EnvVar> = template
        .env
        .iter()
        .filter(|e| e.name != JOB_NAME_ENV)
        .cloned()
        .collect();
    env.push(EnvVar {
        name: JOB_NAME_ENV.into(),
        value: Some(name.to_string()),
        value_from: None,
    });
    let labels = BTreeMap::from([
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        (
            "app.kubernetes.io/component".to_string(),
            "training".to_string(),
        ),
    ]);
    let annotations = BTreeMap::from([
        (
            TRAINING_JOB_ANNOTATION.to_string(),
            format!("{ns}/{tj_name}"),
        ),
        (
            GENERATION_ANNOTATION.to_string(),
            tj.metadata.generation.unwrap_or_default().to_string(),
        ),
    ]);
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(template.namespace.clone()),
            labels: Some(labels.clone()),
            annotations: Some(annotations.clone()),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            ttl_seconds_after_finished: Some(TTL_SECONDS_AFTER_FINISHED),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    service_account_name: exec
                        .service_account_name
                        .clone()
                        .or_else(|| template.service_account.clone()),
                    security_context: template.pod_security_context.clone(),
                    image_pull_secrets: non_empty(template.image_pull_secrets.clone()),
                    volumes: non_empty(template.volumes.clone()),
                    enable_service_links: Some(false),
                    containers: vec![Container {
                        name: "train".into(),
                        image: Some(image),
                        args: Some(vec![
                            "train".into(),
                            "--training-job".into(),
                            format!("{ns}/{tj_name}"),
                        ]),
                        env: Some(env),
                        env_from: non_empty(template.env_from.clone()),
                        volume_mounts: non_empty(template.volume_mounts.clone()),
                        resources: exec.resources.clone(),
                        security_context: template.security_context.clone(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    })
}

fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

/// The TrainingJob a Job runs, from its annotation.
pub fn training_job_of(job: &Job) -> Option<ObjectRef<TrainingJob>> {
    let v = job.annotations().get(TRAINING_JOB_ANNOTATION)?;
    let (ns, name) = v.split_once('/')?;
    Some(ObjectRef::new(name).within(ns))
}

/// Where a Job is.
#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    /// Not finished.
    Active,
    /// Its pod exited successfully.
    Succeeded,
    /// Its pod failed; why.
    Failed(String),
}

/// The state of `job` from its conditions.
pub fn state(job: &Job) -> JobState {
    let Some(status) = &job.status else {
        return JobState::Active;
    };
    for c in status.conditions.iter().flatten() {
        if c.status != "True" {
            continue;
        }
        match c.type_.as_str() {
            "Complete" => return JobState::Succeeded,
            "Failed" => {
                let why = [c.reason.as_deref(), c.message.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(": ");
                return JobState::Failed(if why.is_empty() { "failed".into() } else { why });
            }
            _ => {}
        }
    }
    if status.succeeded.unwrap_or(0) > 0 {
        JobState::Succeeded
    } else if status.failed.unwrap_or(0) > 0 {
        JobState::Failed("its pod failed".into())
    } else {
        JobState::Active
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::crd::{ExecutionMode, TrainingJobSpec};
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};

    fn controller_pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "inframind-controller-abc", "namespace": "inframind"},
            "spec": {
                "serviceAccountName": "inframind-controller",
                "securityContext": {"runAsNonRoot": true},
                "containers": [{
                    "name": "controller",
                    "image": "ghcr.io/inframind/inframind:1.2.3",
                    "args": ["controller"],
                    "env": [
                        {"name": "INFRAMIND_DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "inframind-database", "key": "url"}}},
                        {"name": "INFRAMIND_MODELS_DIR", "value": "/var/lib/inframind/models"}
                    ],
                    "volumeMounts": [
                        {"name": "models", "mountPath": "/var/lib/inframind/models"},
                        {"name": "kube-api-access-x1y2z", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}
                    ]
                }],
                "volumes": [
                    {"name": "models", "emptyDir": {}},
                    {"name": "kube-api-access-x1y2z", "projected": {"sources": []}}
                ]
            }
        }))
        .unwrap()
    }

    fn tj() -> TrainingJob {
        let mut tj = TrainingJob::new(
            "nightly",
            TrainingJobSpec {
                execution: crate::controller::crd::Execution {
                    mode: ExecutionMode::Job,
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        tj.metadata.namespace = Some("ci".into());
        tj.metadata.generation = Some(3);
        tj
    }

    #[test]
    fn the_job_copies_the_controllers_container_and_runs_train() {
        let template = JobTemplate::from_pod(&controller_pod()).unwrap();
        assert_eq!(template.namespace, "inframind");
        assert_eq!(template.volumes.len(), 1, "the token volume is not copied");
        let now = DateTime::parse_from_rfc3339("2026-03-01T04:05:06Z")
            .unwrap()
            .with_timezone(&Utc);
        let name = job_name("nightly", 3, now);
        assert_eq!(name, "nightly-train-g3-20260301040506");
        let job = build(&template, &tj(), &name).unwrap();
        assert_eq!(job.metadata.namespace.as_deref(), Some("inframind"));
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let c = &pod.containers[0];
        assert_eq!(
            c.image.as_deref(),
            Some("ghcr.io/inframind/inframind:1.2.3")
        );
        assert_eq!(
            c.args.as_ref().unwrap(),
            &["train", "--training-job", "ci/nightly"]
        );
        let env = c.env.as_ref().unwrap();
        assert!(env.iter().any(|e| e.name == "INFRAMIND_DATABASE_URL"
            && e.value_from.is_some()
            && e.value.is_none()));
        assert!(env
            .iter()
            .any(|e| e.name == JOB_NAME_ENV && e.value.as_deref() == Some(name.as_str())));
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some("inframind-controller")
        );
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(job.spec.as_ref().unwrap().backoff_limit, Some(0));
        assert_eq!(
            training_job_of(&job).unwrap(),
            ObjectRef::new("nightly").within("ci")
        );
    }

    #[test]
    fn spec_overrides_and_a_missing_image_is_a_clear_error() {
        let mut t = tj();
        t.spec.execution.image = Some("inframind:dev".into());
        t.spec.execution.service_account_name = Some("trainer".into());
        let job = build(&JobTemplate::default(), &t, "n").unwrap();
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.containers[0].image.as_deref(), Some("inframind:dev"));
        assert_eq!(pod.service_account_name.as_deref(), Some("trainer"));
        let err = build(&JobTemplate::default(), &tj(), "n").unwrap_err();
        assert!(err.contains("needs an image"), "{err}");
    }

    #[test]
    fn job_state_follows_its_conditions() {
        let mut job = Job::default();
        assert_eq!(state(&job), JobState::Active);
        job.status = Some(JobStatus {
            conditions: Some(vec![JobCondition {
                type_: "Failed".into(),
                status: "True".into(),
                reason: Some("BackoffLimitExceeded".into()),
                message: Some("Job has reached the specified backoff limit".into()),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert_eq!(
            state(&job),
            JobState::Failed(
                "BackoffLimitExceeded: Job has reached the specified backoff limit".into()
            )
        );
        job.status = Some(JobStatus {
            succeeded: Some(1),
            ..Default::default()
        });
        assert_eq!(state(&job), JobState::Succeeded);
    }

    #[test]
    fn long_names_are_shortened_to_63() {
        let now = Utc::now();
        let n = job_name(&"x".repeat(100), 12, now);
        assert!(n.len() <= 63, "{n}");
    }
}
