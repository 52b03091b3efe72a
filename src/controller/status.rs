//! Building the status the controller writes: phases, conditions, metrics, gate verdicts.
//!
//! Pure: each function takes the previous status and what happened, and returns the whole next
//! status (server-side apply owns every field it sends, so each write carries all of them).
//! Conditions keep their `lastTransitionTime` while their status does not change.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::crd::{
    finite, k8s_time, GateResult, HoldoutMetrics, JobRef, Phase, RunMetrics, TrainingJobStatus,
};
use super::gates::ActiveComparison;
use crate::evaluation::{Metrics, Split};
use crate::model::ModelMeta;

/// Condition: a model was trained (False with the reason when training failed).
pub const TRAINED: &str = "Trained";
/// Condition: the model passed its gates.
pub const GATES_PASSED: &str = "GatesPassed";
/// Condition: the model is the active one.
pub const PROMOTED: &str = "Promoted";

/// Why a run did not produce a model, as a status reason.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// The spec is invalid; fixed by editing it.
    InvalidSpec(String),
    /// The telemetry store could not be reached or read; retried with backoff.
    StoreUnavailable(String),
    /// Too few successful runs; retried on the next spec change, schedule tick or trigger.
    InsufficientData(String),
    /// The registry could not be read before training (the active model); retried with backoff.
    RegistryUnavailable(String),
    /// Fitting or saving failed.
    TrainingFailed(String),
    /// The run was interrupted (the process running it stopped).
    Interrupted(String),
    /// The batch/v1 Job running it ended without reporting (not retried: a crash would repeat).
    JobFailed(String),
}

impl Failure {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::InvalidSpec(_) => "InvalidSpec",
            Failure::StoreUnavailable(_) => "StoreUnavailable",
            Failure::InsufficientData(_) => "InsufficientData",
            Failure::RegistryUnavailable(_) => "RegistryUnavailable",
            Failure::TrainingFailed(_) => "TrainingFailed",
            Failure::Interrupted(_) => "Interrupted",
            Failure::JobFailed(_) => "JobFailed",
        }
    }

    /// The detail.
    pub fn detail(&self) -> &str {
        match self {
            Failure::InvalidSpec(m)
            | Failure::StoreUnavailable(m)
            | Failure::InsufficientData(m)
            | Failure::RegistryUnavailable(m)
            | Failure::TrainingFailed(m)
            | Failure::Interrupted(m)
            | Failure::JobFailed(m) => m,
        }
    }

    /// Whether the controller retries the same generation with backoff (the cause is outside
    /// the spec and the data: a server that may come back).
    pub fn retried(&self) -> bool {
        matches!(
            self,
            Failure::StoreUnavailable(_)
                | Failure::RegistryUnavailable(_)
                | Failure::Interrupted(_)
        )
    }

    /// The status message.
    pub fn message(&self) -> String {
        let what = match self {
            Failure::InvalidSpec(_) => "invalid spec",
            Failure::StoreUnavailable(_) => "telemetry store unreachable",
            Failure::InsufficientData(_) => "not enough data to train",
            Failure::RegistryUnavailable(_) => "model registry unreachable",
            Failure::TrainingFailed(_) => "training failed",
            Failure::Interrupted(_) => "training was interrupted",
            Failure::JobFailed(_) => "training Job failed",
        };
        let next = if let Failure::Interrupted(_) = self {
            "; retried if its spec generation had not finished, otherwise at the next schedule tick or trigger"
        } else if self.retried() {
            "; retrying with backoff"
        } else {
            match self {
                Failure::InvalidSpec(_) => "; fix the spec to retry",
                _ => "; retried on the next spec change, schedule tick or trigger",
            }
        };
        format!("{what}: {}{next}", self.detail())
    }
}

/// How promotion went.
#[derive(Debug, Clone, PartialEq)]
pub enum Promotion {
    /// The version is active; the one it replaced.
    Promoted {
        /// What was active before.
        previous: Option<String>,
    },
    /// The spec says not to promote.
    NotRequested,
    /// A gate failed.
    GatesFailed,
    /// Another version became active while training; the comparison no longer holds.
    ActiveChanged {
        /// The version compared with.
        compared: Option<String>,
        /// The version now active.
        now: Option<String>,
    },
    /// The registry could not be reached; retried with backoff.
    Pending {
        /// The error.
        error: String,
    },
}

