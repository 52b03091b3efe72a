//! The build run record (the design's telemetry schema) and its validation.
//!
//! Input arrives as loosely typed maps (a JSON object, a CSV row); [`validate_row`] turns one into
//! a [`RunRecord`] or says exactly which field is wrong and why.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Every field the run record knows; anything else in an input row is ignored with a warning.
pub const KNOWN_FIELDS: &[&str] = &[
    "run_id",
    "pipeline",
    "branch",
    "image",
    "node",
    "cpu_req",
    "mem_req_gb",
    "concurrency",
    "max_rss_gb",
    "io_read_gb",
    "io_write_gb",
    "cache_hit_ratio",
    "num_steps",
    "avg_step_duration_s",
    "duration_s",
    "success",
    "retry_count",
    "oom_killed",
    "started_at",
    "decision",
    "predicted_duration_s",
    "finished_at",
];

/// Branch of a row that names none: what admission records for a pod that names none, so that
/// training and admission see the same value (a build of unknown branch is not the main line).
pub const DEFAULT_BRANCH: &str = UNKNOWN;
/// How far past `now` a run may end before its timestamps are refused as wrong (clock skew is
/// fine; unix milliseconds given as seconds are not).
pub const FUTURE_TOLERANCE_HOURS: i64 = 24;
/// Placeholder for an unknown image or node type.
pub const UNKNOWN: &str = "unknown";

/// What InfraMind did to a build's pod: the tag savings are computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum DecisionTag {
    /// Resources and concurrency were changed to the recommendation.
    Applied,
    /// The control group: decided, annotated, but left as requested.
    Holdout,
    /// Annotated with what would change, left as requested.
    DryRun,
    /// Left as requested (cold start, opted out, or nothing to act on).
    Unchanged,
    /// Changed to an exploratory config.
    Explored,
}

impl DecisionTag {
    /// Every tag, in display order.
    pub const ALL: [DecisionTag; 5] = [
        DecisionTag::Applied,
        DecisionTag::Explored,
        DecisionTag::Holdout,
        DecisionTag::DryRun,
        DecisionTag::Unchanged,
    ];

    /// The tag as stored and annotated.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionTag::Applied => "applied",
            DecisionTag::Holdout => "holdout",
            DecisionTag::DryRun => "dry-run",
            DecisionTag::Unchanged => "unchanged",
            DecisionTag::Explored => "explored",
        }
    }

    /// Parses a stored or annotated tag.
    pub fn parse(s: &str) -> Option<DecisionTag> {
        DecisionTag::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Whether the pod ran with InfraMind's config (the treatment arm of the savings comparison).
    pub fn changed_the_pod(self) -> bool {
        matches!(self, DecisionTag::Applied | DecisionTag::Explored)
    }
}

impl std::fmt::Display for DecisionTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finished build, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Idempotency key: the same run_id is stored once.
    pub run_id: String,
    /// The pipeline (repository) the build belongs to.
    pub pipeline: String,
    /// Branch name; `main`/`master` count as the main branch.
    pub branch: String,
    /// Base image of the build container.
    pub image: String,
    /// Kubernetes node type the build ran on.
    pub node: String,
    /// Requested vCPU.
    pub cpu_req: f64,
    /// Requested memory, GB.
    pub mem_req_gb: f64,
    /// Build tool parallelism (make -jN and friends).
    pub concurrency: u32,
    /// Peak resident memory, GB, when measured.
    pub max_rss_gb: Option<f64>,
    /// Bytes read, GB, when measured.
    pub io_read_gb: Option<f64>,
    /// Bytes written, GB, when measured.
    pub io_write_gb: Option<f64>,
    /// ccache/sccache/bazel hit ratio in 0..=1, when measured.
    pub cache_hit_ratio: Option<f64>,
    /// Number of pipeline steps, when known.
    pub num_steps: Option<u32>,
    /// Mean step duration, seconds, when known.
    pub avg_step_duration_s: Option<f64>,
    /// Wall-clock build duration, seconds (the label).
    pub duration_s: f64,
    /// Whether the build succeeded.
    pub success: bool,
    /// How many times the build was retried.
    pub retry_count: u32,
    /// Whether the build container was OOM-killed.
    pub oom_killed: bool,
    /// When the build started.
    pub started_at: DateTime<Utc>,
    /// What InfraMind did to the pod, when it decided on it.
    #[serde(default)]
    pub decision: Option<DecisionTag>,
    /// The duration InfraMind predicted for its recommended config, seconds (the config the
    /// build ran with when applied; compared with the actual duration for calibration).
    #[serde(default)]
    pub predicted_duration_s: Option<f64>,
}

