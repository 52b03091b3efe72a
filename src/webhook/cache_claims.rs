//! Which namespaces hold the shared build cache's PersistentVolumeClaim, bound: a kube-runtime
//! reflector over that one claim name in every namespace (list and watch on
//! persistentvolumeclaims), so admission never mounts a claim that would leave a pod Pending.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};

use crate::admission::cache_injection::ClaimIndex;

/// The claims seen by the watch.
#[derive(Clone)]
pub struct ClaimWatch {
    store: Store<PersistentVolumeClaim>,
    listed: Arc<AtomicBool>,
}

impl std::fmt::Debug for ClaimWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimWatch")
            .field("claims", &self.store.state().len())
            .field("listed", &self.listed.load(Ordering::Relaxed))
            .finish()
    }
}

impl ClaimIndex for ClaimWatch {
    fn bound(&self, namespace: &str, name: &str) -> Option<bool> {
        if !self.listed.load(Ordering::Acquire) {
            return None;
        }
        let claim = self
            .store
            .get(&ObjectRef::<PersistentVolumeClaim>::new(name).within(namespace));
        Some(
            claim.is_some_and(|c| {
                c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
            }),
        )
    }
}

/// Watches the claims named `claim` in every namespace; errors are retried with backoff.
pub fn spawn(client: Client, claim: &str) -> ClaimWatch {
    let (reader, writer) = reflector::store::<PersistentVolumeClaim>();
    let listed = Arc::new(AtomicBool::new(false));
    let watch = ClaimWatch {
        store: reader,
        listed: listed.clone(),
    };
    let config = watcher::Config::default().fields(&format!("metadata.name={claim}"));
    let stream = reflector::reflector(
        writer,
        watcher(Api::<PersistentVolumeClaim>::all(client), config),
    )
    .default_backoff();
    tokio::spawn(async move {
        let mut stream = stream.boxed();
        let mut down = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::InitDone) => listed.store(true, Ordering::Release),
                Ok(_) => down = false,
                Err(e) => {
                    if !down {
                        tracing::warn!(error = %e, "watching the build cache claims failed; the claims last seen stand");
                        down = true;
                    }
                }
            }
        }
    });
    watch
}
