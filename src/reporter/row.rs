//! The telemetry row a build pod reports: its identity and requests in the run record's units,
//! what its cgroup measured, and how the build went. Pure: the clock is passed in.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use super::cgroup::CgroupUsage;
use super::pod::PodIdentity;
use crate::record::RawRow;

const BYTES_PER_GIB: f64 = (1u64 << 30) as f64;

/// What the reporter measured or was told about the build itself.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildOutcome {
    /// Wall-clock seconds from the container's start (or `--duration-s`).
    pub duration_s: f64,
    /// Whether the build succeeded.
    pub success: bool,
    /// Pipeline steps, if given.
    pub num_steps: Option<f64>,
    /// Compiler-cache hit ratio, if given or measured.
    pub cache_hit_ratio: Option<f64>,
}

/// A number as JSON: whole numbers as integers (`6`, not `6.0`), others as they are.
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

/// Builds the row posted to `/v1/runs`. Fields the reporter does not know are left out (not
/// null), so the API's defaults and the pod watcher's row for the same `run_id` fill them.
pub fn build(
    pod: &PodIdentity,
    usage: &CgroupUsage,
    outcome: &BuildOutcome,
    now: DateTime<Utc>,
) -> RawRow {
    let mut row = RawRow::new();
    let mut put = |k: &str, v: Value| {
        row.insert(k.to_string(), v);
    };
    put("run_id", json!(pod.run_id()));
    put("pipeline", json!(pod.pipeline));
    for (field, value) in [
        ("branch", &pod.branch),
        ("image", &pod.image),
        ("node", &pod.node_type),
    ] {
        if let Some(v) = value {
            put(field, json!(v));
        }
    }
    put("cpu_req", number(pod.cpu_request_milli / 1000.0));
    put("mem_req_gb", number(pod.mem_request_mib / 1024.0));
    put("concurrency", number(pod.concurrency));
    if let Some(tag) = pod.decision {
        put("decision", json!(tag.as_str()));
    }
    let gib = |bytes: Option<u64>| bytes.map(|b| number(b as f64 / BYTES_PER_GIB));
    for (field, value) in [
        ("max_rss_gb", gib(usage.peak_memory_bytes)),
        ("io_read_gb", gib(usage.io_read_bytes)),
        ("io_write_gb", gib(usage.io_write_bytes)),
        ("cache_hit_ratio", outcome.cache_hit_ratio.map(number)),
        ("num_steps", outcome.num_steps.map(number)),
        (
            "avg_step_duration_s",
            outcome
                .num_steps
                .filter(|n| *n >= 1.0)
                .map(|n| number(outcome.duration_s / n)),
        ),
    ] {
        if let Some(v) = value {
            put(field, v);
        }
    }
    put("duration_s", number(outcome.duration_s));
    put("success", json!(u8::from(outcome.success)));
    put("retry_count", json!(0));
    let started =
        now - chrono::Duration::milliseconds((outcome.duration_s * 1000.0).round().max(0.0) as i64);
    put(
        "started_at",
        json!(started.to_rfc3339_opts(SecondsFormat::Secs, true)),
    );
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn pod() -> PodIdentity {
        PodIdentity {
            uid: "0b5e-77".into(),
            display_name: None,
            pipeline: "acme/api".into(),
            branch: Some("feature/x".into()),
            image: None,
            node_type: Some("m5.2xlarge".into()),
            cpu_request_milli: 2500.0,
            mem_request_mib: 6144.0,
            concurrency: 6.0,
            decision: Some(crate::record::DecisionTag::Holdout),
        }
    }

    #[test]
    fn converts_units_and_leaves_unknowns_out() {
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 8, 0, 0).unwrap();
        let usage = CgroupUsage {
            version: None,
            peak_memory_bytes: Some(3 << 29),
            io_read_bytes: Some(1 << 28),
            io_write_bytes: None,
            cpu_usage_usec: Some(1),
        };
        let outcome = BuildOutcome {
            duration_s: 600.5,
            success: false,
            num_steps: Some(4.0),
            cache_hit_ratio: None,
        };
        let row = build(&pod(), &usage, &outcome, now);
        let expected = json!({
            "run_id": "pod-0b5e-77", "pipeline": "acme/api", "branch": "feature/x",
            "node": "m5.2xlarge", "cpu_req": 2.5, "mem_req_gb": 6, "concurrency": 6, "decision": "holdout",
            "max_rss_gb": 1.5, "io_read_gb": 0.25, "num_steps": 4,
            "avg_step_duration_s": 150.125, "duration_s": 600.5, "success": 0,
            "retry_count": 0, "started_at": "2026-11-27T07:49:59Z"
        });
        assert_eq!(serde_json::to_value(&row).unwrap(), expected);
        // What the API will make of it.
        let rec = crate::record::validate_row(&row, now).unwrap();
        assert_eq!(rec.image, "unknown");
        assert_eq!(rec.concurrency, 6);
        assert!(!rec.success);
        assert_eq!(rec.decision, Some(crate::record::DecisionTag::Holdout));
    }

    #[test]
    fn zero_steps_are_passed_on_for_validation_to_refuse() {
        let now = Utc::now();
        let outcome = BuildOutcome {
            duration_s: 10.0,
            success: true,
            num_steps: Some(0.0),
            cache_hit_ratio: Some(0.5),
        };
        let row = build(&pod(), &CgroupUsage::default(), &outcome, now);
        assert!(!row.contains_key("avg_step_duration_s"));
        let e = crate::record::validate_row(&row, now).unwrap_err();
        assert_eq!(e.field, "num_steps");
    }
}
