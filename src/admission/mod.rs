//! Admission: an AdmissionReview for a pod in, the response (with its JSON patch) out. Pure.
//!
//! The contract follows the VPA admission controller: only Pod CREATE is acted on; the
//! response always allows; the patch only adds or replaces; annotations record what changed and
//! why; anything doubtful admits the pod unchanged with a warning (fail open).

pub mod cache_injection;
pub mod contract;
pub mod holdout;
pub mod limits;
pub mod patch;
pub mod quantity;
pub mod recognise;

use std::sync::Arc;

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::Model;
use crate::optimizer::recommender::Recommender;
use crate::optimizer::{describe, Action, Decision};
use crate::stats::PipelineStats;
use patch::{annotation_ops, original, resource_ops};
use quantity::{format_cpu, format_mem};

pub use contract::{
    DECISION_ANNOTATION, DEFAULT_CONCURRENCY_ENV, DRY_RUN_ANNOTATION, SKIP_ANNOTATION,
};

/// Where a pod may land, as bounds on its decision: the webhook's Node watch implements it.
pub trait NodeBounds: Send + Sync + std::fmt::Debug {
    /// The largest allocatable cpu and memory among the nodes `pod` may land on, if known.
    fn capacity_for(&self, pod: &Value) -> Option<crate::optimizer::NodeCapacity>;
}

/// `kind` of a request's object.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct GroupVersionKind {
    /// API group ("" for core).
    #[serde(default)]
    pub group: String,
    /// Version.
    #[serde(default)]
    pub version: String,
    /// Kind.
    #[serde(default)]
    pub kind: String,
}

/// The part of an AdmissionRequest InfraMind reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    /// Echoed in the response.
    pub uid: String,
    /// Kind of the object.
    #[serde(default)]
    pub kind: GroupVersionKind,
    /// CREATE, UPDATE, DELETE or CONNECT.
    #[serde(default)]
    pub operation: String,
    /// Namespace of the object.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The object being admitted.
    #[serde(default)]
    pub object: Option<Value>,
}

/// An incoming AdmissionReview.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReview {
    /// Echoed in the response (admission.k8s.io/v1).
    pub api_version: String,
    /// Echoed in the response (AdmissionReview).
    pub kind: String,
    /// The request.
    pub request: AdmissionRequest,
}

/// The response body of an AdmissionReview, serialised as the API documents (base64 patch).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    /// The request's uid.
    pub uid: String,
    /// Always true: InfraMind never denies.
    pub allowed: bool,
    /// `JSONPatch` when a patch is present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<String>,
    /// Base64 of the JSON patch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// Warnings shown to the client (kubectl prints them).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub warnings: Vec<String>,
}

/// The response envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReviewResponse {
    /// The request's apiVersion.
    pub api_version: String,
    /// The request's kind.
    pub kind: String,
    /// The response.
    pub response: AdmissionResponse,
}

/// What happened to one admission (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Resources and concurrency changed.
    Mutated,
    /// Annotated with what would have changed.
    DryRun,
    /// In the control group: decided and annotated, left as requested.
    Holdout,
    /// Cold start on a pipeline with no history: annotated, left as requested.
    ColdStart,
    /// Left as requested because no change was confidently better (or none was feasible).
    Kept,
    /// Opted out, already handled, or nothing to act on.
    Unchanged,
    /// Not a Pod, or not a CREATE.
    Ignored,
    /// Something was wrong: admitted unchanged with a warning.
    Error,
}

impl Outcome {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Mutated => "mutated",
            Outcome::DryRun => "dry_run",
            Outcome::Holdout => "holdout",
            Outcome::ColdStart => "cold_start",
            Outcome::Kept => "kept",
            Outcome::Unchanged => "unchanged",
            Outcome::Ignored => "ignored",
            Outcome::Error => "error",
        }
    }
}

