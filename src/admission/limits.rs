//! The namespace's LimitRange and ResourceQuota as hard bounds on a decision. Pure.
//!
//! Built-in admission runs LimitRanger's defaulting *before* mutating webhooks and validates the
//! pod against the LimitRange and the ResourceQuota *after* them, so a decision outside the
//! namespace's bounds would make the API server reject the pod: the build would not start because
//! of us. As the VPA admission controller does, the decision is therefore clipped:
//!
//! - LimitRange `Container` min/max bound the build container's request and its (scaled) limit;
//! - LimitRange `Pod` min/max bound the pod's sums (the other containers keep their requests);
//! - `maxLimitRequestRatio`: limits are scaled with the request, so the container's ratio is the
//!   pod's own; the pod-level ratio is kept by bounding the request;
//! - ResourceQuota: when the headroom (hard − used) cannot take a raised request or limit, that
//!   resource is not raised (lowering is always allowed). Scoped quotas are treated as applying:
//!   at worst we raise less.
//!
//! Values clipped to an upper bound are floored to the quantity lattice (millicores, MiB), so the
//! rounding up in `quantity::format_*` never crosses the bound.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::{LimitRange, ResourceQuota};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::Value;

use super::quantity::{parse_cpu, parse_mem_gb};
use crate::BuildConfig;

/// Bounds on one resource at one scope (cores or GiB).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Range {
    /// Least request (and limit).
    pub min: Option<f64>,
    /// Greatest limit (and request).
    pub max: Option<f64>,
    /// Greatest limit / request.
    pub max_ratio: Option<f64>,
}

impl Range {
    /// The tighter of two ranges (several LimitRanges all apply).
    fn tighten(self, other: Range) -> Range {
        let pick = |a: Option<f64>, b: Option<f64>, f: fn(f64, f64) -> f64| match (a, b) {
            (Some(a), Some(b)) => Some(f(a, b)),
            (a, b) => a.or(b),
        };
        Range {
            min: pick(self.min, other.min, f64::max),
            max: pick(self.max, other.max, f64::min),
            max_ratio: pick(self.max_ratio, other.max_ratio, f64::min),
        }
    }
}

/// One resource's bounds at container and pod scope, and quota headroom.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ResourceBounds {
    /// LimitRange type `Container`.
    pub container: Range,
    /// LimitRange type `Pod` (sums over the pod's containers).
    pub pod: Range,
    /// Quota left for requests (least over the quotas that track it).
    pub requests_headroom: Option<f64>,
    /// Quota left for limits.
    pub limits_headroom: Option<f64>,
}

/// What a namespace allows: cpu in cores, memory in GiB.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NamespacePolicy {
    /// cpu.
    pub cpu: ResourceBounds,
    /// memory.
    pub memory: ResourceBounds,
}

fn quantity(map: Option<&BTreeMap<String, Quantity>>, key: &str, memory: bool) -> Option<f64> {
    let q = map?.get(key)?;
    if memory {
        parse_mem_gb(&q.0)
    } else {
        parse_cpu(&q.0)
    }
}

