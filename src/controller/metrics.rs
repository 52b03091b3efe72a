//! The controller's Prometheus metrics (served on `/metrics` by every replica).

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// Counters, gauges and histograms the controller updates.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Reconciliations run.
    pub reconciliations: Counter,
    /// Reconciliations that failed, by error kind.
    pub failures: Family<Labels, Counter>,
    /// Training runs finished, by outcome (promoted, not_promoted, gates_failed, pending, failed).
    pub trainings: Family<Labels, Counter>,
    /// Models promoted.
    pub promotions: Counter,
    /// Retraining triggers fired, by kind.
    pub triggers: Family<Labels, Counter>,
    /// 1 while this replica holds the leader Lease.
    pub leader: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// Training duration, seconds.
    pub training_duration: Histogram,
    /// Reconcile duration, seconds.
    pub reconcile_duration: Histogram,
    /// The last trained model's headline holdout scores, by TrainingJob and metric
    /// (`mae_seconds`, `r2`, `rank_accuracy`); a metric without a value is not set.
    pub model_scores: Family<Labels, Gauge<f64, AtomicU64>>,
    /// Build outcomes the pod watcher recorded, by decision and result.
    runs_recorded: Family<crate::api_metrics::RunLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Fresh metrics in their own registry.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let reconciliations = Counter::<u64, AtomicU64>::default();
        let failures = Family::<Labels, Counter>::default();
        let trainings = Family::<Labels, Counter>::default();
        let promotions = Counter::<u64, AtomicU64>::default();
        let triggers = Family::<Labels, Counter>::default();
        let leader = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        let training_duration = Histogram::new(exponential_buckets(0.5, 2.0, 12));
        let reconcile_duration = Histogram::new(exponential_buckets(0.005, 4.0, 10));
        let model_scores = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        let runs_recorded = Family::<crate::api_metrics::RunLabel, Counter>::default();
        registry.register(
            "inframind_controller_runs_recorded",
            "Finished build pods the outcome watcher recorded, by decision and result",
            runs_recorded.clone(),
        );
        registry.register(
            "inframind_controller_reconciliations",
            "TrainingJob reconciliations run",
            reconciliations.clone(),
        );
        registry.register(
            "inframind_controller_reconcile_failures",
            "TrainingJob reconciliations that failed, by error",
            failures.clone(),
        );
        registry.register(
            "inframind_controller_trainings",
            "Training runs finished, by outcome",
            trainings.clone(),
        );
        registry.register(
            "inframind_controller_promotions",
            "Models promoted by the controller",
            promotions.clone(),
        );
        registry.register(
            "inframind_controller_triggers",
            "Automatic retraining triggers fired, by kind",
            triggers.clone(),
        );
        registry.register(
            "inframind_controller_leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        registry.register(
            "inframind_controller_training_duration_seconds",
            "Time to load data, fit, evaluate and store a model",
            training_duration.clone(),
        );
        registry.register(
            "inframind_controller_reconcile_duration_seconds",
            "Time per reconciliation",
            reconcile_duration.clone(),
        );
        registry.register(
            "inframind_controller_model_score",
            "The last trained model's holdout score, by TrainingJob and metric (mae_seconds, r2, rank_accuracy)",
            model_scores.clone(),
        );
        Metrics {
            runs_recorded,
            model_scores,
            registry,
            reconciliations,
            failures,
            trainings,
            promotions,
            triggers,
            leader,
            training_duration,
            reconcile_duration,
        }
    }

    /// Counts a failed reconciliation.
    pub fn failure(&self, error: &str) {
        self.failures
            .get_or_create(&vec![("error".to_string(), error.to_string())])
            .inc();
    }

    /// Counts a finished training run.
    pub fn training(&self, outcome: &str) {
        self.trainings
            .get_or_create(&vec![("outcome".to_string(), outcome.to_string())])
            .inc();
    }

    /// Records the scores of the model a TrainingJob (`namespace/name`) just trained.
    pub fn scores(&self, job: &str, m: &super::crd::RunMetrics) {
        for (metric, v) in [
            ("mae_seconds", m.mae_seconds),
            ("r2", m.r2),
            ("rank_accuracy", m.rank_accuracy),
        ] {
            if let Some(v) = v {
                self.model_scores
                    .get_or_create(&vec![
                        ("trainingjob".to_string(), job.to_string()),
                        ("metric".to_string(), metric.to_string()),
                    ])
                    .set(v);
            }
        }
    }

    /// Counts a build outcome the watcher stored for the first time.
    pub fn run_recorded(&self, run: &crate::record::RunRecord) {
        self.runs_recorded
            .get_or_create(&crate::api_metrics::RunLabel {
                decision: run.decision_label(),
                result: run.result_label(),
            })
            .inc();
    }

    /// Counts a trigger firing.
    pub fn trigger(&self, kind: &str) {
        self.triggers
            .get_or_create(&vec![("kind".to_string(), kind.to_string())])
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        crate::webhook::metrics::exposition(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_exposed_with_the_inframind_prefix() {
        let m = Metrics::new();
        m.reconciliations.inc();
        m.failure("store");
        m.training("promoted");
        m.promotions.inc();
        m.trigger("NewRuns");
        m.leader.set(1);
        m.training_duration.observe(2.0);
        m.scores(
            "ci/nightly",
            &crate::controller::crd::RunMetrics {
                rank_accuracy: Some(0.75),
                ..Default::default()
            },
        );
        let mut oom = crate::simulate::demo_runs(1, chrono::Utc::now(), 1).remove(0);
        oom.oom_killed = true;
        oom.success = false;
        oom.decision = Some(crate::record::DecisionTag::Applied);
        m.run_recorded(&oom);
        let text = m.render();
        for line in [
            "inframind_controller_runs_recorded_total{decision=\"applied\",result=\"oom\"} 1",
            "inframind_controller_reconciliations_total 1",
            "inframind_controller_reconcile_failures_total{error=\"store\"} 1",
            "inframind_controller_trainings_total{outcome=\"promoted\"} 1",
            "inframind_controller_promotions_total 1",
            "inframind_controller_triggers_total{kind=\"NewRuns\"} 1",
            "inframind_controller_leader 1",
            "inframind_controller_training_duration_seconds_count 1",
            "inframind_controller_model_score{trainingjob=\"ci/nightly\",metric=\"rank_accuracy\"} 0.75",
        ] {
            assert!(text.contains(line), "missing `{line}` in\n{text}");
        }
    }
}
