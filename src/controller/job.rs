//! Execution mode `job`: training as a batch/v1 Job running `inframind train --training-job
//! NAMESPACE/NAME` with the controller's image.
//!
//! The Job runs in the **controller's namespace** with the controller's image, under a dedicated
//! training service account (`--job-service-account`, never the controller's), and with only
//! what training needs from the controller's container: the store and registry settings
//! ([`TRAINING_ENV`]), scratch `emptyDir` volumes, the security contexts and the image pull
//! secrets. A TrainingJob may name another image or service account only from the allowlists in
//! the controller's configuration ([`JobPolicy`]); anyone who may create a TrainingJob would
//! otherwise run their own code with the database and Redis credentials. A namespace cannot own
//! objects in another, so the Job points back at its TrainingJob through the annotation
//! `inframind.io/training-job` (and is cleaned up by `ttlSecondsAfterFinished`); the controller
//! watches Jobs labelled `app.kubernetes.io/managed-by=inframind-controller`.
//!
//! The Job's pod trains and writes the TrainingJob's status itself; the controller only steps in
//! when the Job ends without a result (its pod crashed, was evicted or OOM-killed).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, LocalObjectReference, Pod, PodSecurityContext, PodSpec, PodTemplateSpec,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;

use super::crd::{Execution, TrainingJob};

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

/// The controller's environment variables a training pod gets: the store, the registry, the
/// models cache, logging and the model-signing key's path (the Job trains and signs). Nothing
/// else (other Secrets, tokens, cloud credentials) is copied.
pub const TRAINING_ENV: &[&str] = &[
    "INFRAMIND_DATABASE_URL",
    "INFRAMIND_REDIS_URL",
    "INFRAMIND_REDIS_PREFIX",
    "INFRAMIND_MODELS_DIR",
    "INFRAMIND_LOG",
    "INFRAMIND_LOG_FORMAT",
    "INFRAMIND_MODEL_SIGNING_KEY_FILE",
];

/// The controller's Secret volumes a training pod gets, by the chart's names: the model-signing
/// key (a Job that trains must sign, or every webhook refuses its model) and the stores' CA
/// bundle (the store URLs name it for `sslmode=verify-full` / `rediss://`). Any other Secret or
/// projected volume (service account tokens, cloud credentials) stays with the controller.
pub const TRAINING_SECRET_VOLUMES: &[&str] = &["model-signing", "stores-ca"];

/// Whether a volume of the controller's pod goes into training Jobs: scratch space, or one of
/// [`TRAINING_SECRET_VOLUMES`] as a plain Secret volume.
fn training_volume(v: &Volume) -> bool {
    v.empty_dir.is_some()
        || (v.secret.is_some() && TRAINING_SECRET_VOLUMES.contains(&v.name.as_str()))
}

/// Which images and service accounts a TrainingJob may choose: the controller's configuration,
/// never the TrainingJob's own say.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobPolicy {
    /// Images `spec.execution.image` may name besides the controller's own.
    pub allowed_images: Vec<String>,
    /// Service accounts `spec.execution.serviceAccountName` may name besides the training one.
    pub allowed_service_accounts: Vec<String>,
}

/// Why a training Job cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobError {
    /// The TrainingJob names an image outside the allowlist.
    #[error("spec.execution.image `{0}` is not allowed: training Jobs run the controller's image, or one listed in the controller's --job-allowed-images (INFRAMIND_JOB_ALLOWED_IMAGES)")]
    ImageNotAllowed(String),
    /// The TrainingJob names a service account outside the allowlist.
    #[error("spec.execution.serviceAccountName `{0}` is not allowed: training Jobs run as the controller's training service account, or one listed in its --job-allowed-service-accounts (INFRAMIND_JOB_ALLOWED_SERVICE_ACCOUNTS)")]
    ServiceAccountNotAllowed(String),
    /// No image is known (configuration).
    #[error("execution mode `job` needs an image: run the controller in a pod (POD_NAME, POD_NAMESPACE) or with --job-image")]
    NoImage,
    /// No training service account is configured (configuration).
    #[error("execution mode `job` needs the training service account: start the controller with --job-service-account (INFRAMIND_JOB_SERVICE_ACCOUNT); it never lends its own")]
    NoServiceAccount,
}

