//! Reading telemetry files (JSON lines or CSV) and storing the valid rows.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::store::Store;
use crate::error::{Error, Result};
use crate::record::{unknown_fields, validate_row, RawRow};

/// One rejected input row: where it was and which field was wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// 1-based row number in the input (line for JSON lines, record for CSV).
    pub row: usize,
    /// The field that is wrong (`<row>` when the row itself could not be parsed).
    pub field: String,
    /// Why.
    pub reason: String,
}

/// What an ingestion did with its input.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct IngestReport {
    /// Rows validated and newly stored.
    pub accepted: u64,
    /// Rows refused, with field and reason.
    pub rejected: Vec<Rejection>,
    /// Valid rows whose run_id was already stored.
    pub duplicates: u64,
    /// Input columns the record does not know (ignored).
    pub unknown_fields: Vec<String>,
    /// Valid rows by (decision, result) label, for the ingest metric; not part of the answer.
    #[serde(skip)]
    pub by_outcome: std::collections::BTreeMap<(&'static str, &'static str), u64>,
}

/// A parsed input row, or the reason it could not be parsed at all.
pub type ParsedRow = std::result::Result<RawRow, String>;

/// Reads a JSON-lines (`.jsonl`, `.json`, `.ndjson`) or CSV file into raw rows, one per record.
pub fn read_rows(path: &Path) -> Result<Vec<ParsedRow>> {
    let text = std::fs::read_to_string(path).map_err(Error::io(format!(
        "reading telemetry file {}",
        path.display()
    )))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "csv" => parse_csv(&text),
        "jsonl" | "ndjson" | "json" => Ok(parse_json_lines(&text)),
        other => Err(Error::Input(format!(
            "{}: unknown telemetry format `.{other}` (use .jsonl or .csv)",
            path.display()
        ))),
    }
}

/// Parses JSON lines; blank lines are skipped, rows are numbered by record.
pub fn parse_json_lines(text: &str) -> Vec<ParsedRow> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(map)) => Ok(map.into_iter().collect()),
            Ok(other) => Err(format!("expected a JSON object, got {other}")),
            Err(e) => Err(format!("malformed JSON: {e}")),
        })
        .collect()
}

/// Parses CSV with a header row naming the fields; empty cells are absent values.
pub fn parse_csv(text: &str) -> Result<Vec<ParsedRow>> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| Error::Input(format!("CSV header row is unreadable: {e}")))?
        .clone();
    Ok(reader
        .records()
        .map(|rec| {
            let rec = rec.map_err(|e| format!("malformed CSV record: {e}"))?;
            if rec.len() != headers.len() {
                return Err(format!(
                    "has {} cells but the header names {}",
                    rec.len(),
                    headers.len()
                ));
            }
            Ok(headers
                .iter()
                .zip(rec.iter())
                .map(|(h, v)| (h.to_string(), Value::String(v.to_string())))
                .collect())
        })
        .collect())
}

/// Validates every row and stores the valid ones; a bad row never stops the others.
pub async fn ingest_rows(
    store: &Store,
    rows: Vec<ParsedRow>,
    now: DateTime<Utc>,
) -> Result<IngestReport> {
    let mut report = IngestReport::default();
    let mut unknown = BTreeSet::new();
    let mut valid = Vec::with_capacity(rows.len());
    for (i, row) in rows.into_iter().enumerate() {
        let row = match row {
            Ok(r) => r,
            Err(reason) => {
                report.rejected.push(Rejection {
                    row: i + 1,
                    field: "<row>".into(),
                    reason,
                });
                continue;
            }
        };
        unknown.extend(unknown_fields(&row));
        match validate_row(&row, now) {
            Ok(run) => valid.push(run),
            Err(e) => report.rejected.push(Rejection {
                row: i + 1,
                field: e.field,
                reason: e.reason,
            }),
        }
    }
    let outcome = store.insert_runs(&valid, now).await?;
    for run in &valid {
        *report
            .by_outcome
            .entry((run.decision_label(), run.result_label()))
            .or_default() += 1;
    }
    report.accepted = outcome.inserted;
    report.duplicates = outcome.duplicates;
    report.unknown_fields = unknown.into_iter().collect();
    if !report.unknown_fields.is_empty() {
        tracing::warn!(fields = ?report.unknown_fields, "ignoring unknown telemetry fields");
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_become_string_maps_and_short_rows_are_rejected() {
        let rows = parse_csv("pipeline,cpu_req\na,2\nb\n").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0].as_ref().unwrap()["cpu_req"],
            Value::String("2".into())
        );
        assert!(rows[1].as_ref().unwrap_err().contains("1 cells"));
    }

    #[test]
    fn json_lines_reject_non_objects() {
        let rows = parse_json_lines("{\"a\":1}\n\n[1]\n{oops\n");
        assert_eq!(rows.len(), 3);
        assert!(rows[0].is_ok());
        assert!(rows[1].as_ref().unwrap_err().contains("JSON object"));
        assert!(rows[2].as_ref().unwrap_err().contains("malformed JSON"));
    }
}