impl NamespacePolicy {
    /// The policy the namespace's LimitRanges and ResourceQuotas make.
    pub fn from_objects(limit_ranges: &[&LimitRange], quotas: &[&ResourceQuota]) -> Self {
        let mut policy = NamespacePolicy::default();
        for item in limit_ranges
            .iter()
            .filter_map(|lr| lr.spec.as_ref())
            .flat_map(|s| s.limits.iter())
        {
            for (memory, key) in [(false, "cpu"), (true, "memory")] {
                let range = Range {
                    min: quantity(item.min.as_ref(), key, memory),
                    max: quantity(item.max.as_ref(), key, memory),
                    // A ratio is a plain number, not a memory size.
                    max_ratio: quantity(item.max_limit_request_ratio.as_ref(), key, false),
                };
                let bounds = if memory {
                    &mut policy.memory
                } else {
                    &mut policy.cpu
                };
                match item.type_.as_str() {
                    "Container" => bounds.container = bounds.container.tighten(range),
                    "Pod" => bounds.pod = bounds.pod.tighten(range),
                    _ => {}
                }
            }
        }
        for status in quotas.iter().filter_map(|q| q.status.as_ref()) {
            let left = |keys: &[&str], memory: bool| {
                keys.iter()
                    .filter_map(|k| {
                        let hard = quantity(status.hard.as_ref(), k, memory)?;
                        let used = quantity(status.used.as_ref(), k, memory).unwrap_or(0.0);
                        Some((hard - used).max(0.0))
                    })
                    .reduce(f64::min)
            };
            let least = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            for (memory, key) in [(false, "cpu"), (true, "memory")] {
                let req = left(&[&format!("requests.{key}"), key], memory);
                let lim = left(&[&format!("limits.{key}")], memory);
                let bounds = if memory {
                    &mut policy.memory
                } else {
                    &mut policy.cpu
                };
                bounds.requests_headroom = least(bounds.requests_headroom, req);
                bounds.limits_headroom = least(bounds.limits_headroom, lim);
            }
        }
        policy
    }

    /// Whether nothing bounds anything.
    pub fn is_unbounded(&self) -> bool {
        *self == NamespacePolicy::default()
    }
}

/// What the pod itself contributes to one resource's checks.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Shape {
    /// The build container's request before the change.
    pub request: Option<f64>,
    /// New limit / new request, when the build container has a limit (patch.rs scales limits
    /// in proportion, never below the request).
    pub limit_factor: Option<f64>,
    /// The other containers' requests, summed (a limit alone counts as the request).
    pub others_requests: f64,
    /// The other containers' limits, summed; `None` when one of them has no limit.
    pub others_limits: Option<f64>,
}

fn read(c: &Value, map: &str, key: &str, memory: bool) -> Result<Option<f64>, String> {
    match c.pointer(&format!("/resources/{map}/{key}")) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_str()
            .and_then(|s| {
                if memory {
                    parse_mem_gb(s)
                } else {
                    parse_cpu(s)
                }
            })
            .map(Some)
            .ok_or_else(|| format!("unreadable {key} quantity {v}")),
    }
}

/// The pod's shape for `key` (`cpu` or `memory`) around build container `i`.
pub fn shape(pod: &Value, i: usize, key: &str) -> Result<Shape, String> {
    let memory = key == "memory";
    let containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let mut shape = Shape {
        others_limits: Some(0.0),
        ..Shape::default()
    };
    for (k, c) in containers.iter().enumerate() {
        let request = read(c, "requests", key, memory)?;
        let limit = read(c, "limits", key, memory)?;
        if k == i {
            shape.request = request;
            shape.limit_factor = limit.map(|l| match request {
                Some(r) if r > 0.0 => (l / r).max(1.0),
                _ => 1.0,
            });
        } else {
            shape.others_requests += request.or(limit).unwrap_or(0.0);
            shape.others_limits = match (shape.others_limits, limit) {
                (Some(sum), Some(l)) => Some(sum + l),
                _ => None,
            };
        }
    }
    Ok(shape)
}

fn floor_to(x: f64, step: f64) -> f64 {
    ((x / step) + 1e-9).floor() * step
}