/// What a finished training run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The new version.
    pub version: String,
    /// Holdout metrics.
    pub metrics: RunMetrics,
    /// Gate verdicts.
    pub gates: Vec<GateResult>,
    /// The active version it was compared with.
    pub compared_with: Option<String>,
    /// Whether the model was published to the shared registry (Redis), with the error if not.
    pub published: Result<(), String>,
    /// Promotion.
    pub promotion: Promotion,
}

/// Sets condition `type_` on `conds`, keeping `lastTransitionTime` when the status is unchanged.
pub fn set_condition(
    conds: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    let transition = conds
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| k8s_time(now));
    conds.retain(|c| c.type_ != type_);
    conds.push(Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: truncate(message, 32_000),
        observed_generation: generation,
        last_transition_time: transition,
    });
    conds.sort_by_key(|c| condition_rank(&c.type_));
}

fn condition_rank(t: &str) -> usize {
    [TRAINED, GATES_PASSED, PROMOTED]
        .iter()
        .position(|x| *x == t)
        .unwrap_or(usize::MAX)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The condition of `type_`, if set.
pub fn condition<'a>(status: &'a TrainingJobStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

/// How a run starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    /// `Running`, or `Pending` while waiting for a slot or a Job's pod.
    pub phase: Phase,
    /// Who runs it (`status.runner`).
    pub runner: String,
    /// Why it runs.
    pub reason: String,
    /// The generation it trains.
    pub generation: Option<i64>,
    /// The schedule tick it covers.
    pub tick: Option<DateTime<Utc>>,
    /// The Job running it.
    pub job: Option<JobRef>,
}

/// The status at the start of a run: results of the previous run cleared, history kept.
pub fn started(prev: &TrainingJobStatus, start: &Start, now: DateTime<Utc>) -> TrainingJobStatus {
    let Start {
        phase,
        runner,
        reason,
        generation,
        tick: schedule_tick,
        job,
    } = start.clone();
    let mut conditions = prev.conditions.clone();
    let msg = match (&job, phase) {
        (Some(j), _) => format!(
            "training in batch/v1 Job {}/{} ({reason})",
            j.namespace, j.name
        ),
        (None, Phase::Pending) => format!("waiting for a training slot ({reason})"),
        (None, _) => format!("training ({reason})"),
    };
    set_condition(
        &mut conditions,
        TRAINED,
        "Unknown",
        "Training",
        &msg,
        generation,
        now,
    );
    conditions.retain(|c| c.type_ == TRAINED);
    TrainingJobStatus {
        phase: Some(phase),
        message: Some(msg),
        observed_generation: prev.observed_generation,
        conditions,
        runner: Some(runner),
        run_reason: Some(reason),
        start_time: Some(k8s_time(now)),
        completion_time: None,
        last_schedule_time: schedule_tick
            .map(k8s_time)
            .or_else(|| prev.last_schedule_time.clone()),
        job,
        last_trigger: prev.last_trigger.clone(),
        trigger_check: prev.trigger_check.clone(),
        ..Default::default()
    }
}

/// Metrics for the status from a model's metadata and the active model's comparison.
pub fn run_metrics(meta: &ModelMeta, active: Option<&ActiveComparison>) -> RunMetrics {
    let h = |m: &Metrics| HoldoutMetrics {
        mae_seconds: finite(m.mae_s),
        r2: finite(m.r2),
        rank_accuracy: m.rank_accuracy.and_then(finite),
        rank_pairs: m.rank_pairs as u64,
        train_rows: m.train_rows as u64,
        test_rows: m.test_rows as u64,
    };
    RunMetrics {
        split: meta.split,
        mae_seconds: finite(meta.metrics().mae_s),
        r2: finite(meta.metrics().r2),
        rank_accuracy: meta.metrics().rank_accuracy.and_then(finite),
        rows: meta.window.rows as u64,
        random_holdout: h(&meta.random_holdout),
        temporal_holdout: h(&meta.temporal_holdout),
        active_mae_seconds: active.and_then(|a| finite(a.mae_s)),
        active_rank_accuracy: active.and_then(|a| a.rank_accuracy).and_then(finite),
    }
}

/// `random` or `temporal`.
pub fn split_name(s: Split) -> &'static str {
    match s {
        Split::Random => "random",
        Split::Temporal => "temporal",
    }
}

/// What a run's promotion step means for the status: the phase, the promotion fields and the
/// `Promoted` condition.
struct PromotionStatus {
    phase: Phase,
    promoted: bool,
    previous: Option<String>,
    pending: Option<String>,
    message: String,
    /// The `Promoted` condition: status, reason, message.
    condition: (&'static str, &'static str, String),
}

