//! Leader election: several controller replicas may run, only the holder of a
//! `coordination.k8s.io` Lease reconciles (kube-lease-manager, server-side apply on the Lease).
//!
//! The leader runs the kube-runtime Controller; a replica that loses the Lease stops it at once
//! (a run it had started is then reported as interrupted by the next leader, which retrains if
//! the generation had not finished).

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams};
use kube::runtime::{watcher, Controller};
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;

use super::context::Context;
use super::crd::TrainingJob;
use super::job::{training_job_of, MANAGED_BY};
use super::reconciler::{error_policy, reconcile};

/// The Lease and who competes for it.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// Lease name.
    pub name: String,
    /// Its namespace (the controller's).
    pub namespace: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a lock lasts without renewal, seconds.
    pub duration_s: u64,
    /// How long before expiry the holder renews, seconds.
    pub grace_s: u64,
}

/// Competes for the Lease until `shutdown`, running the controller while leading.
pub async fn run_elected(
    client: Client,
    lease: LeaseSettings,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let manager = LeaseManagerBuilder::new(client, &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        .with_duration(lease.duration_s)
        .with_grace(lease.grace_s)
        .build()
        .await
        .with_context(|| {
            format!(
                "setting up leader election on Lease {}/{}",
                lease.namespace, lease.name
            )
        })?;
    let (mut leading, lease_task) = manager.watch().await;
    tracing::info!(lease = %lease.name, namespace = %lease.namespace, identity = %lease.identity, "competing for leadership");
    let mut controller: Option<tokio::task::JoinHandle<()>> = None;
    tokio::pin!(shutdown);
    loop {
        let is_leader = *leading.borrow_and_update();
        match (is_leader, controller.is_some()) {
            (true, false) => {
                tracing::info!(identity = %lease.identity, "became the leader: reconciling TrainingJobs");
                ctx.metrics.leader.set(1);
                controller = Some(tokio::spawn(run_controller(ctx.clone())));
            }
            (false, true) => {
                tracing::warn!(identity = %lease.identity, "lost leadership: stopping the controller");
                ctx.metrics.leader.set(0);
                if let Some(c) = controller.take() {
                    c.abort();
                }
            }
            _ => {}
        }
        tokio::select! {
            changed = leading.changed() => {
                if changed.is_err() {
                    tracing::error!("leader election stopped");
                    break;
                }
            }
            _ = &mut shutdown => {
                tracing::info!("shutting down");
                break;
            }
        }
    }
    if let Some(c) = controller.take() {
        c.abort();
    }
    ctx.metrics.leader.set(0);
    // Closing the channel makes the lease task release the Lease for the next replica.
    drop(leading);
    match lease_task.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(anyhow::anyhow!("releasing the Lease: {e}")),
        Err(e) => Err(anyhow::anyhow!("the leader election task failed: {e}")),
    }
}

/// Runs the kube-runtime Controller over TrainingJobs (and the training Jobs it created).
pub async fn run_controller(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let tjs: Api<TrainingJob> = Api::all(client.clone());
    // Refuse to spin on a missing CRD: say what to do and wait for it.
    while let Err(e) = tjs.list(&ListParams::default().limit(1)).await {
        tracing::error!(error = %e, "cannot list TrainingJobs; is the CRD installed? (`inframind crd | kubectl apply -f -`)");
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    }
    let mut controller = Controller::new(tjs, watcher::Config::default().any_semantic());
    if let Some(t) = &ctx.settings.job_template {
        let jobs: Api<Job> = Api::namespaced(client, &t.namespace);
        controller = controller.watches(
            jobs,
            watcher::Config::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1)),
            |job| training_job_of(&job),
        );
    }
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(object = %obj, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile did not complete"),
            }
        })
        .await;
}