/// How the webhook behaves.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Annotate only, for every pod.
    pub dry_run: bool,
    /// Environment variables that carry the build concurrency.
    pub concurrency_env: Vec<String>,
    /// On cold starts (no model, or a pipeline it never saw) apply the guarded baseline
    /// (otherwise the pod keeps its request and is only annotated).
    pub cold_start_apply_defaults: bool,
    /// Assembles decisions (the same way the API and the CLI do).
    pub recommender: Recommender,
    /// Nodes from the Node watch: each decision is bounded by the largest node the pod may land
    /// on (configured node bounds, when set, override them).
    pub nodes: Option<Arc<dyn NodeBounds>>,
    /// Each namespace's LimitRange and ResourceQuota bounds, kept current by the webhook.
    pub policies: Arc<limits::Policies>,
    /// Share of decided pods left as requested as the control group (by pod uid). The library
    /// default holds none out; the webhook's `--holdout-rate` defaults to 5 %.
    pub holdout_rate: f64,
    /// The shared build cache applied decisions configure (none by default).
    pub cache: cache_injection::CacheSettings,
    /// Which cache claims are bound where (the webhook's watch), when a claim is configured.
    pub claims: Option<Arc<dyn cache_injection::ClaimIndex>>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            dry_run: false,
            concurrency_env: DEFAULT_CONCURRENCY_ENV
                .iter()
                .map(|s| s.to_string())
                .collect(),
            cold_start_apply_defaults: false,
            recommender: Recommender::default(),
            nodes: None,
            policies: Arc::new(limits::Policies::new()),
            holdout_rate: 0.0,
            cache: cache_injection::CacheSettings::default(),
            claims: None,
        }
    }
}

/// The result of one admission.
#[derive(Debug, Clone)]
pub struct Admission {
    /// The response to send.
    pub response: AdmissionResponse,
    /// What happened.
    pub outcome: Outcome,
    /// The decision, when one was made.
    pub decision: Option<Decision>,
}

/// The pod admitted as it came; `reason`, when given, is the warning the client sees.
fn unchanged(uid: &str, outcome: Outcome, reason: Option<&str>) -> Admission {
    let warning = reason.map(|r| format!("inframind: admitted unchanged: {r}"));
    Admission {
        response: AdmissionResponse {
            uid: uid.to_string(),
            allowed: true,
            patch_type: None,
            patch: None,
            warnings: warning.into_iter().collect(),
        },
        outcome,
        decision: None,
    }
}

/// [`unchanged`], keeping the decision that was made (for metrics and logs).
fn unchanged_after(decision: Decision, uid: &str, outcome: Outcome, reason: &str) -> Admission {
    Admission {
        decision: Some(decision),
        ..unchanged(uid, outcome, Some(reason))
    }
}

/// Longest value copied from the pod (pipeline, branch, image, …) into an annotation, bytes. A
/// longer one keeps its first bytes and ends with `~` and 16 hex digits of its SHA-256
/// ([`contract::cap_bytes`], the one capping rule),
/// so several copies of a huge value cannot push the pod over the API server's annotation limit.
pub const MAX_COPIED_VALUE_BYTES: usize = 1024;
/// The API server's limit on the total size of a pod's annotations (keys and values), bytes.
pub const ANNOTATIONS_LIMIT_BYTES: usize = 256 * 1024;

/// `value` capped to [`MAX_COPIED_VALUE_BYTES`] (see there).
pub fn capped(value: &str) -> String {
    contract::cap_bytes(value, MAX_COPIED_VALUE_BYTES)
}

/// Total size of the pod's annotations (keys and values, as the API server counts) once
/// `added` are set.
pub fn annotations_size_after(pod: &Value, added: &[(String, String)]) -> usize {
    let mut sizes: std::collections::HashMap<&str, usize> = pod
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let len = v.as_str().map_or_else(|| v.to_string().len(), str::len);
                    (k.as_str(), len)
                })
                .collect()
        })
        .unwrap_or_default();
    for (k, v) in added {
        sizes.insert(k.as_str(), v.len());
    }
    sizes.iter().map(|(k, v)| k.len() + v).sum()
}