/// One line saying what was trained and how it scored.
fn headline(o: &Outcome) -> String {
    let m = &o.metrics;
    format!(
        "{} trained on {} runs: MAE {} s, R² {}, rank accuracy {} ({} holdout)",
        o.version,
        m.rows,
        m.mae_seconds
            .map(|v| format!("{v:.2}"))
            .unwrap_or_else(|| "-".into()),
        m.r2.map(|v| format!("{v:.3}"))
            .unwrap_or_else(|| "-".into()),
        m.rank_accuracy
            .map(|v| format!("{v:.3}"))
            .unwrap_or_else(|| "-".into()),
        split_name(m.split)
    )
}

/// Sets the `GatesPassed` condition from the gate verdicts.
fn set_gates_condition(
    s: &mut TrainingJobStatus,
    o: &Outcome,
    failed: Option<&GateResult>,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    match failed {
        None => set_condition(
            &mut s.conditions,
            GATES_PASSED,
            "True",
            "AllGatesPassed",
            &o.gates
                .iter()
                .map(|g| g.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
            generation,
            now,
        ),
        Some(g) => set_condition(
            &mut s.conditions,
            GATES_PASSED,
            "False",
            "GateFailed",
            &format!("gate {} failed: {}", g.gate, g.message),
            generation,
            now,
        ),
    }
}

/// The status fields the promotion outcome decides.
fn promotion_status(o: &Outcome, headline: &str, failed: Option<&GateResult>) -> PromotionStatus {
    let publish_note = match &o.published {
        Ok(()) => String::new(),
        Err(e) => format!(" (stored locally only, publishing to the registry failed: {e})"),
    };
    let (phase, promoted, previous, pending, message, condition) = match &o.promotion {
        Promotion::Promoted { previous } => (
            Phase::Succeeded,
            true,
            previous.clone(),
            None,
            format!(
                "{headline}; promoted (previous: {})",
                previous.as_deref().unwrap_or("none")
            ),
            ("True", "Promoted", format!("{} is the active model", o.version)),
        ),
        Promotion::NotRequested => (
            Phase::Succeeded,
            false,
            None,
            None,
            format!("{headline}; passed its gates, not promoted (spec.promote is false){publish_note}"),
            (
                "False",
                "PromotionDisabled",
                "spec.promote is false".to_string(),
            ),
        ),
        Promotion::GatesFailed => {
            // GatesFailed is only set with a failing gate; name it, or say so if that ever breaks.
            let (gate, why) = failed
                .as_ref()
                .map(|g| (g.gate.to_string(), g.message.clone()))
                .unwrap_or_else(|| ("(unknown)".into(), "no verdict recorded".into()));
            (
                Phase::Failed,
                false,
                None,
                None,
                format!("{headline}; stored but not promoted: gate {gate} failed: {why}{publish_note}"),
                ("False", "GatesFailed", format!("gate {gate} failed")),
            )
        }
        Promotion::ActiveChanged { compared, now: cur } => (
            Phase::Failed,
            false,
            None,
            None,
            format!(
                "{headline}; not promoted: the active model changed from {} to {} during training, so the comparison no longer holds (re-run to compare with it){publish_note}",
                compared.as_deref().unwrap_or("none"),
                cur.as_deref().unwrap_or("none")
            ),
            (
                "False",
                "ActiveChanged",
                "the active model changed during training".to_string(),
            ),
        ),
        Promotion::Pending { error } => (
            Phase::Failed,
            false,
            None,
            Some(o.version.clone()),
            format!(
                "{headline}; passed its gates but promotion is pending: model registry unreachable ({error}); the model is stored and promotion is retried with backoff"
            ),
            (
                "False",
                "RegistryUnavailable",
                format!("promotion pending: {error}"),
            ),
        ),
    };
    PromotionStatus {
        phase,
        promoted,
        previous,
        pending,
        message,
        condition,
    }
}

/// The status after a run that produced a model.
pub fn finished(
    prev: &TrainingJobStatus,
    o: &Outcome,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> TrainingJobStatus {
    let mut s = prev.clone();
    let headline = headline(o);
    let failed = super::gates::first_failure(&o.gates).cloned();
    set_condition(
        &mut s.conditions,
        TRAINED,
        "True",
        "Trained",
        &headline,
        generation,
        now,
    );
    set_gates_condition(&mut s, o, failed.as_ref(), generation, now);
    let p = promotion_status(o, &headline, failed.as_ref());
    set_condition(
        &mut s.conditions,
        PROMOTED,
        p.condition.0,
        p.condition.1,
        &p.condition.2,
        generation,
        now,
    );
    s.phase = Some(p.phase);
    s.message = Some(p.message);
    s.observed_generation = generation.or(s.observed_generation);
    s.completion_time = Some(k8s_time(now));
    s.version = Some(o.version.clone());
    s.promoted = Some(p.promoted);
    s.previous_version = p.previous;
    s.compared_with = o.compared_with.clone();
    s.pending_promotion = p.pending;
    s.metrics = Some(o.metrics.clone());
    s.gates = o.gates.clone();
    s.failed_gate = failed;
    s
}

/// The status after a pending promotion was retried.
pub fn promotion_retried(
    prev: &TrainingJobStatus,
    version: &str,
    result: &Promotion,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> TrainingJobStatus {
    let mut s = prev.clone();
    match result {
        Promotion::Promoted { previous } => {
            set_condition(
                &mut s.conditions,
                PROMOTED,
                "True",
                "Promoted",
                &format!("{version} is the active model"),
                generation,
                now,
            );
            s.phase = Some(Phase::Succeeded);
            s.promoted = Some(true);
            s.previous_version = previous.clone();
            s.pending_promotion = None;
            s.message = Some(format!(
                "{version} promoted after the registry came back (previous: {})",
                previous.as_deref().unwrap_or("none")
            ));
        }
        Promotion::ActiveChanged { compared, now: cur } => {
            set_condition(
                &mut s.conditions,
                PROMOTED,
                "False",
                "ActiveChanged",
                "the active model changed before the promotion could be retried",
                generation,
                now,
            );
            s.pending_promotion = None;
            s.message = Some(format!(
                "{version} not promoted: the active model changed from {} to {} before the registry came back (re-run to compare with it)",
                compared.as_deref().unwrap_or("none"),
                cur.as_deref().unwrap_or("none")
            ));
        }
        Promotion::Pending { error } => {
            set_condition(
                &mut s.conditions,
                PROMOTED,
                "False",
                "RegistryUnavailable",
                &format!("promotion pending: {error}"),
                generation,
                now,
            );
        }
        Promotion::NotRequested | Promotion::GatesFailed => {}
    }
    s.completion_time = Some(k8s_time(now));
    s
}

/// The status after a run that produced no model. A retried failure leaves
/// `observedGeneration` alone, so the generation is still due.
pub fn failed(
    prev: &TrainingJobStatus,
    f: &Failure,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> TrainingJobStatus {
    let mut s = prev.clone();
    let message = f.message();
    set_condition(
        &mut s.conditions,
        TRAINED,
        "False",
        f.reason(),
        &message,
        generation,
        now,
    );
    s.conditions.retain(|c| c.type_ == TRAINED);
    s.phase = Some(super::crd::Phase::Failed);
    s.message = Some(message);
    if !f.retried() {
        s.observed_generation = generation.or(s.observed_generation);
    }
    s.completion_time = Some(k8s_time(now));
    s.version = None;
    s.promoted = None;
    s.previous_version = None;
    s.compared_with = None;
    s.pending_promotion = None;
    s.metrics = None;
    s.gates = Vec::new();
    s.failed_gate = None;
    s.job = None;
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::crd::chrono_time;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn outcome(promotion: Promotion, gates: Vec<GateResult>) -> Outcome {
        Outcome {
            version: "model_v20260301_000000".into(),
            metrics: RunMetrics {
                mae_seconds: Some(12.5),
                r2: Some(0.91),
                rows: 480,
                ..Default::default()
            },
            gates,
            compared_with: Some("model_v0".into()),
            published: Ok(()),
            promotion,
        }
    }

    fn gate(name: &str, passed: bool) -> GateResult {
        GateResult {
            gate: name.into(),
            passed,
            value: Some(12.5),
            threshold: Some(10.0),
            by: (!passed).then_some(2.5),
            message: format!("{name} verdict"),
        }
    }

    #[test]
    fn a_run_clears_old_results_and_keeps_history() {
        let t0 = t("2026-03-01T00:00:00Z");
        let prev = finished(
            &TrainingJobStatus::default(),
            &outcome(
                Promotion::Promoted { previous: None },
                vec![gate("maxMaeSeconds", true)],
            ),
            Some(1),
            t0,
        );
        let s = started(
            &prev,
            &Start {
                phase: Phase::Running,
                runner: "controller/pod-a".into(),
                reason: "spec generation 2".into(),
                generation: Some(2),
                tick: None,
                job: None,
            },
            t0,
        );
        assert_eq!(s.phase, Some(Phase::Running));
        assert_eq!(
            s.observed_generation,
            Some(1),
            "not observed until finished"
        );
        assert!(s.version.is_none() && s.metrics.is_none() && s.promoted.is_none());
        assert_eq!(s.conditions.len(), 1);
        assert_eq!(s.conditions[0].status, "Unknown");
        assert_eq!(s.run_reason.as_deref(), Some("spec generation 2"));
    }

    #[test]
    fn promotion_gate_failure_and_pending_have_distinct_statuses() {
        let now = t("2026-03-01T01:00:00Z");
        let s = finished(
            &TrainingJobStatus::default(),
            &outcome(
                Promotion::Promoted {
                    previous: Some("model_v0".into()),
                },
                vec![gate("maxMaeSeconds", true)],
            ),
            Some(4),
            now,
        );
        assert_eq!(s.phase, Some(Phase::Succeeded));
        assert_eq!(s.promoted, Some(true));
        assert_eq!(s.previous_version.as_deref(), Some("model_v0"));
        assert_eq!(s.observed_generation, Some(4));
        assert_eq!(condition(&s, PROMOTED).unwrap().status, "True");

        let s = finished(
            &TrainingJobStatus::default(),
            &outcome(
                Promotion::GatesFailed,
                vec![gate("maxMaeSeconds", false), gate("minR2", true)],
            ),
            Some(4),
            now,
        );
        assert_eq!(s.phase, Some(Phase::Failed));
        assert_eq!(s.promoted, Some(false));
        assert_eq!(s.failed_gate.as_ref().unwrap().gate, "maxMaeSeconds");
        assert_eq!(s.failed_gate.as_ref().unwrap().by, Some(2.5));
        assert_eq!(condition(&s, GATES_PASSED).unwrap().reason, "GateFailed");
        assert!(s.message.unwrap().contains("stored but not promoted"));

        let s = finished(
            &TrainingJobStatus::default(),
            &outcome(
                Promotion::Pending {
                    error: "connection refused".into(),
                },
                vec![gate("maxMaeSeconds", true)],
            ),
            Some(4),
            now,
        );
        assert_eq!(s.phase, Some(Phase::Failed));
        assert_eq!(
            s.pending_promotion.as_deref(),
            Some("model_v20260301_000000")
        );
        assert_eq!(
            condition(&s, PROMOTED).unwrap().reason,
            "RegistryUnavailable"
        );
        let s2 = promotion_retried(
            &s,
            "model_v20260301_000000",
            &Promotion::Promoted { previous: None },
            Some(4),
            now,
        );
        assert_eq!(s2.phase, Some(Phase::Succeeded));
        assert_eq!(s2.promoted, Some(true));
        assert!(s2.pending_promotion.is_none());
    }

    #[test]
    fn retried_failures_leave_the_generation_due() {
        let now = t("2026-03-01T00:00:00Z");
        let prev = TrainingJobStatus {
            observed_generation: Some(1),
            ..Default::default()
        };
        let s = failed(
            &prev,
            &Failure::StoreUnavailable("connection refused".into()),
            Some(2),
            now,
        );
        assert_eq!(s.observed_generation, Some(1));
        assert_eq!(s.phase, Some(Phase::Failed));
        let c = condition(&s, TRAINED).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "StoreUnavailable")
        );
        assert!(c.message.contains("retrying with backoff"), "{}", c.message);
        let s = failed(
            &prev,
            &Failure::InsufficientData("too few successful runs".into()),
            Some(2),
            now,
        );
        assert_eq!(
            s.observed_generation,
            Some(2),
            "terminal for this generation"
        );
    }

    #[test]
    fn transition_time_moves_only_when_the_status_changes() {
        let t0 = t("2026-03-01T00:00:00Z");
        let t1 = t("2026-03-01T00:10:00Z");
        let mut c = Vec::new();
        set_condition(
            &mut c,
            TRAINED,
            "False",
            "StoreUnavailable",
            "a",
            Some(1),
            t0,
        );
        set_condition(
            &mut c,
            TRAINED,
            "False",
            "StoreUnavailable",
            "b",
            Some(1),
            t1,
        );
        assert_eq!(chrono_time(&c[0].last_transition_time), t0);
        set_condition(&mut c, TRAINED, "True", "Trained", "c", Some(1), t1);
        assert_eq!(chrono_time(&c[0].last_transition_time), t1);
        assert_eq!(c.len(), 1);
    }
}
