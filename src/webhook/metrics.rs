//! Prometheus metrics of the webhook (OpenMetrics text on `/metrics`).

/// The content type of what `render` produces (prometheus-client writes OpenMetrics text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::admission::Outcome;

/// The OpenMetrics text of `registry` (what every component's `/metrics` serves; writing into a
/// String cannot fail, so an error leaves it empty rather than half-written).
pub fn exposition(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}
use crate::registry::LiveModel;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

/// The webhook's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    admissions: Family<OutcomeLabel, Counter>,
    duration: Histogram,
    explored: Counter,
    model_info: Family<VersionLabel, Gauge>,
    model_trained: Gauge,
    swaps: Counter,
    refusals: Counter,
    cert_reloads: Counter,
    bad_requests: Counter,
    cache: Family<CacheLabel, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabel {
    what: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let admissions = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "inframind_admissions",
            "Pod admissions by outcome (mutated, dry_run, holdout, cold_start, kept, unchanged, ignored, error)",
            admissions.clone(),
        );
        // 25 µs .. ~0.3 s in steps of 1.5×: fine enough to read a sub-millisecond p99.
        let duration = Histogram::new(exponential_buckets(0.000025, 1.5, 24));
        registry.register(
            "inframind_admission_duration_seconds",
            "Time to answer an admission, server side",
            duration.clone(),
        );
        let explored = Counter::default();
        registry.register(
            "inframind_decisions_explored",
            "Decisions that explored a random config",
            explored.clone(),
        );
        let model_info = Family::<VersionLabel, Gauge>::default();
        registry.register(
            "inframind_model_info",
            "The model version being served (value 1); 'none' on the cold-start path",
            model_info.clone(),
        );
        let model_trained = Gauge::default();
        registry.register(
            "inframind_model_trained_timestamp_seconds",
            "When the served model was trained (unix seconds); 0 on the cold-start path. Model age is time() minus this",
            model_trained.clone(),
        );
        let swaps = Counter::default();
        registry.register(
            "inframind_model_swaps",
            "Models loaded since start-up",
            swaps.clone(),
        );
        let refusals = Counter::default();
        registry.register(
            "inframind_model_refusals",
            "Model artifacts refused (checksum or format) since start-up",
            refusals.clone(),
        );
        let cert_reloads = Counter::default();
        registry.register(
            "inframind_tls_certificate_reloads",
            "Serving certificates reloaded since start-up",
            cert_reloads.clone(),
        );
        let bad_requests = Counter::default();
        registry.register(
            "inframind_bad_requests",
            "Requests refused before admission (malformed, oversized)",
            bad_requests.clone(),
        );
        let cache = Family::<CacheLabel, Gauge>::default();
        registry.register(
            "inframind_decision_cache",
            "Decision cache since start-up: hits, misses, uncacheable (unversioned stats); and now: entries, bytes",
            cache.clone(),
        );
        Metrics {
            cache,
            registry,
            admissions,
            duration,
            explored,
            model_info,
            model_trained,
            swaps,
            refusals,
            cert_reloads,
            bad_requests,
        }
    }

    /// Records one admission.
    pub fn observe(&self, outcome: Outcome, seconds: f64, explored: bool) {
        self.admissions
            .get_or_create(&OutcomeLabel {
                outcome: outcome.as_str(),
            })
            .inc();
        self.duration.observe(seconds);
        if explored {
            self.explored.inc();
        }
    }

    /// Records a refused request.
    pub fn bad_request(&self) {
        self.bad_requests.inc();
    }

    /// The exposition text, with the model and certificate state read now.
    pub fn render(
        &self,
        live: &LiveModel,
        cert_reloads: u64,
        cache: Option<crate::optimizer::cache::CacheCounts>,
    ) -> String {
        if let Some(c) = cache {
            for (what, v) in [
                ("hits", c.hits as i64),
                ("misses", c.misses as i64),
                ("uncacheable", c.uncacheable as i64),
                ("entries", c.entries as i64),
                ("bytes", c.bytes as i64),
            ] {
                self.cache.get_or_create(&CacheLabel { what }).set(v);
            }
        }
        self.model_info.clear();
        self.model_info
            .get_or_create(&VersionLabel {
                version: live.version().unwrap_or_else(|| "none".into()),
            })
            .set(1);
        let trained = live
            .version()
            .and_then(|v| crate::model::trained_at(&v))
            .map_or(0, |t| t.timestamp());
        self.model_trained.set(trained);
        // Counters (they only grow): advance each to its source's count.
        let catch_up = |c: &Counter, now: u64| {
            c.inc_by(now.saturating_sub(c.get()));
        };
        catch_up(&self.swaps, live.swaps());
        catch_up(&self.refusals, live.refusals());
        catch_up(&self.cert_reloads, cert_reloads);
        exposition(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_refusals_and_reloads_are_counters_that_follow_their_source() {
        let m = Metrics::new();
        let live = LiveModel::new();
        let text = m.render(&live, 0, None);
        for name in [
            "inframind_model_swaps",
            "inframind_model_refusals",
            "inframind_tls_certificate_reloads",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} counter")),
                "{name}: {text}"
            );
            assert!(text.contains(&format!("{name}_total 0")), "{name}");
        }
        assert!(
            text.contains("inframind_model_trained_timestamp_seconds 0"),
            "no model: {text}"
        );
        live.set(crate::training::tests::small_model(300).0);
        let text = m.render(&live, 3, None);
        assert!(text.contains("inframind_model_swaps_total 1"), "{text}");
        assert!(text.contains("inframind_tls_certificate_reloads_total 3"));
        // Rendering again does not count again.
        assert!(m
            .render(&live, 3, None)
            .contains("inframind_model_swaps_total 1"));
        // model_v20261101_000000: 2026-11-01T00:00:00Z.
        assert!(
            text.contains("inframind_model_trained_timestamp_seconds 1793491200"),
            "{text}"
        );
        assert!(
            text.ends_with("# EOF\n"),
            "OpenMetrics text, as CONTENT_TYPE says"
        );
    }
}
