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

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::context::Context;
use super::crd::TrainingJob;
use super::job::{training_job_of, MANAGED_BY};
use super::metrics::Metrics;
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
    let (leading, lease_task) = manager.watch().await;
    tracing::info!(lease = %lease.name, namespace = %lease.namespace, identity = %lease.identity, "competing for leadership");
    let leading = follow_leadership(
        leading,
        &ctx.metrics,
        || {
            let ctx = ctx.clone();
            // Both stop together when leadership is lost (one task).
            tokio::spawn(async move {
                tokio::join!(run_controller(ctx.clone()), super::outcomes::run(ctx));
            })
        },
        shutdown,
    )
    .await;
    // Closing the channel makes the lease task release the Lease for the next replica.
    drop(leading);
    match lease_task.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(anyhow::anyhow!("releasing the Lease: {e}")),
        Err(e) => Err(anyhow::anyhow!("the leader election task failed: {e}")),
    }
}

/// Runs `start` (the controller) while `leading` says so and aborts it the moment it does not,
/// until `shutdown` or the end of the election. Returns the channel so the caller can close it.
pub async fn follow_leadership(
    mut leading: watch::Receiver<bool>,
    metrics: &Metrics,
    mut start: impl FnMut() -> JoinHandle<()>,
    shutdown: impl Future<Output = ()>,
) -> watch::Receiver<bool> {
    let mut controller: Option<JoinHandle<()>> = None;
    tokio::pin!(shutdown);
    loop {
        let is_leader = *leading.borrow_and_update();
        match (is_leader, controller.is_some()) {
            (true, false) => {
                tracing::info!("became the leader: reconciling TrainingJobs");
                metrics.leader.set(1);
                controller = Some(start());
            }
            (false, true) => {
                tracing::warn!("lost leadership: stopping the controller");
                metrics.leader.set(0);
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
    metrics.leader.set(0);
    leading
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Sets a flag when dropped (an aborted task drops its future).
    struct Stopped(Arc<AtomicUsize>);
    impl Drop for Stopped {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn only_the_leader_runs_the_controller() {
        let metrics = Arc::new(Metrics::new());
        let started = Arc::new(AtomicUsize::new(0));
        let stopped = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = watch::channel(false);
        let (stop, shutdown) = tokio::sync::oneshot::channel::<()>();
        let m = metrics.clone();
        let (s1, s2) = (started.clone(), stopped.clone());
        let follower = tokio::spawn(async move {
            follow_leadership(
                rx,
                &m,
                move || {
                    s1.fetch_add(1, Ordering::SeqCst);
                    let guard = Stopped(s2.clone());
                    tokio::spawn(async move {
                        let _guard = guard;
                        std::future::pending::<()>().await
                    })
                },
                async {
                    let _ = shutdown.await;
                },
            )
            .await
        });
        settle().await;
        assert_eq!(
            started.load(Ordering::SeqCst),
            0,
            "a follower does not reconcile"
        );
        assert!(metrics.render().contains("inframind_controller_leader 0"));

        tx.send(true).unwrap();
        settle().await;
        assert_eq!(started.load(Ordering::SeqCst), 1);
        assert!(metrics.render().contains("inframind_controller_leader 1"));

        tx.send(false).unwrap();
        settle().await;
        assert_eq!(
            stopped.load(Ordering::SeqCst),
            1,
            "stopped on losing the Lease"
        );
        assert!(metrics.render().contains("inframind_controller_leader 0"));

        tx.send(true).unwrap();
        settle().await;
        assert_eq!(started.load(Ordering::SeqCst), 2);

        stop.send(()).unwrap();
        let rx = follower.await.unwrap();
        settle().await;
        assert_eq!(stopped.load(Ordering::SeqCst), 2, "stopped on shutdown");
        assert!(metrics.render().contains("inframind_controller_leader 0"));
        drop(rx);
    }
}
