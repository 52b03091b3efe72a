//! The TrainingJob custom resource and its controller: retrain, gate, promote, report status.
//!
//! - [`crd`]: the resource (`inframind.io/v1alpha1`, `TrainingJob`), its defaults and status.
//! - [`plan`]: what a reconcile should do, from spec and status alone (idempotency lives here).
//! - [`schedule`], [`gates`], [`triggers`], [`status`]: the pure pieces behind it.
//! - [`run`]: one training run against the store and the registry (the edge).
//! - [`reconciler`]: `reconcile` / `error_policy` (after kube-rs's controller-rs).
//! - [`context`]: client, recorder, store, registry, metrics and memory shared by reconciles.
//! - [`job`]: execution mode `job` (a batch/v1 Job running `inframind train --training-job`).
//! - [`leader`], [`http`], [`metrics`]: leader election, health and metrics endpoints.
//! - [`outcomes`]: the pod outcome watcher (finished build pods → telemetry rows), on the leader.

pub mod context;
pub mod crd;
pub mod gates;
pub mod http;
pub mod job;
pub mod leader;
pub mod metrics;
pub mod outcomes;
pub mod plan;
pub mod reconciler;
pub mod run;
pub mod schedule;
pub mod status;
pub mod triggers;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::{Client, CustomResourceExt, ResourceExt};

use crate::config::Global;
pub use context::{Context, Settings, FIELD_MANAGER};
pub use crd::{Phase, TrainingJob, TrainingJobSpec, TrainingJobStatus};
pub use reconciler::{error_policy, reconcile, Error};

/// `inframind controller` arguments.
#[derive(Debug, clap::Args)]
pub struct ControllerArgs {
    /// Address for /healthz, /readyz and /metrics (plain HTTP).
    #[arg(long, env = "INFRAMIND_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
    pub http_listen: std::net::SocketAddr,
    /// Name of the coordination.k8s.io Lease the replicas elect a leader with.
    #[arg(
        long,
        env = "INFRAMIND_LEASE_NAME",
        default_value = "inframind-controller"
    )]
    pub lease_name: String,
    /// Namespace of the Lease and of training Jobs (the controller's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// This replica's identity in the election (its pod name; default: the host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Seconds a leader's Lease lasts without renewal.
    #[arg(long, env = "INFRAMIND_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Image of training Jobs when the controller's own pod cannot be read.
    #[arg(long, env = "INFRAMIND_JOB_IMAGE")]
    pub job_image: Option<String>,
    /// Service account training Jobs run as (a dedicated least-privilege one; the controller
    /// never lends its own). Without it, execution mode `job` is refused.
    #[arg(long, env = "INFRAMIND_JOB_SERVICE_ACCOUNT")]
    pub job_service_account: Option<String>,
    /// Images a TrainingJob may choose for its Job besides the controller's own (comma-separated).
    #[arg(long, env = "INFRAMIND_JOB_ALLOWED_IMAGES", value_delimiter = ',')]
    pub job_allowed_images: Vec<String>,
    /// Service accounts a TrainingJob may choose for its Job besides the training one
    /// (comma-separated).
    #[arg(
        long,
        env = "INFRAMIND_JOB_ALLOWED_SERVICE_ACCOUNTS",
        value_delimiter = ','
    )]
    pub job_allowed_service_accounts: Vec<String>,
    /// In-process trainings at once; more wait in phase Pending.
    #[arg(long, env = "INFRAMIND_MAX_CONCURRENT_TRAININGS", default_value_t = 1)]
    pub max_concurrent_trainings: usize,
    /// Shutdown: the probes and /metrics carry no admission traffic, so only the grace applies
    /// (a scrape in flight finishes); the leader hands its Lease back first.
    #[command(flatten)]
    pub drain: crate::config::DrainSettings,
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "inframind".into())
}

impl ControllerArgs {
    /// Which other images and service accounts TrainingJobs may choose.
    pub fn job_policy(&self) -> job::JobPolicy {
        job::JobPolicy::new(&self.job_allowed_images, &self.job_allowed_service_accounts)
    }
}

/// The training Job template: the controller's own pod when it can be read, else `--job-image`.
async fn job_template(client: &Client, args: &ControllerArgs) -> Option<job::JobTemplate> {
    let training_sa = args
        .job_service_account
        .clone()
        .filter(|s| !s.trim().is_empty());
    if let Some(pod_name) = &args.identity {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &args.namespace);
        match pods.get(pod_name).await {
            Ok(pod) => {
                if let Some(mut t) =
                    job::JobTemplate::from_pod(&pod, training_sa.clone(), args.job_policy())
                {
                    if let Some(image) = &args.job_image {
                        t.image = Some(image.clone());
                    }
                    return Some(t);
                }
            }
            Err(e) => tracing::warn!(
                pod = %pod_name,
                error = %e,
                "cannot read the controller's own pod; training Jobs get only --job-image"
            ),
        }
    }
    args.job_image.as_ref().map(|image| job::JobTemplate {
        namespace: args.namespace.clone(),
        image: Some(image.clone()),
        service_account: training_sa,
        policy: args.job_policy(),
        ..Default::default()
    })
}