impl JobError {
    /// Whether the TrainingJob's spec is at fault (else the controller's configuration).
    pub fn is_spec(&self) -> bool {
        matches!(
            self,
            JobError::ImageNotAllowed(_) | JobError::ServiceAccountNotAllowed(_)
        )
    }
}

impl JobPolicy {
    /// A policy from the configured lists (blank entries ignored).
    pub fn new(images: &[String], service_accounts: &[String]) -> JobPolicy {
        let clean = |v: &[String]| -> Vec<String> {
            v.iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };
        JobPolicy {
            allowed_images: clean(images),
            allowed_service_accounts: clean(service_accounts),
        }
    }

    /// Checks the image and service account `exec` asks for. `own_image` and `training_sa` are
    /// always allowed (the controller's image and its training service account); `None` where
    /// they are unknown (the API), so only the allowlists count there.
    pub fn check(
        &self,
        exec: &Execution,
        own_image: Option<&str>,
        training_sa: Option<&str>,
    ) -> Result<(), JobError> {
        if let Some(image) = &exec.image {
            if own_image != Some(image.as_str()) && !self.allowed_images.contains(image) {
                return Err(JobError::ImageNotAllowed(image.clone()));
            }
        }
        if let Some(sa) = &exec.service_account_name {
            if training_sa != Some(sa.as_str()) && !self.allowed_service_accounts.contains(sa) {
                return Err(JobError::ServiceAccountNotAllowed(sa.clone()));
            }
        }
        Ok(())
    }
}

/// What a training Job's pod is made of: the controller's image and the parts of its container
/// training needs (captured at startup), the training service account and the policy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobTemplate {
    /// Namespace the Jobs run in (the controller's).
    pub namespace: String,
    /// Image (the controller's).
    pub image: Option<String>,
    /// The dedicated training service account (`--job-service-account`), never the controller's.
    pub service_account: Option<String>,
    /// Environment: the controller's [`TRAINING_ENV`] variables (Secret references stay
    /// references).
    pub env: Vec<EnvVar>,
    /// Scratch volumes and the [`TRAINING_SECRET_VOLUMES`] (the controller's other Secret or
    /// projected volumes may hold credentials training does not need).
    pub volumes: Vec<Volume>,
    /// Mounts of those volumes.
    pub volume_mounts: Vec<VolumeMount>,
    /// Pod security context.
    pub pod_security_context: Option<PodSecurityContext>,
    /// Container security context.
    pub security_context: Option<SecurityContext>,
    /// Image pull secrets (for the kubelet; the pod never sees them).
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Which other images and service accounts TrainingJobs may choose.
    pub policy: JobPolicy,
}

