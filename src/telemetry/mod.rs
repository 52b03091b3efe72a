//! Build telemetry: the run record, its validation, ingestion from files, and the store.

pub mod ingest;
pub mod run;
pub mod store;

pub use ingest::{ingest_rows, read_rows, IngestReport, Rejection};
pub use run::{validate_row, FieldError, RawRow, RunRecord};
pub use store::{InsertOutcome, Store};
