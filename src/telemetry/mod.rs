//! Build telemetry at the edge: ingestion from files and the store (PostgreSQL or SQLite).
//! The run record itself and its validation are pure and live in [`crate::record`].

pub mod ingest;
pub mod store;

pub use ingest::{ingest_rows, read_rows, IngestReport, Rejection};
pub use store::{InsertOutcome, Store};
