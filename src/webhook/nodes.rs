//! Node bounds: what a pod can actually get. A Node watch (read-only: list and watch nodes) keeps
//! every node's labels and allocatable cpu and memory in memory; each admission bounds its
//! decision by the largest allocatable cpu and memory among the nodes the pod may land on (its
//! nodeSelector and required node affinity), else among all nodes. A recommendation above that
//! would leave the pod pending forever, which is worse than a slow build.
//!
//! Configured node bounds (`--node-max-cpu`, `--node-max-mem-gb`) override the watch; without
//! cluster access the webhook keeps the configured bounds.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::Api;
use serde_json::Value;

use crate::admission::quantity::{parse_cpu, parse_mem_gb};
use crate::optimizer::NodeCapacity;

/// One schedulable node: its labels and allocatable resources.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Allocatable vCPU.
    pub cpu: f64,
    /// Allocatable memory, GB.
    pub mem_gb: f64,
}

/// A Node's labels and allocatable, if it is schedulable and reports both.
pub fn node_info(node: &Node) -> Option<NodeInfo> {
    if node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
    {
        return None;
    }
    let alloc = node.status.as_ref()?.allocatable.as_ref()?;
    Some(NodeInfo {
        labels: node.metadata.labels.clone().unwrap_or_default(),
        cpu: parse_cpu(&alloc.get("cpu")?.0)?,
        mem_gb: parse_mem_gb(&alloc.get("memory")?.0)?,
    })
}

fn term_matches(term: &Value, labels: &BTreeMap<String, String>) -> bool {
    let exprs = term
        .get("matchExpressions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    exprs.iter().all(|e| {
        let key = e.get("key").and_then(Value::as_str).unwrap_or("");
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let have = labels.get(key).map(String::as_str);
        match e.get("operator").and_then(Value::as_str).unwrap_or("") {
            "In" => have.is_some_and(|h| values.contains(&h)),
            "NotIn" => have.is_none_or(|h| !values.contains(&h)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            // Gt/Lt and unknown operators: do not narrow (the bound stays the wider one).
            _ => true,
        }
    })
}

/// Whether `pod` may be scheduled on a node with `labels` (nodeSelector and required node
/// affinity; the terms of the latter are alternatives).
pub fn may_land_on(pod: &Value, labels: &BTreeMap<String, String>) -> bool {
    let selector_ok = pod
        .pointer("/spec/nodeSelector")
        .and_then(Value::as_object)
        .is_none_or(|sel| {
            sel.iter()
                .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
        });
    let terms = pod
        .pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array);
    let affinity_ok = match terms {
        Some(t) if !t.is_empty() => t.iter().any(|term| term_matches(term, labels)),
        _ => true,
    };
    selector_ok && affinity_ok
}

/// The largest allocatable cpu and memory among the nodes `pod` may land on, else among all
/// nodes; `None` when no node is known.
pub fn capacity(nodes: &[NodeInfo], pod: &Value) -> Option<NodeCapacity> {
    let largest = |it: &mut dyn Iterator<Item = &NodeInfo>| {
        it.fold(None, |acc: Option<NodeCapacity>, n| {
            Some(match acc {
                None => NodeCapacity {
                    cpu: n.cpu,
                    mem_gb: n.mem_gb,
                },
                Some(a) => NodeCapacity {
                    cpu: a.cpu.max(n.cpu),
                    mem_gb: a.mem_gb.max(n.mem_gb),
                },
            })
        })
    };
    largest(&mut nodes.iter().filter(|n| may_land_on(pod, &n.labels)))
        .or_else(|| largest(&mut nodes.iter()))
}

/// The nodes known to the webhook, replaced whole on every change.
#[derive(Debug, Default)]
pub struct NodePool {
    nodes: ArcSwap<Vec<NodeInfo>>,
}

impl NodePool {
    /// An empty pool (no bound from nodes until the watch delivers them).
    pub fn new() -> NodePool {
        NodePool::default()
    }