/// The annotations that explain a decision (values copied from the pod are [`capped`]).
pub fn decision_annotations(
    d: &Decision,
    what: &str,
    ctx: &crate::BuildContext,
    container: &str,
    original: &patch::Original,
) -> Vec<(String, String)> {
    let a = |k: &str, v: String| (k.to_string(), capped(&v));
    // Kept pods show what was proposed, so the recommendation can be judged.
    let shown = match d.action {
        Action::Apply => d.config,
        Action::Unchanged => d.proposal.unwrap_or(d.config),
    };
    let mut notes = vec![
        a(contract::DECISION_ANNOTATION, what.to_string()),
        a(contract::PIPELINE, ctx.pipeline.clone()),
        a(contract::BRANCH, ctx.branch.clone()),
        a(contract::IMAGE, ctx.image.clone()),
        a(contract::NODE_TYPE, ctx.node.clone()),
        a(contract::CONTAINER, container.to_string()),
        a(
            contract::RECOMMENDATION,
            format!(
                "cpu={} memory={} concurrency={}",
                format_cpu(shown.cpu),
                format_mem(shown.mem_gb),
                shown.concurrency
            ),
        ),
        a(
            contract::MODEL_VERSION,
            d.model_version.clone().unwrap_or_else(|| "none".into()),
        ),
        a(
            contract::PREDICTED_DURATION,
            d.predicted_duration_s
                .map_or_else(String::new, |p| format!("{p:.0}")),
        ),
        a(contract::CONFIDENCE, format!("{:.2}", d.confidence)),
        a(contract::EXPLORED, d.explored.to_string()),
        a(contract::POLICY, d.policy.name().to_string()),
        a(contract::RATIONALE, d.rationale.clone()),
        a(
            contract::ORIGINAL,
            serde_json::to_string(original).unwrap_or_default(),
        ),
    ];
    if let Some(r) = d.request_confidence.filter(|_| d.request.is_some()) {
        notes.push(a(contract::CONFIDENCE_VS_REQUEST, format!("{r:.2}")));
    }
    if let Some(reason) = &d.reason {
        notes.push(a(contract::REASON, reason.clone()));
    }
    if let Some(e) = d.expected_cache.as_ref().filter(|_| !d.cold_start) {
        let state = e
            .state
            .map_or("unknown", crate::cache_advice::CacheState::as_str);
        notes.push(a(contract::EXPECTED_CACHE, format!("{state}: {}", e.basis)));
    }
    notes
}

/// What the build container asked for, if it asked for cpu or memory: missing memory from the
/// configured defaults, missing concurrency one job per requested core (`make -j$(nproc)`).
pub fn requested(
    original: &patch::Original,
    defaults: &crate::BuildConfig,
) -> Option<crate::BuildConfig> {
    let read = |key: &str, parse: fn(&str) -> Option<f64>| {
        original.requests.get(key).and_then(|v| match v {
            Value::String(s) => parse(s),
            Value::Number(n) => n.as_f64(),
            _ => None,
        })
    };
    let cpu = read("cpu", quantity::parse_cpu).filter(|c| *c > 0.0);
    let mem = read("memory", quantity::parse_mem_gb).filter(|m| *m > 0.0);
    if cpu.is_none() && mem.is_none() {
        return None;
    }
    let cpu = cpu.unwrap_or(defaults.cpu);
    Some(crate::BuildConfig {
        cpu,
        mem_gb: mem.unwrap_or(defaults.mem_gb),
        concurrency: original
            .concurrency
            .filter(|j| *j > 0)
            .unwrap_or(cpu.ceil().max(1.0) as u32),
    })
}

fn encode(ops: &[json_patch::PatchOperation]) -> Option<String> {
    serde_json::to_vec(ops)
        .ok()
        .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
}