impl JobTemplate {
    /// The template of the controller's pod (its container named `controller`, else its first),
    /// running as `training_sa`.
    pub fn from_pod(
        pod: &Pod,
        training_sa: Option<String>,
        policy: JobPolicy,
    ) -> Option<JobTemplate> {
        let spec = pod.spec.as_ref()?;
        let c = spec
            .containers
            .iter()
            .find(|c| c.name == "controller")
            .or_else(|| spec.containers.first())?;
        let volumes: Vec<Volume> = spec
            .volumes
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(training_volume)
            .collect();
        Some(JobTemplate {
            namespace: pod.namespace().unwrap_or_else(|| "default".into()),
            image: c.image.clone(),
            service_account: training_sa,
            env: c
                .env
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|e| TRAINING_ENV.contains(&e.name.as_str()))
                .collect(),
            volume_mounts: c
                .volume_mounts
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|m| volumes.iter().any(|v| v.name == m.name))
                .collect(),
            volumes,
            pod_security_context: spec.security_context.clone(),
            security_context: c.security_context.clone(),
            image_pull_secrets: spec.image_pull_secrets.clone().unwrap_or_default(),
            policy,
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

/// The batch/v1 Job that runs `tj` (see the module docs); refuses an image or service account
/// the policy does not allow.
pub fn build(template: &JobTemplate, tj: &TrainingJob, name: &str) -> Result<Job, JobError> {
    let ns = tj.namespace().unwrap_or_default();
    let tj_name = tj.name_any();
    let exec = &tj.spec.execution;
    template.policy.check(
        exec,
        template.image.as_deref(),
        template.service_account.as_deref(),
    )?;
    let image = exec
        .image
        .clone()
        .or_else(|| template.image.clone())
        .ok_or(JobError::NoImage)?;
    let service_account = exec
        .service_account_name
        .clone()
        .or_else(|| template.service_account.clone())
        .ok_or(JobError::NoServiceAccount)?;
    let mut env: Vec<EnvVar> = template
        .env
        .iter()
        .filter(|e| TRAINING_ENV.contains(&e.name.as_str()))
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
                    service_account_name: Some(service_account),
                    // The pod reads its TrainingJob and writes its status, so it needs the token
                    // (the training service account itself does not mount one by default).
                    automount_service_account_token: Some(true),
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
                "imagePullSecrets": [{"name": "regcred"}],
                "containers": [{
                    "name": "controller",
                    "image": "ghcr.io/inframind/inframind:1.2.3",
                    "args": ["controller"],
                    "env": [
                        {"name": "INFRAMIND_DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "inframind-database", "key": "url"}}},
                        {"name": "INFRAMIND_REDIS_URL", "valueFrom": {"secretKeyRef": {"name": "inframind-redis", "key": "url"}}},
                        {"name": "INFRAMIND_MODELS_DIR", "value": "/var/lib/inframind/models"},
                        {"name": "INFRAMIND_LEASE_NAME", "value": "inframind-controller"},
                        {"name": "INFRAMIND_MODEL_SIGNING_KEY_FILE", "value": "/etc/inframind/model-signing/key.pem"},
                        {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "cloud", "key": "secret"}}}
                    ],
                    "envFrom": [{"secretRef": {"name": "everything"}}],
                    "volumeMounts": [
                        {"name": "models", "mountPath": "/var/lib/inframind/models"},
                        {"name": "cloud-credentials", "mountPath": "/etc/cloud", "readOnly": true},
                        {"name": "model-signing", "mountPath": "/etc/inframind/model-signing", "readOnly": true},
                        {"name": "stores-ca", "mountPath": "/etc/inframind/stores-ca", "readOnly": true},
                        {"name": "kube-api-access-x1y2z", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}
                    ]
                }],
                "volumes": [
                    {"name": "models", "emptyDir": {}},
                    {"name": "cloud-credentials", "secret": {"secretName": "cloud"}},
                    {"name": "model-signing", "secret": {"secretName": "inframind-model-signing"}},
                    {"name": "stores-ca", "secret": {"secretName": "db-ca"}},
                    {"name": "model-public", "projected": {"sources": []}},
                    {"name": "kube-api-access-x1y2z", "projected": {"sources": []}}
                ]
            }
        }))
        .unwrap()
    }

    fn template() -> JobTemplate {
        JobTemplate::from_pod(
            &controller_pod(),
            Some("inframind-training".into()),
            JobPolicy::default(),
        )
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

    fn pod_of(job: &Job) -> &PodSpec {
        job.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    #[test]
    fn the_job_runs_train_with_the_controllers_image_as_the_training_account() {
        let template = template();
        assert_eq!(template.namespace, "inframind");
        let now = DateTime::parse_from_rfc3339("2026-03-01T04:05:06Z")
            .unwrap()
            .with_timezone(&Utc);
        let name = job_name("nightly", 3, now);
        assert_eq!(name, "nightly-train-g3-20260301040506");
        let job = build(&template, &tj(), &name).unwrap();
        assert_eq!(job.metadata.namespace.as_deref(), Some("inframind"));
        let pod = pod_of(&job);
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
            Some("inframind-training")
        );
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(job.spec.as_ref().unwrap().backoff_limit, Some(0));
        assert_eq!(
            training_job_of(&job).unwrap(),
            ObjectRef::new("nightly").within("ci")
        );
    }

    /// The defect of issue 14: the Job copied the controller's service account, every variable
    /// and Secret source, and every volume.
    #[test]
    fn the_job_pod_gets_only_what_training_needs() {
        let job = build(&template(), &tj(), "n").unwrap();
        let pod = pod_of(&job);
        assert_ne!(
            pod.service_account_name.as_deref(),
            Some("inframind-controller"),
            "never the controller's service account"
        );
        let c = &pod.containers[0];
        let mut names: Vec<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "INFRAMIND_DATABASE_URL",
                JOB_NAME_ENV,
                "INFRAMIND_MODELS_DIR",
                "INFRAMIND_MODEL_SIGNING_KEY_FILE",
                "INFRAMIND_REDIS_URL"
            ]
        );
        assert!(c.env_from.is_none(), "no whole Secret in the environment");
        let vols: Vec<&str> = pod
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(
            vols,
            ["models", "model-signing", "stores-ca"],
            "scratch, the signing key and the stores' CA; no other Secret, no projected volume"
        );
        let mounts: Vec<&str> = c
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(mounts, ["models", "model-signing", "stores-ca"]);
        assert_eq!(
            pod.image_pull_secrets.as_ref().unwrap()[0].name,
            "regcred",
            "the kubelet still pulls the image"
        );
        assert_eq!(pod.automount_service_account_token, Some(true));
    }

    #[test]
    fn only_allowlisted_images_and_service_accounts_may_be_chosen() {
        let mut t = tj();
        t.spec.execution.image = Some("attacker/miner:latest".into());
        assert_eq!(
            build(&template(), &t, "n").unwrap_err(),
            JobError::ImageNotAllowed("attacker/miner:latest".into())
        );
        let mut t = tj();
        t.spec.execution.service_account_name = Some("inframind-controller".into());
        let err = build(&template(), &t, "n").unwrap_err();
        assert_eq!(
            err,
            JobError::ServiceAccountNotAllowed("inframind-controller".into())
        );
        assert!(err.is_spec());
        assert!(err
            .to_string()
            .contains("INFRAMIND_JOB_ALLOWED_SERVICE_ACCOUNTS"));

        // Naming the defaults explicitly is fine; so is what the configuration allows.
        let mut t = tj();
        t.spec.execution.image = Some("ghcr.io/inframind/inframind:1.2.3".into());
        t.spec.execution.service_account_name = Some("inframind-training".into());
        build(&template(), &t, "n").unwrap();
        let mut allowing = template();
        allowing.policy = JobPolicy {
            allowed_images: vec!["inframind:dev".into()],
            allowed_service_accounts: vec!["trainer".into()],
        };
        let mut t = tj();
        t.spec.execution.image = Some("inframind:dev".into());
        t.spec.execution.service_account_name = Some("trainer".into());
        let job = build(&allowing, &t, "n").unwrap();
        let pod = pod_of(&job);
        assert_eq!(pod.containers[0].image.as_deref(), Some("inframind:dev"));
        assert_eq!(pod.service_account_name.as_deref(), Some("trainer"));
    }

    #[test]
    fn a_missing_image_or_training_account_is_a_configuration_error() {
        let no_image = JobTemplate {
            service_account: Some("inframind-training".into()),
            ..Default::default()
        };
        let err = build(&no_image, &tj(), "n").unwrap_err();
        assert_eq!(err, JobError::NoImage);
        assert!(!err.is_spec());
        let no_sa = JobTemplate::from_pod(&controller_pod(), None, JobPolicy::default()).unwrap();
        assert_eq!(
            build(&no_sa, &tj(), "n").unwrap_err(),
            JobError::NoServiceAccount,
            "the controller's own account is never lent"
        );
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