impl RunRecord {
    /// The decision as a metric label: its tag, or `none` for a run nothing tagged.
    pub fn decision_label(&self) -> &'static str {
        self.decision.map_or("none", DecisionTag::as_str)
    }

    /// How the run ended, as a metric label: `oom`, `success` or `failure`.
    pub fn result_label(&self) -> &'static str {
        if self.oom_killed {
            "oom"
        } else if self.success {
            "success"
        } else {
            "failure"
        }
    }

    /// The resource configuration this run was admitted with.
    pub fn config(&self) -> crate::BuildConfig {
        crate::BuildConfig {
            cpu: self.cpu_req,
            mem_gb: self.mem_req_gb,
            concurrency: self.concurrency,
        }
    }
}

/// Why one input row was rejected: the field and the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// The offending field.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "field `{}`: {}", self.field, self.reason)
    }
}

fn err(field: &str, reason: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// A loosely typed input row: field name to JSON value (CSV cells arrive as strings).
pub type RawRow = BTreeMap<String, Value>;

/// Names in `row` that the record does not know (reported once per input, not per row).
pub fn unknown_fields(row: &RawRow) -> Vec<String> {
    row.keys()
        .filter(|k| !KNOWN_FIELDS.contains(&k.as_str()))
        .cloned()
        .collect()
}

fn present<'a>(row: &'a RawRow, field: &str) -> Option<&'a Value> {
    match row.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(v) => Some(v),
    }
}

fn number(row: &RawRow, field: &str) -> Result<Option<f64>, FieldError> {
    let Some(v) = present(row, field) else {
        return Ok(None);
    };
    let x = match v {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| err(field, "not representable as a number"))?,
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| err(field, format!("`{s}` is not a number")))?,
        other => return Err(err(field, format!("expected a number, got {other}"))),
    };
    if !x.is_finite() {
        return Err(err(field, format!("must be finite, got {x}")));
    }
    if x < 0.0 {
        return Err(err(field, format!("must not be negative, got {x}")));
    }
    Ok(Some(x))
}

fn required_number(row: &RawRow, field: &str) -> Result<f64, FieldError> {
    number(row, field)?.ok_or_else(|| err(field, "required field is missing"))
}

fn integer(row: &RawRow, field: &str) -> Result<Option<u32>, FieldError> {
    match number(row, field)? {
        None => Ok(None),
        Some(x) if x.fract() != 0.0 => Err(err(field, format!("must be a whole number, got {x}"))),
        Some(x) if x > u32::MAX as f64 => Err(err(field, format!("is too large: {x}"))),
        Some(x) => Ok(Some(x as u32)),
    }
}

fn text(row: &RawRow, field: &str) -> Result<Option<String>, FieldError> {
    match present(row, field) {
        None => Ok(None),
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.len() > 512 {
                Err(err(field, "longer than 512 characters"))
            } else {
                Ok(Some(s.to_string()))
            }
        }
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(err(field, format!("expected a string, got {other}"))),
    }
}