/// Runs the controller until shutdown: HTTP endpoints on every replica, the Controller on the
/// leader only.
pub async fn run(global: &Global, args: ControllerArgs) -> anyhow::Result<()> {
    let metrics = Arc::new(metrics::Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(args.http_listen)
        .await
        .with_context(|| {
            format!(
                "listening on {} for /healthz, /readyz and /metrics",
                args.http_listen
            )
        })?;
    let listen = listener.local_addr().unwrap_or(args.http_listen);
    let http = http::spawn(listener, metrics.clone(), ready.clone());
    tracing::info!(%listen, "serving /healthz, /readyz and /metrics");
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in a pod, or through KUBECONFIG)")?;
    let identity = args.identity.clone().unwrap_or_else(hostname);
    let mut settings = Settings::from_global(global, identity.clone());
    settings.model_keys = global.model_keys()?;
    settings.job_template = job_template(&client, &args).await;
    settings.max_concurrent_trainings = args.max_concurrent_trainings.max(1);
    let ctx = Arc::new(Context::new(client.clone(), settings, metrics));
    ready.store(true, Ordering::Relaxed);
    let result = leader::run_elected(
        client,
        leader::LeaseSettings {
            name: args.lease_name.clone(),
            namespace: args.namespace.clone(),
            identity,
            duration_s: args.lease_duration_seconds.max(5),
            grace_s: (args.lease_duration_seconds / 3).clamp(1, 10),
        },
        ctx,
        crate::serving::shutdown_signal(),
    )
    .await;
    ready.store(false, Ordering::Relaxed);
    http.shutdown(args.drain.drain().grace).await;
    result
}

/// The CRD as YAML (what `inframind crd` prints and `crds/` holds).
pub fn crd_yaml() -> anyhow::Result<String> {
    Ok(serde_yaml::to_string(&TrainingJob::crd())?)
}

/// Runs one TrainingJob to completion in this process (`inframind train --training-job NS/NAME`).
pub async fn run_training_job(global: &Global, namespaced_name: &str) -> anyhow::Result<()> {
    split_name(namespaced_name)?;
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in a pod, or through KUBECONFIG)")?;
    let mut settings = Settings::from_global(global, hostname());
    settings.model_keys = global.model_keys()?;
    let ctx = Context::new(client, settings, Arc::new(metrics::Metrics::new()));
    let status = run_training_job_with(&ctx, namespaced_name).await?;
    match status.phase {
        Some(Phase::Succeeded) => {
            println!("{}", status.message.unwrap_or_default());
            Ok(())
        }
        _ => bail!(
            "TrainingJob {namespaced_name}: {}",
            status.message.unwrap_or_else(|| "failed".into())
        ),
    }
}

fn split_name(namespaced_name: &str) -> anyhow::Result<(&str, &str)> {
    match namespaced_name.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns, name))
        }
        _ => bail!("--training-job takes NAMESPACE/NAME, got `{namespaced_name}`"),
    }
}

/// [`run_training_job`] with a given context: reads the TrainingJob, trains, writes its status
/// (keeping the Job reference the controller recorded) and returns the final status.
pub async fn run_training_job_with(
    ctx: &Context,
    namespaced_name: &str,
) -> anyhow::Result<TrainingJobStatus> {
    let (ns, name) = split_name(namespaced_name)?;
    let api: Api<TrainingJob> = Api::namespaced(ctx.client.clone(), ns);
    let tj = api
        .get(name)
        .await
        .with_context(|| format!("reading TrainingJob {ns}/{name}"))?;
    let prev = tj.status.clone().unwrap_or_default();
    let busy = matches!(prev.phase, Some(Phase::Running | Phase::Pending));
    let runner = match std::env::var(job::JOB_NAME_ENV) {
        Ok(job_name) => format!(
            "job/{}/{job_name}",
            prev.job
                .as_ref()
                .map(|j| j.namespace.clone())
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .unwrap_or_default()
        ),
        Err(_) => format!("cli/{}", hostname()),
    };
    let start = status::Start {
        phase: Phase::Running,
        runner,
        reason: prev
            .run_reason
            .clone()
            .filter(|_| busy)
            .unwrap_or_else(|| "run by `inframind train --training-job`".into()),
        generation: tj.metadata.generation,
        tick: None,
        job: prev.job.clone().filter(|_| busy),
    };
    tracing::info!(training_job = %format!("{ns}/{}", tj.name_any()), reason = %start.reason, "training");
    let reported = reconciler::train_and_report(ctx, &tj, &prev, start).await?;
    Ok(reported.status)
}
