//! Keeps every namespace's LimitRange and ResourceQuota bounds in memory (kube-runtime
//! reflectors over a cluster-wide LIST and WATCH; read-only RBAC), so admission bounds its
//! decisions without calling the API server while a pod waits.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{LimitRange, ResourceQuota};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};

use crate::admission::limits::{NamespacePolicy, Policies};

/// Every namespace's policy from the reflectors' current contents.
pub fn policies_from(
    limit_ranges: &Store<LimitRange>,
    quotas: &Store<ResourceQuota>,
) -> HashMap<String, NamespacePolicy> {
    let lrs = limit_ranges.state();
    let qs = quotas.state();
    let mut namespaces: Vec<String> = lrs
        .iter()
        .filter_map(|o| o.namespace())
        .chain(qs.iter().filter_map(|o| o.namespace()))
        .collect();
    namespaces.sort();
    namespaces.dedup();
    namespaces
        .into_iter()
        .map(|ns| {
            let l: Vec<&LimitRange> = lrs
                .iter()
                .filter(|o| o.namespace().as_deref() == Some(ns.as_str()))
                .map(|o| o.as_ref())
                .collect();
            let q: Vec<&ResourceQuota> = qs
                .iter()
                .filter(|o| o.namespace().as_deref() == Some(ns.as_str()))
                .map(|o| o.as_ref())
                .collect();
            let policy = NamespacePolicy::from_objects(&l, &q);
            (ns, policy)
        })
        .collect()
}

/// Watches LimitRanges and ResourceQuotas in every namespace and republishes `policies` on each
/// change. Errors are retried with backoff and logged once per outage; until the first list
/// arrives nothing is bounded (as without the watch).
pub fn spawn(client: Client, policies: Arc<Policies>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (lr_reader, lr_writer) = reflector::store::<LimitRange>();
        let (q_reader, q_writer) = reflector::store::<ResourceQuota>();
        let lrs = reflector::reflector(
            lr_writer,
            watcher(
                Api::<LimitRange>::all(client.clone()),
                watcher::Config::default(),
            ),
        )
        .default_backoff()
        .map(|e| e.map(|_| ()));
        let qs = reflector::reflector(
            q_writer,
            watcher(
                Api::<ResourceQuota>::all(client),
                watcher::Config::default(),
            ),
        )
        .default_backoff()
        .map(|e| e.map(|_| ()));
        let mut events = futures::stream::select(lrs.boxed(), qs.boxed());
        let mut down = false;
        while let Some(event) = events.next().await {
            match event {
                Ok(()) => {
                    if down {
                        tracing::info!("LimitRange/ResourceQuota watch recovered");
                        down = false;
                    }
                    policies.replace(policies_from(&lr_reader, &q_reader));
                }
                Err(e) => {
                    if !down {
                        tracing::warn!(error = %e, "watching LimitRanges/ResourceQuotas failed; decisions use the bounds last seen");
                        down = true;
                    }
                }
            }
        }
    })
}