fn boolean(row: &RawRow, field: &str) -> Result<Option<bool>, FieldError> {
    let Some(v) = present(row, field) else {
        return Ok(None);
    };
    let b = match v {
        Value::Bool(b) => *b,
        Value::Number(n) if n.as_f64() == Some(0.0) => false,
        Value::Number(n) if n.as_f64() == Some(1.0) => true,
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "0" | "false" => false,
            "1" | "true" => true,
            _ => return Err(err(field, format!("must be 0 or 1, got `{s}`"))),
        },
        other => return Err(err(field, format!("must be 0 or 1, got {other}"))),
    };
    Ok(Some(b))
}

fn timestamp(row: &RawRow, field: &str) -> Result<Option<DateTime<Utc>>, FieldError> {
    let Some(v) = present(row, field) else {
        return Ok(None);
    };
    let from_secs = |secs: f64| {
        Utc.timestamp_millis_opt((secs * 1000.0).round() as i64)
            .single()
            .ok_or_else(|| err(field, format!("{secs} is not a valid unix time")))
    };
    match v {
        Value::Number(n) => from_secs(n.as_f64().unwrap_or(f64::NAN)).map(Some),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(secs) = s.parse::<f64>() {
                return from_secs(secs).map(Some);
            }
            DateTime::parse_from_rfc3339(s)
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|e| {
                    err(
                        field,
                        format!("`{s}` is not RFC 3339 or unix seconds ({e})"),
                    )
                })
        }
        other => Err(err(field, format!("expected a timestamp, got {other}"))),
    }
}

/// Deterministic run_id for rows that bring none, so re-ingesting the same file stays idempotent.
fn derived_run_id(row: &RawRow) -> String {
    let canonical: String = KNOWN_FIELDS
        .iter()
        .filter_map(|f| row.get(*f).map(|v| format!("{f}={v};")))
        .collect();
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, canonical.as_bytes()).to_string()
}

/// Validates one input row at ingestion time `now`.
///
/// A missing `started_at` is derived from `finished_at − duration_s` when the source gives its
/// end; otherwise the row is refused: the ingestion time would put a whole batch at one instant
/// and misplace every run in the history later runs are trained on.
pub fn validate_row(row: &RawRow, now: DateTime<Utc>) -> Result<RunRecord, FieldError> {
    let pipeline =
        text(row, "pipeline")?.ok_or_else(|| err("pipeline", "required field is missing"))?;
    let cpu_req = required_number(row, "cpu_req")?;
    if cpu_req <= 0.0 {
        return Err(err("cpu_req", "must be greater than 0"));
    }
    let mem_req_gb = required_number(row, "mem_req_gb")?;
    if mem_req_gb <= 0.0 {
        return Err(err("mem_req_gb", "must be greater than 0"));
    }
    let concurrency = integer(row, "concurrency")?
        .ok_or_else(|| err("concurrency", "required field is missing"))?;
    if concurrency < 1 {
        return Err(err("concurrency", "must be at least 1"));
    }
    let duration_s = required_number(row, "duration_s")?;
    let success =
        boolean(row, "success")?.ok_or_else(|| err("success", "required field is missing"))?;
    let cache_hit_ratio = number(row, "cache_hit_ratio")?;
    if let Some(r) = cache_hit_ratio {
        if r > 1.0 {
            return Err(err(
                "cache_hit_ratio",
                format!("must be within 0..1, got {r}"),
            ));
        }
    }
    let num_steps = integer(row, "num_steps")?;
    if num_steps == Some(0) {
        return Err(err("num_steps", "must be at least 1"));
    }
    let avg_step_duration_s =
        number(row, "avg_step_duration_s")?.or_else(|| num_steps.map(|n| duration_s / n as f64));
    let decision = match text(row, "decision")? {
        None => None,
        Some(t) => Some(DecisionTag::parse(&t).ok_or_else(|| {
            err(
                "decision",
                format!("`{t}` is not one of applied, holdout, dry-run, unchanged, explored"),
            )
        })?),
    };
    let predicted_duration_s = number(row, "predicted_duration_s")?;
    let started_at = match (
        timestamp(row, "started_at")?,
        timestamp(row, "finished_at")?,
    ) {
        (Some(t), _) => t,
        (None, Some(end)) => end - chrono::Duration::milliseconds((duration_s * 1000.0).round() as i64),
        (None, None) => {
            return Err(err(
                "started_at",
                "required field is missing (or give finished_at to derive it): the ingestion time would misplace the run in the history of later runs",
            ))
        }
    };
    let end = started_at + chrono::Duration::milliseconds((duration_s * 1000.0).round() as i64);
    if end > now + chrono::Duration::hours(FUTURE_TOLERANCE_HOURS) {
        return Err(err(
            "started_at",
            format!(
                "the run would end at {end}, after the ingestion time {now}: wrong clock or unit?"
            ),
        ));
    }
    let run_id = match text(row, "run_id")? {
        Some(id) => id,
        None => derived_run_id(row),
    };
    Ok(RunRecord {
        run_id,
        pipeline,
        branch: text(row, "branch")?.unwrap_or_else(|| DEFAULT_BRANCH.to_string()),
        image: text(row, "image")?.unwrap_or_else(|| UNKNOWN.to_string()),
        node: text(row, "node")?.unwrap_or_else(|| UNKNOWN.to_string()),
        cpu_req,
        mem_req_gb,
        concurrency,
        max_rss_gb: number(row, "max_rss_gb")?,
        io_read_gb: number(row, "io_read_gb")?,
        io_write_gb: number(row, "io_write_gb")?,
        cache_hit_ratio,
        num_steps,
        avg_step_duration_s,
        duration_s,
        success,
        retry_count: integer(row, "retry_count")?.unwrap_or(0),
        oom_killed: boolean(row, "oom_killed")?.unwrap_or(false),
        started_at,
        decision,
        predicted_duration_s,
    })
}