    /// Replaces the known nodes.
    pub fn replace(&self, nodes: Vec<NodeInfo>) {
        self.nodes.store(Arc::new(nodes));
    }

    /// Nodes known now.
    pub fn len(&self) -> usize {
        self.nodes.load().len()
    }

    /// Whether no node is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound for `pod` (see `capacity`).
    pub fn capacity_for(&self, pod: &Value) -> Option<NodeCapacity> {
        capacity(&self.nodes.load(), pod)
    }
}

impl crate::admission::NodeBounds for NodePool {
    fn capacity_for(&self, pod: &Value) -> Option<NodeCapacity> {
        NodePool::capacity_for(self, pod)
    }
}

/// Keeps `pool` in step with the cluster's Nodes (list + watch, read-only) until aborted.
pub fn spawn_watch(api: Api<Node>, pool: Arc<NodePool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (reader, writer) = reflector::store();
        let mut events = reflector(
            writer,
            watcher(api, watcher::Config::default()).default_backoff(),
        )
        .boxed();
        let mut failing = false;
        while let Some(event) = events.next().await {
            // Every event, InitDone included: the store swaps in the initial list only then.
            match event {
                Ok(_) => {
                    failing = false;
                    pool.replace(reader.state().iter().filter_map(|n| node_info(n)).collect());
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "node watch failing; bounds use the nodes last seen");
                        failing = true;
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(instance: &str, cpu: f64, mem: f64) -> NodeInfo {
        NodeInfo {
            labels: [(
                "node.kubernetes.io/instance-type".to_string(),
                instance.to_string(),
            )]
            .into(),
            cpu,
            mem_gb: mem,
        }
    }

    #[test]
    fn bounds_follow_the_nodes_a_pod_may_land_on() {
        let nodes = vec![
            node("m5.2xlarge", 7.9, 30.0),
            node("m5.2xlarge", 7.8, 31.0),
            node("r6i.4xlarge", 15.8, 120.0),
        ];
        let free = json!({"spec": {"containers": []}});
        assert_eq!(
            capacity(&nodes, &free),
            Some(NodeCapacity {
                cpu: 15.8,
                mem_gb: 120.0
            })
        );
        let selected =
            json!({"spec": {"nodeSelector": {"node.kubernetes.io/instance-type": "m5.2xlarge"}}});
        assert_eq!(
            capacity(&nodes, &selected),
            Some(NodeCapacity {
                cpu: 7.9,
                mem_gb: 31.0
            })
        );
        let affinity = json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["m5.2xlarge"]}]}]}}}}});
        assert_eq!(capacity(&nodes, &affinity).map(|c| c.cpu), Some(7.9));
        let not_in = json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "node.kubernetes.io/instance-type", "operator": "NotIn", "values": ["m5.2xlarge"]}]}]}}}}});
        assert_eq!(capacity(&nodes, &not_in).map(|c| c.mem_gb), Some(120.0));
        // A selector no node matches: all nodes.
        let none = json!({"spec": {"nodeSelector": {"node.kubernetes.io/instance-type": "x9"}}});
        assert_eq!(capacity(&nodes, &none).map(|c| c.cpu), Some(15.8));
        assert_eq!(capacity(&[], &free), None);
    }

    /// The Node watch against kube-rs's tower_test mock of the API server (no cluster here):
    /// the list is answered with two nodes, watch requests are held open, as the API does.
    #[tokio::test]
    async fn the_node_watch_fills_the_pool_and_bounds_admissions() {
        use http::{Request, Response};
        use kube::client::Body;
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let api: Api<Node> = Api::all(kube::Client::new(service, "default"));
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some((req, send)) = handle.next_request().await {
                assert_eq!(req.method(), "GET", "the watch only reads");
                assert!(req.uri().path().ends_with("/api/v1/nodes"), "{}", req.uri());
                if req.uri().query().unwrap_or("").contains("watch=true") {
                    held.push(send);
                    continue;
                }
                let list = json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {"resourceVersion": "7"}, "items": [
                    {"metadata": {"name": "small", "labels": {"node.kubernetes.io/instance-type": "m5.2xlarge"}},
                     "status": {"allocatable": {"cpu": "7910m", "memory": "30Gi"}}},
                    {"metadata": {"name": "big", "labels": {"node.kubernetes.io/instance-type": "r6i.4xlarge"}},
                     "status": {"allocatable": {"cpu": "15910m", "memory": "120Gi"}}}]});
                send.send_response(
                    Response::builder()
                        .status(200)
                        .body(Body::from(serde_json::to_vec(&list).unwrap()))
                        .unwrap(),
                );
            }
        });
        let pool = Arc::new(NodePool::new());
        let watch = spawn_watch(api, pool.clone());
        for _ in 0..200 {
            if pool.len() == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(pool.len(), 2);
        let pod =
            json!({"spec": {"nodeSelector": {"node.kubernetes.io/instance-type": "m5.2xlarge"}}});
        assert_eq!(
            pool.capacity_for(&pod),
            Some(NodeCapacity {
                cpu: 7.91,
                mem_gb: 30.0
            })
        );

        // An admission of that pod explores and decides within the small node only.
        let settings = crate::admission::Settings {
            recommender: crate::optimizer::recommender::Recommender::new(
                crate::optimizer::Optimizer::new(crate::optimizer::OptimizerConfig {
                    exploration_rate: 1.0,
                    exploration: crate::optimizer::Exploration::Epsilon,
                    min_confidence: 0.0,
                    ..Default::default()
                }),
            ),
            cold_start_apply_defaults: true,
            nodes: Some(pool.clone()),
            ..Default::default()
        };
        let stats = Arc::new(crate::stats::PipelineStats {
            pipeline: "acme/api".into(),
            last_success: Some(crate::BuildConfig {
                cpu: 8.0,
                mem_gb: 28.0,
                concurrency: 8,
            }),
            ..Default::default()
        });
        for uid in 0..20 {
            let req: crate::admission::AdmissionRequest = serde_json::from_value(json!({"uid": format!("u{uid}"), "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
                "object": {"metadata": {"labels": {"inframind.io/pipeline": "acme/api"}}, "spec": {"nodeSelector": {"node.kubernetes.io/instance-type": "m5.2xlarge"},
                    "containers": [{"name": "build", "image": "gcc:14", "resources": {"requests": {"cpu": "8", "memory": "28Gi"}}}]}}}))
            .unwrap();
            let s = stats.clone();
            let a = crate::admission::admit(
                &req,
                &settings,
                None,
                &move |_| Some(s.clone()),
                chrono::Utc::now(),
            );
            let d = a.decision.unwrap();
            if d.action == crate::optimizer::Action::Apply {
                assert!(
                    d.config.cpu <= 7.91 && d.config.mem_gb <= 30.0,
                    "{:?}",
                    d.config
                );
            }
        }
        watch.abort();
        server.abort();
    }

    #[test]
    fn allocatable_is_read_and_cordoned_nodes_are_skipped() {
        let n: Node =
            serde_json::from_value(json!({"metadata": {"name": "a", "labels": {"k": "v"}},
            "status": {"allocatable": {"cpu": "7910m", "memory": "31Gi"}}}))
            .unwrap();
        let info = node_info(&n).unwrap();
        assert_eq!((info.cpu, info.mem_gb), (7.91, 31.0));
        let cordoned: Node = serde_json::from_value(
            json!({"metadata": {"name": "b"}, "spec": {"unschedulable": true},
            "status": {"allocatable": {"cpu": "8", "memory": "32Gi"}}}),
        )
        .unwrap();
        assert_eq!(node_info(&cordoned), None);
    }
}