/// Decides what to do with one AdmissionRequest. Never fails: every path allows the pod.
pub fn admit(
    req: &AdmissionRequest,
    settings: &Settings,
    model: Option<&Model>,
    stats: &dyn Fn(&str) -> Option<Arc<PipelineStats>>,
    now: DateTime<Utc>,
) -> Admission {
    let uid = req.uid.as_str();
    if req.kind.kind != "Pod" || !req.kind.group.is_empty() || req.operation != "CREATE" {
        return unchanged(uid, Outcome::Ignored, None);
    }
    let Some(pod) = req.object.as_ref().filter(|o| o.is_object()) else {
        return unchanged(
            uid,
            Outcome::Error,
            Some("the request carries no pod object"),
        );
    };
    let meta = recognise::PodMeta::new(pod);
    if meta.flag(SKIP_ANNOTATION) || meta.annotation(DECISION_ANNOTATION).is_some() {
        return unchanged(uid, Outcome::Unchanged, None);
    }
    let Some(chosen) = recognise::choose_container(pod) else {
        return unchanged(
            uid,
            Outcome::Unchanged,
            Some("no build container (all are known sidecars, or the named one is missing)"),
        );
    };
    let i = chosen.index;
    let namespace = recognise::namespace_of(req.namespace.as_deref(), pod);
    let Some(ctx) = recognise::context(pod, i, namespace) else {
        return unchanged(
            uid,
            Outcome::Unchanged,
            Some("no pipeline could be recognised (set label inframind.io/pipeline)"),
        );
    };
    let container = pod
        .pointer(&format!("/spec/containers/{i}/name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let stats = stats(&ctx.pipeline);
    let seed = Recommender::seed(uid);
    let before = original(pod, i, &settings.concurrency_env);
    let request = requested(&before, &settings.recommender.optimizer.config.defaults);
    let node = settings
        .nodes
        .as_ref()
        .and_then(|pool| pool.capacity_for(pod));
    let mut decision = settings.recommender.recommend_for(
        &ctx,
        request.as_ref(),
        node,
        stats.as_deref(),
        model,
        now,
        seed,
    );
    // The operator's opt-in: cold starts run the guarded baseline rather than the request.
    if settings.cold_start_apply_defaults && decision.cold_start {
        if let (Action::Unchanged, Some(p)) = (decision.action, decision.proposal) {
            decision.action = Action::Apply;
            decision.config = p;
            decision.reason = None;
            decision.rationale = format!(
                "cold start: the guarded baseline {} applied (cold-start-apply-defaults)",
                describe(&p)
            );
        }
    }

    // The namespace's LimitRange and ResourceQuota are hard bounds: built-in admission would
    // reject a pod outside them after we answer.
    let mut bounds = Vec::new();
    if let Some(policy) = settings
        .policies
        .get(namespace)
        .filter(|_| decision.action == Action::Apply)
    {
        match limits::bound(pod, i, &decision.config, &policy) {
            // The decided memory respects the RSS and OOM floors; a LimitRange that cuts it
            // below both that and the pod's own request could OOM a build that would have run:
            // keep the request instead.
            Ok((config, _))
                if config.mem_gb < decision.config.mem_gb
                    && request.as_ref().is_none_or(|r| config.mem_gb < r.mem_gb) =>
            {
                let reason = format!(
                    "the namespace's LimitRange caps memory at {:.2} GB, below the {:.2} GB the memory guards ask for",
                    config.mem_gb, decision.config.mem_gb
                );
                return unchanged(uid, Outcome::Kept, Some(&reason));
            }
            Ok((config, notes)) => {
                decision.config = config;
                bounds = notes;
            }
            Err(reason) => {
                return unchanged_after(decision, uid, Outcome::Error, &reason);
            }
        }
    }

    let no_history = stats.is_none() && decision.cold_start && decision.action == Action::Unchanged;
    let dry_run = settings.dry_run || meta.flag(DRY_RUN_ANNOTATION);
    // The control group is drawn only among pods that would be changed, so holdout and applied
    // builds differ in one thing: whether the recommendation was applied.
    let held_out = !no_history
        && !dry_run
        && decision.action == Action::Apply
        && holdout::held_out(uid, settings.holdout_rate);
    let (what, outcome) = match (no_history, decision.action, dry_run, held_out) {
        (true, _, _, _) => (contract::DECISION_UNCHANGED, Outcome::ColdStart),
        (false, Action::Unchanged, _, _) => (contract::DECISION_UNCHANGED, Outcome::Kept),
        (false, Action::Apply, true, _) => (contract::DECISION_DRY_RUN, Outcome::DryRun),
        (false, Action::Apply, false, true) => (contract::DECISION_HOLDOUT, Outcome::Holdout),
        (false, Action::Apply, false, false) => (contract::DECISION_APPLIED, Outcome::Mutated),
    };
    let cache = cache_plan(
        pod,
        &meta,
        i,
        namespace,
        settings,
        stats.as_deref(),
        outcome,
    );
    let mut ops = Vec::new();
    if outcome == Outcome::Mutated {
        // The cache's variables join the reporter's: added where the container does not set them.
        let mut extra_env = reporter_env(&ctx, &container);
        if let Some(cache_injection::CachePlan::Inject(_, env, _)) = &cache {
            extra_env.extend(env.iter().cloned());
        }
        match resource_ops(
            pod,
            i,
            &decision.config,
            &settings.concurrency_env,
            &extra_env,
        ) {
            Ok(r) => ops.extend(r),
            Err(reason) => {
                return unchanged_after(decision, uid, Outcome::Error, &reason);
            }
        }
    }
    if outcome == Outcome::Holdout {
        // Left as requested, but the reporter still learns who it is (and that it is a
        // holdout): identity variables only, no resource or concurrency change.
        ops.extend(patch::missing_env_ops(
            pod,
            i,
            &reporter_env(&ctx, &container),
        ));
    }
    let mut notes = decision_annotations(&decision, what, &ctx, &container, &before);
    match cache {
        Some(cache_injection::CachePlan::Inject(volume, _, note)) => {
            ops.extend(volume);
            notes.push((contract::CACHE.into(), note));
        }
        Some(cache_injection::CachePlan::Skip(why)) => notes.push((contract::CACHE.into(), why)),
        None => {}
    }
    notes.push((contract::CONTAINER_CHOICE.into(), chosen.how.clone()));
    if !bounds.is_empty() {
        notes.push((contract::BOUNDS.into(), bounds.join("; ")));
    }
    if no_history {
        notes.retain(|(k, _)| k != contract::REASON);
        notes.push((
            contract::REASON.into(),
            "no history for this pipeline yet: left as requested".into(),
        ));
    }
    if held_out {
        notes.push((
            contract::REASON.into(),
            format!(
                "control group (holdout rate {:.0}%): left as requested to measure the effect",
                settings.holdout_rate * 100.0
            ),
        ));
    }
    if annotations_size_after(pod, &notes) >= ANNOTATIONS_LIMIT_BYTES {
        // The API server would refuse the pod: never make a build worse than without us.
        let reason = format!(
            "its annotations would exceed the API server's {ANNOTATIONS_LIMIT_BYTES}-byte limit"
        );
        return unchanged_after(decision, uid, Outcome::Unchanged, &reason);
    }
    ops.extend(annotation_ops(pod, &notes));
    ops.extend(patch::label_ops(
        pod,
        &[(contract::MANAGED_LABEL.to_string(), "true".to_string())],
    ));
    Admission {
        response: AdmissionResponse {
            uid: uid.to_string(),
            allowed: true,
            patch_type: Some("JSONPatch".into()),
            patch: encode(&ops),
            warnings: Vec::new(),
        },
        outcome,
        decision: Some(decision),
    }
}

/// The shared build cache for an opted-in pod the decision changes (see `cache_injection`), or
/// why the pod goes without it; `None` when no cache is configured or the pod is not opted in.
fn cache_plan(
    pod: &Value,
    meta: &recognise::PodMeta,
    i: usize,
    namespace: &str,
    settings: &Settings,
    stats: Option<&PipelineStats>,
    outcome: Outcome,
) -> Option<cache_injection::CachePlan> {
    let cache = &settings.cache;
    if !cache.configured() || !cache.opted_in(namespace, meta.annotation(contract::CACHE_OPT)) {
        return None;
    }
    if outcome != Outcome::Mutated {
        return Some(cache_injection::CachePlan::Skip(format!(
            "not configured: the pod is left as requested ({})",
            outcome.as_str()
        )));
    }
    let size = cache_injection::size_gb(stats.map(|s| &s.history), cache.max_size_gb);
    Some(cache_injection::plan(
        pod,
        i,
        namespace,
        cache,
        settings.claims.as_deref(),
        size,
    ))
}

/// What `inframind report` reads inside the build container: who it is and what it asked for
/// (downward API for the pod's uid, name and requests; literals for the recognised context).
pub fn reporter_env(ctx: &crate::BuildContext, container: &str) -> Vec<Value> {
    let field = |name: &str, path: &str| serde_json::json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}});
    let resource = |name: &str, res: &str, divisor: &str| serde_json::json!({"name": name, "valueFrom": {"resourceFieldRef": {"containerName": container, "resource": res, "divisor": divisor}}});
    let literal = |name: &str, value: &str| serde_json::json!({"name": name, "value": value});
    vec![
        field(contract::ENV_POD_UID, "metadata.uid"),
        field(contract::ENV_POD_NAME, "metadata.name"),
        field(contract::ENV_POD_NAMESPACE, "metadata.namespace"),
        field(
            contract::ENV_DECISION,
            &format!("metadata.annotations['{}']", contract::DECISION_ANNOTATION),
        ),
        literal(contract::ENV_PIPELINE, &ctx.pipeline),
        literal(contract::ENV_BRANCH, &ctx.branch),
        literal(contract::ENV_IMAGE, &ctx.image),
        literal(contract::ENV_NODE_TYPE, &ctx.node),
        resource(contract::ENV_CPU_REQUEST_MILLI, "requests.cpu", "1m"),
        resource(contract::ENV_MEM_REQUEST_MIB, "requests.memory", "1Mi"),
    ]
}

/// Wraps a response in the envelope the request came in.
pub fn envelope(
    review_api_version: &str,
    review_kind: &str,
    response: AdmissionResponse,
) -> AdmissionReviewResponse {
    AdmissionReviewResponse {
        api_version: review_api_version.to_string(),
        kind: review_kind.to_string(),
        response,
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz;