/// `want` for one resource, bounded; a note for each bound that moved it.
fn bound_one(
    what: &str,
    want: f64,
    shape: &Shape,
    b: &ResourceBounds,
    step: f64,
    notes: &mut Vec<String>,
) -> f64 {
    let k = shape.limit_factor;
    let mut lo: Vec<(f64, &str)> = Vec::new();
    let mut hi: Vec<(f64, &str)> = Vec::new();
    if let Some(min) = b.container.min {
        lo.push((min, "LimitRange container min"));
    }
    if let Some(max) = b.container.max {
        hi.push((max / k.unwrap_or(1.0), "LimitRange container max"));
    }
    if let Some(min) = b.pod.min {
        lo.push((min - shape.others_requests, "LimitRange pod min"));
    }
    if let Some(max) = b.pod.max {
        match (k, shape.others_limits) {
            (Some(k), Some(others)) => hi.push(((max - others) / k, "LimitRange pod max")),
            _ => hi.push((max - shape.others_requests, "LimitRange pod max")),
        }
    }
    if let (Some(ratio), Some(k), Some(others_lim)) = (b.pod.max_ratio, k, shape.others_limits) {
        // (others_lim + k·r) / (others_req + r) ≤ ratio, solved for r.
        let rhs = ratio * shape.others_requests - others_lim;
        if k > ratio {
            hi.push((rhs / (k - ratio), "LimitRange pod maxLimitRequestRatio"));
        } else if k < ratio {
            lo.push((-rhs / (ratio - k), "LimitRange pod maxLimitRequestRatio"));
        }
    }
    let (low, low_why) = lo
        .into_iter()
        .fold((0.0, ""), |a, b| if b.0 > a.0 { b } else { a });
    let (high, high_why) = hi
        .into_iter()
        .fold((f64::INFINITY, ""), |a, b| if b.0 < a.0 { b } else { a });
    let high = floor_to(high, step);
    let mut r = want;
    if low > high {
        let keep = shape.request.unwrap_or(want);
        notes.push(format!(
            "{what}: no request fits {low_why} and {high_why}; kept {keep:.3}"
        ));
        return keep;
    }
    if r > high {
        notes.push(format!(
            "{what}: {want:.3} clipped to {high:.3} by {high_why}"
        ));
        r = high;
    } else if r < low {
        notes.push(format!("{what}: {want:.3} raised to {low:.3} by {low_why}"));
        r = low;
    }
    let before = shape.request.unwrap_or(0.0);
    if r > before {
        let short_requests = b
            .requests_headroom
            .is_some_and(|h| shape.others_requests + r > h + 1e-9);
        let short_limits = match (k, b.limits_headroom) {
            (Some(k), Some(h)) => shape.others_limits.unwrap_or(0.0) + k * r > h + 1e-9,
            _ => false,
        };
        if short_requests || short_limits {
            // Prefer not to raise: the pod as the team wrote it is what the quota was sized for.
            let kept = shape.request.unwrap_or(r.min(low.max(before)));
            notes.push(format!(
                "{what}: not raised to {r:.3}: ResourceQuota headroom is short ({})",
                if short_requests { "requests" } else { "limits" }
            ));
            return kept.max(low);
        }
    }
    r
}

/// The decision bounded by the namespace's policy for build container `i`, and notes saying
/// which bound moved what; `Err` when the pod's own quantities cannot be read. Concurrency
/// shrinks with a clipped cpu, so the build does not oversubscribe its smaller share.
pub fn bound(
    pod: &Value,
    i: usize,
    config: &BuildConfig,
    policy: &NamespacePolicy,
) -> Result<(BuildConfig, Vec<String>), String> {
    let mut notes = Vec::new();
    if policy.is_unbounded() {
        return Ok((*config, notes));
    }
    let cpu = bound_one(
        "cpu",
        config.cpu,
        &shape(pod, i, "cpu")?,
        &policy.cpu,
        0.001,
        &mut notes,
    );
    let mem_gb = bound_one(
        "memory",
        config.mem_gb,
        &shape(pod, i, "memory")?,
        &policy.memory,
        1.0 / 1024.0,
        &mut notes,
    );
    let concurrency = if cpu < config.cpu && config.cpu > 0.0 {
        ((f64::from(config.concurrency) * cpu / config.cpu).round() as u32).max(1)
    } else {
        config.concurrency
    };
    Ok((
        BuildConfig {
            cpu,
            mem_gb,
            concurrency,
        },
        notes,
    ))
}

