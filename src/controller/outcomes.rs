//! The pod outcome watcher: every finished build pod the webhook decided on becomes a telemetry
//! row (see `crate::outcome` for what is recorded).
//!
//! It watches pods labelled `inframind.io/managed=true` in all namespaces, on the leader only.
//! A restart re-lists every such pod, so no finished pod that still exists is missed, and the
//! store records each pod's outcome once (`pod-<uid>`, `Store::record_outcome`). A row the store
//! could not take is kept and retried. Pods deleted while no controller was running are not
//! recorded (a finalizer would close that gap, at the price of pods stuck terminating whenever
//! InfraMind is down; not done).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;

use super::context::Context;
use crate::outcome::{run_from_pod, MANAGED_LABEL};
use crate::record::RunRecord;
use crate::telemetry::Store;

/// Node label holding the instance type.
const INSTANCE_TYPE: &str = "node.kubernetes.io/instance-type";

/// What the watcher remembers between events.
#[derive(Debug, Default)]
pub struct Recorder {
    done: HashSet<String>,
    pending: HashMap<String, RunRecord>,
    node_types: HashMap<String, String>,
    /// Where newly recorded builds are counted (none in tests that need no metrics).
    metrics: Option<Arc<super::metrics::Metrics>>,
}

impl Recorder {
    /// A recorder that counts what it records in `metrics`.
    pub fn with_metrics(metrics: Arc<super::metrics::Metrics>) -> Recorder {
        Recorder {
            metrics: Some(metrics),
            ..Default::default()
        }
    }

    /// Instance type of `node`, looked up once per node.
    async fn node_type(&mut self, nodes: &Api<Node>, node: &str) -> Option<String> {
        if let Some(t) = self.node_types.get(node) {
            return Some(t.clone());
        }
        match nodes.get(node).await {
            Ok(n) => {
                let t = n
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(INSTANCE_TYPE))
                    .cloned()?;
                self.node_types.insert(node.to_string(), t.clone());
                Some(t)
            }
            Err(e) => {
                tracing::debug!(node, error = %e, "cannot read the node's instance type");
                None
            }
        }
    }

    /// Handles one observed pod: records its outcome if it has finished and is not yet recorded.
    pub async fn observe(&mut self, pod: &Pod, nodes: &Api<Node>, store: &Store) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        if self.done.contains(&uid) {
            return;
        }
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        // Cheap check first: only finished builds need the node lookup.
        if run_from_pod(pod, None).is_none() {
            return;
        }
        let node_type = match &node {
            Some(n) => self.node_type(nodes, n).await,
            None => None,
        };
        match run_from_pod(pod, node_type.as_deref()) {
            None => {}
            Some(Err(reason)) => {
                tracing::warn!(pod = ?pod.metadata.name, namespace = ?pod.metadata.namespace, reason, "finished build pod cannot be recorded");
                self.done.insert(uid);
            }
            Some(Ok(run)) => {
                if let Some(note) = crate::outcome::note_from_pod(pod) {
                    // Best effort: the note explains a row, it is not the row.
                    if let Err(e) = store.record_note(&run.run_id, &note).await {
                        tracing::debug!(run_id = %run.run_id, error = %e, "cannot record the decision note");
                    }
                }
                self.pending.insert(uid, run);
                self.flush(store).await;
            }
        }
    }

    /// Writes every pending row; keeps the ones the store could not take.
    pub async fn flush(&mut self, store: &Store) {
        let pending: Vec<(String, RunRecord)> = self.pending.drain().collect();
        for (uid, run) in pending {
            match store.record_outcome(&run, chrono::Utc::now()).await {
                Ok(new) => {
                    if new {
                        if let Some(m) = &self.metrics {
                            m.run_recorded(&run);
                        }
                        tracing::info!(run_id = %run.run_id, pipeline = %run.pipeline, success = run.success, oom = run.oom_killed, duration_s = run.duration_s, "recorded a build outcome");
                    }
                    self.done.insert(uid);
                }
                Err(e) => {
                    tracing::warn!(run_id = %run.run_id, error = %e, "cannot record a build outcome yet; will retry");
                    self.pending.insert(uid, run);
                }
            }
        }
    }

    /// Pods whose outcome is recorded.
    pub fn recorded(&self) -> usize {
        self.done.len()
    }

    /// Rows waiting for the store.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// Watches managed pods through `client` and records finished builds into the store, until the
/// stream ends (it does not, unless the task is aborted).
pub async fn watch(client: Client, store: Store, recorder: &mut Recorder) {
    let pods: Api<Pod> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client);
    let config = watcher::Config::default().labels(&format!("{MANAGED_LABEL}=true"));
    let mut events = watcher(pods, config)
        .default_backoff()
        .applied_objects()
        .boxed();
    let mut retry = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            next = events.next() => match next {
                Some(Ok(pod)) => recorder.observe(&pod, &nodes, &store).await,
                Some(Err(e)) => tracing::warn!(error = %e, "pod watch error; retrying"),
                None => break,
            },
            _ = retry.tick() => if recorder.pending() > 0 { recorder.flush(&store).await },
        }
    }
}

/// Runs the watcher with the controller's store, reconnecting to the store when it is down.
pub async fn run(ctx: Arc<Context>) {
    let mut recorder = Recorder::with_metrics(ctx.metrics.clone());
    loop {
        match ctx.store().await {
            Ok(store) => watch(ctx.client.clone(), store, &mut recorder).await,
            Err(e) => {
                tracing::warn!(error = %e.detail(), "pod outcome watcher waits for the telemetry store");
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        }
    }
}
