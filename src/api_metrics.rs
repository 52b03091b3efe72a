//! The API's own Prometheus metrics (OpenMetrics text on the API's `/metrics`): requests by
//! route and status, and how long they took.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub use crate::webhook::metrics::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabel {
    route: &'static str,
    status: u16,
}

/// Labels of a stored build: what InfraMind decided and how the build ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabel {
    /// The decision tag, or `none`.
    pub decision: &'static str,
    /// `success`, `failure` or `oom`.
    pub result: &'static str,
}

/// The API's metrics.
#[derive(Debug)]
pub struct ApiMetrics {
    registry: Registry,
    requests: Family<RequestLabel, Counter>,
    duration: Histogram,
    runs: Family<RunLabel, Counter>,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        ApiMetrics::new()
    }
}

/// The route a path belongs to: a fixed set, so a label never grows with pipeline names.
pub fn route_of(path: &str) -> &'static str {
    let mut parts = path.trim_start_matches('/').split('/');
    match (parts.next().unwrap_or(""), parts.next().unwrap_or("")) {
        ("v1", "runs") => "/v1/runs",
        ("v1", "pipelines") => "/v1/pipelines",
        ("v1", "recommendations") => "/v1/recommendations",
        ("v1", "train") => "/v1/train",
        ("v1", "savings") => "/v1/savings",
        ("", _) => "/",
        ("pipelines", _) => "/pipelines",
        ("models", _) => "/models",
        ("trainingjobs", _) => "/trainingjobs",
        ("login", _) => "/login",
        ("logout", _) => "/logout",
        ("healthz", _) => "/healthz",
        ("readyz", _) => "/readyz",
        ("metrics", _) => "/metrics",
        _ => "other",
    }
}

impl ApiMetrics {
    /// Registers every metric.
    pub fn new() -> ApiMetrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabel, Counter>::default();
        registry.register(
            "inframind_api_requests",
            "API requests by route and status",
            requests.clone(),
        );
        // 100 µs .. ~6.5 s in steps of 2×.
        let duration = Histogram::new(exponential_buckets(0.0001, 2.0, 17));
        registry.register(
            "inframind_api_request_duration_seconds",
            "Time to answer an API request, server side",
            duration.clone(),
        );
        let runs = Family::<RunLabel, Counter>::default();
        registry.register(
            "inframind_runs_ingested",
            "Valid build rows accepted by POST /v1/runs, by decision and result (a reporter's retry of a stored run counts again); the OOM rate of applied vs holdout builds and the no-telemetry alert read it",
            runs.clone(),
        );
        ApiMetrics {
            registry,
            requests,
            duration,
            runs,
        }
    }

    /// Records the rows of one successful ingestion.
    pub fn ingested(
        &self,
        by_outcome: &std::collections::BTreeMap<(&'static str, &'static str), u64>,
    ) {
        for ((decision, result), n) in by_outcome {
            self.runs
                .get_or_create(&RunLabel { decision, result })
                .inc_by(*n);
        }
    }

    /// Records one answered request.
    pub fn observe(&self, path: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabel {
                route: route_of(path),
                status,
            })
            .inc();
        self.duration.observe(seconds);
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        crate::webhook::metrics::exposition(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route_not_by_name() {
        let m = ApiMetrics::new();
        m.observe("/v1/pipelines/acme%2Fapi/stats", 200, 0.01);
        m.observe("/v1/pipelines/other/stats", 200, 0.01);
        m.observe("/pipelines/acme%2Fapi", 303, 0.001);
        let text = m.render();
        assert!(
            text.contains("# TYPE inframind_api_requests counter"),
            "{text}"
        );
        assert!(
            text.contains("inframind_api_requests_total{route=\"/v1/pipelines\",status=\"200\"} 2")
        );
        assert!(!text.contains("acme"));
        assert!(text.contains("inframind_api_request_duration_seconds_count 3"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn ingested_runs_are_counted_by_decision_and_result() {
        let m = ApiMetrics::new();
        let mut by = std::collections::BTreeMap::new();
        by.insert(("applied", "oom"), 2);
        by.insert(("holdout", "success"), 1);
        m.ingested(&by);
        m.ingested(&by);
        let text = m.render();
        assert!(
            text.contains("# TYPE inframind_runs_ingested counter"),
            "{text}"
        );
        assert!(
            text.contains("inframind_runs_ingested_total{decision=\"applied\",result=\"oom\"} 4"),
            "{text}"
        );
        assert!(text
            .contains("inframind_runs_ingested_total{decision=\"holdout\",result=\"success\"} 2"));
    }
}