/// Namespace → policy, swapped whole by the watcher; read by admission without I/O.
#[derive(Debug, Default)]
pub struct Policies {
    map: ArcSwap<HashMap<String, Arc<NamespacePolicy>>>,
}

impl Policies {
    /// An empty set (nothing known: nothing bounded).
    pub fn new() -> Policies {
        Policies::default()
    }

    /// The policy of `namespace`, if any LimitRange or ResourceQuota is known there.
    pub fn get(&self, namespace: &str) -> Option<Arc<NamespacePolicy>> {
        self.map.load().get(namespace).cloned()
    }

    /// Sets one namespace's policy (tests and the watcher).
    pub fn set(&self, namespace: &str, policy: NamespacePolicy) {
        let mut map = (**self.map.load()).clone();
        map.insert(namespace.to_string(), Arc::new(policy));
        self.map.store(Arc::new(map));
    }

    /// Replaces every namespace's policy.
    pub fn replace(&self, map: HashMap<String, NamespacePolicy>) {
        self.map.store(Arc::new(
            map.into_iter().map(|(k, v)| (k, Arc::new(v))).collect(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limit_range(items: Value) -> LimitRange {
        serde_json::from_value(
            json!({"metadata": {"name": "lr", "namespace": "ci"}, "spec": {"limits": items}}),
        )
        .unwrap()
    }

    fn quota(hard: Value, used: Value) -> ResourceQuota {
        serde_json::from_value(json!({"metadata": {"name": "q"}, "spec": {"hard": hard}, "status": {"hard": hard, "used": used}})).unwrap()
    }

    const WANT: BuildConfig = BuildConfig {
        cpu: 8.0,
        mem_gb: 16.0,
        concurrency: 8,
    };

    fn build_pod(resources: Value) -> Value {
        json!({"spec": {"containers": [
            {"name": "build", "resources": resources},
            {"name": "helper", "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}}]}})
    }

    /// What patch.rs will write for the limit: the old limit scaled by new/old request.
    fn limit_after(old_req: f64, old_lim: f64, new_req: f64) -> f64 {
        (old_lim * new_req / old_req).max(new_req)
    }

    #[test]
    fn a_decision_over_the_container_max_is_clipped_and_its_limit_stays_under_it() {
        let lr = limit_range(json!([{"type": "Container",
            "max": {"cpu": "4", "memory": "12Gi"}, "min": {"cpu": "250m", "memory": "256Mi"},
            "maxLimitRequestRatio": {"cpu": "2", "memory": "1"}}]));
        let policy = NamespacePolicy::from_objects(&[&lr], &[]);
        let pod = build_pod(
            json!({"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "1500m", "memory": "2Gi"}}),
        );
        let (got, notes) = bound(&pod, 0, &WANT, &policy).unwrap();
        // cpu limit = 1.5 × request must stay ≤ 4: request ≤ 2.666.
        assert!((got.cpu - 2.666).abs() < 1e-9, "{got:?}");
        let lim = limit_after(1.0, 1.5, got.cpu);
        assert!(lim <= 4.0 && lim / got.cpu <= 2.0 + 1e-9);
        assert_eq!(got.mem_gb, 12.0);
        assert!(limit_after(2.0, 2.0, got.mem_gb) <= 12.0);
        assert_eq!(got.concurrency, 3, "concurrency follows the clipped cpu");
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("LimitRange container max"), "{notes:?}");
        // The formatted quantities stay within the bounds too.
        use crate::admission::quantity::{format_cpu, parse_cpu};
        assert!(parse_cpu(&format_cpu(lim)).unwrap() <= 4.0);
    }

    #[test]
    fn mins_raise_and_pod_bounds_count_the_other_containers() {
        let lr = limit_range(json!([
            {"type": "Container", "min": {"cpu": "1", "memory": "1Gi"}},
            {"type": "Pod", "max": {"cpu": "6", "memory": "8Gi"}, "maxLimitRequestRatio": {"cpu": "3"}}]));
        let policy = NamespacePolicy::from_objects(&[&lr], &[]);
        let small = BuildConfig {
            cpu: 0.5,
            mem_gb: 0.5,
            concurrency: 1,
        };
        let pod = build_pod(
            json!({"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}}),
        );
        let (got, _) = bound(&pod, 0, &small, &policy).unwrap();
        assert_eq!((got.cpu, got.mem_gb), (1.0, 1.0));
        let (got, notes) = bound(&pod, 0, &WANT, &policy).unwrap();
        // Pod max: helper limit 1 + 2 × r ≤ 6 → r ≤ 2.5; memory: 1 + 2 × r ≤ 8 → r ≤ 3.5.
        assert_eq!((got.cpu, got.mem_gb), (2.5, 3.5), "{notes:?}");
        // Pod ratio holds at the result: (1 + 2·2.5) / (0.5 + 2.5) = 2 ≤ 3.
        assert!((1.0 + 2.0 * got.cpu) / (0.5 + got.cpu) <= 3.0);
    }

    #[test]
    fn a_pod_ratio_the_other_containers_break_bounds_the_request_from_below() {
        let lr = limit_range(json!([{"type": "Pod", "maxLimitRequestRatio": {"cpu": "2"}}]));
        let policy = NamespacePolicy::from_objects(&[&lr], &[]);
        // Helper: request 0.5, limit 4 (ratio 8); build: request = limit.
        let pod = json!({"spec": {"containers": [
            {"name": "build", "resources": {"requests": {"cpu": "4"}, "limits": {"cpu": "4"}}},
            {"name": "helper", "resources": {"requests": {"cpu": "500m"}, "limits": {"cpu": "4"}}}]}});
        let low = BuildConfig { cpu: 1.0, ..WANT };
        let (got, notes) = bound(&pod, 0, &low, &policy).unwrap();
        // (4 + r) / (0.5 + r) ≤ 2 → r ≥ 3.
        assert_eq!(got.cpu, 3.0, "{notes:?}");
    }

    #[test]
    fn short_quota_headroom_means_no_raise_but_lowering_is_fine() {
        let q = quota(
            json!({"requests.cpu": "20", "requests.memory": "64Gi", "limits.cpu": "40"}),
            json!({"requests.cpu": "17", "requests.memory": "10Gi", "limits.cpu": "20"}),
        );
        let policy = NamespacePolicy::from_objects(&[], &[&q]);
        assert_eq!(policy.cpu.requests_headroom, Some(3.0));
        let pod = build_pod(json!({"requests": {"cpu": "2", "memory": "4Gi"}}));
        let (got, notes) = bound(&pod, 0, &WANT, &policy).unwrap();
        // 0.5 (helper) + 8 > 3: cpu stays at 2; memory 0.5 + 16 ≤ 54 is raised.
        assert_eq!((got.cpu, got.mem_gb), (2.0, 16.0));
        assert!(
            notes[0].contains("ResourceQuota headroom is short"),
            "{notes:?}"
        );
        let lower = BuildConfig { cpu: 1.0, ..WANT };
        assert_eq!(bound(&pod, 0, &lower, &policy).unwrap().0.cpu, 1.0);
    }

    #[test]
    fn no_policy_changes_nothing_and_bad_quantities_are_errors() {
        let pod = build_pod(json!({"requests": {"cpu": "lots"}}));
        let none = NamespacePolicy::default();
        assert_eq!(bound(&pod, 0, &WANT, &none).unwrap(), (WANT, vec![]));
        let lr = limit_range(json!([{"type": "Container", "max": {"cpu": "4"}}]));
        let policy = NamespacePolicy::from_objects(&[&lr], &[]);
        assert!(bound(&pod, 0, &WANT, &policy)
            .unwrap_err()
            .contains("unreadable cpu"));
        let policies = Policies::new();
        policies.set("ci", policy);
        assert!(policies.get("ci").is_some() && policies.get("other").is_none());
    }
}