/// Converts a record back into a raw row (for writing JSON lines and for round-trip tests).
pub fn to_raw_row(run: &RunRecord) -> RawRow {
    match serde_json::to_value(run) {
        Ok(Value::Object(map)) => map.into_iter().filter(|(_, v)| !v.is_null()).collect(),
        _ => RawRow::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: Value) -> RawRow {
        match v {
            Value::Object(m) => m.into_iter().collect(),
            _ => panic!("test rows are objects"),
        }
    }

    fn good() -> Value {
        json!({"pipeline": "acme/api", "branch": "feature/x", "cpu_req": 4, "mem_req_gb": "8",
               "concurrency": 6, "duration_s": 300.5, "success": 1, "num_steps": 10,
               "cache_hit_ratio": 0.5, "started_at": "2026-11-01T10:00:00Z"})
    }

    #[test]
    fn accepts_a_good_row_and_derives_step_duration() {
        let r = validate_row(&row(good()), Utc::now()).expect("valid");
        assert_eq!(r.pipeline, "acme/api");
        assert_eq!(r.mem_req_gb, 8.0);
        assert_eq!(r.concurrency, 6);
        assert!(r.success);
        assert_eq!(r.avg_step_duration_s, Some(30.05));
        assert_eq!(r.image, UNKNOWN);
        assert_eq!(r.started_at.to_rfc3339(), "2026-11-01T10:00:00+00:00");
    }

    #[test]
    fn derived_run_id_is_stable_and_content_sensitive() {
        let a = validate_row(&row(good()), Utc::now()).unwrap();
        let b = validate_row(&row(good()), Utc::now()).unwrap();
        assert_eq!(a.run_id, b.run_id);
        let mut other = good();
        other["duration_s"] = json!(301);
        let c = validate_row(&row(other), Utc::now()).unwrap();
        assert_ne!(a.run_id, c.run_id);
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: &[(&str, Value, &str)] = &[
            ("cpu_req", json!(-1), "negative"),
            ("mem_req_gb", json!("abc"), "not a number"),
            ("cache_hit_ratio", json!(1.5), "within 0..1"),
            ("concurrency", json!(0), "at least 1"),
            ("concurrency", json!(2.5), "whole number"),
            ("success", json!(2), "0 or 1"),
            ("started_at", json!("yesterday"), "RFC 3339"),
            ("duration_s", json!("NaN"), "finite"),
            ("decision", json!("maybe"), "not one of"),
            ("predicted_duration_s", json!(-3), "negative"),
        ];
        for (field, value, reason) in cases {
            let mut v = good();
            v[*field] = value.clone();
            let e = validate_row(&row(v), Utc::now()).expect_err(field);
            assert_eq!(e.field, *field);
            assert!(e.reason.contains(reason), "{field}: {}", e.reason);
        }
        for field in [
            "pipeline",
            "cpu_req",
            "mem_req_gb",
            "concurrency",
            "duration_s",
            "success",
        ] {
            let mut v = good();
            v.as_object_mut().unwrap().remove(field);
            let e = validate_row(&row(v), Utc::now()).expect_err(field);
            assert_eq!(
                (e.field.as_str(), e.reason.as_str()),
                (field, "required field is missing")
            );
        }
    }

    #[test]
    fn a_missing_start_is_derived_from_the_end_or_refused() {
        let mut v = good();
        v.as_object_mut().unwrap().remove("started_at");
        let e = validate_row(&row(v.clone()), Utc::now()).expect_err("no start, no end");
        assert_eq!(e.field, "started_at");
        assert!(e.reason.contains("ingestion time"), "{}", e.reason);
        v["finished_at"] = json!("2026-11-01T10:05:00.500Z");
        let r = validate_row(&row(v), Utc::now()).unwrap();
        assert_eq!(r.started_at.to_rfc3339(), "2026-11-01T10:00:00+00:00");
        let mut future = good();
        future["started_at"] = json!(1_764_000_000_000i64);
        let e = validate_row(&row(future), Utc::now()).expect_err("milliseconds as seconds");
        assert!(e.reason.contains("wrong clock or unit"), "{}", e.reason);
    }

    #[test]
    fn a_missing_branch_is_unknown_as_at_admission() {
        let mut v = good();
        v.as_object_mut().unwrap().remove("branch");
        let r = validate_row(&row(v), Utc::now()).unwrap();
        assert_eq!(r.branch, UNKNOWN);
    }

    #[test]
    fn unknown_fields_are_listed() {
        let mut v = good();
        v["colour"] = json!("blue");
        assert_eq!(unknown_fields(&row(v)), vec!["colour".to_string()]);
    }

    #[test]
    fn record_round_trips_through_raw_row() {
        let r = validate_row(&row(good()), Utc::now()).unwrap();
        let back = validate_row(&to_raw_row(&r), Utc::now()).unwrap();
        assert_eq!(r, back);
        let mut tagged = good();
        tagged["decision"] = json!("holdout");
        tagged["predicted_duration_s"] = json!(280);
        let r = validate_row(&row(tagged), Utc::now()).unwrap();
        assert_eq!(
            (r.decision, r.predicted_duration_s),
            (Some(DecisionTag::Holdout), Some(280.0))
        );
        assert_eq!(validate_row(&to_raw_row(&r), Utc::now()).unwrap(), r);
    }

    #[test]
    fn decision_tags_round_trip_and_only_applied_or_explored_change_the_pod() {
        for t in DecisionTag::ALL {
            assert_eq!(DecisionTag::parse(t.as_str()), Some(t));
            assert_eq!(serde_json::to_value(t).unwrap(), json!(t.as_str()));
        }
        let changed: Vec<_> = DecisionTag::ALL
            .into_iter()
            .filter(|t| t.changed_the_pod())
            .collect();
        assert_eq!(changed, vec![DecisionTag::Applied, DecisionTag::Explored]);
    }
}
